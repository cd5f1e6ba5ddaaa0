"""Training data for the loop: this rank's stream of the method's declared data.

The method's data spec (:class:`adsys.methods.base.DataSpec`) says what the stream yields:
mode (axial slices, patches, volumes), fields, the slices' brain-fraction filter, and the
online corruption its loader workers apply. Training uses ``resampled`` streams (every rank
does the same number of steps, seeded per (seed, rank, worker, epoch)); an epoch is
``steps_per_epoch`` batches per rank, so resuming at step s restarts epoch
``s // steps_per_epoch`` and skips ``s % steps_per_epoch`` batches: the same batches (and
corruptions) as an uninterrupted run. Validation reads the val split exactly once, with the
spec's ``val_corruption`` (seeded the same way every time).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

from adsys.methods.base import DataSpec
from adsys.shards.loader import make_loader
from adsys.shards.stream import ShardStream
from adsys.shards.tar import load_shard_manifest
from adsys.train.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["data_workers", "shard_preprocess_config", "steps_per_epoch", "train_batches",
           "train_pass", "val_batches"]

PATCHES_PER_VOLUME = 8


def data_workers(setting: int | str, local_world: int = 1) -> int:
    """Loader processes per rank: ``setting``, or for ``auto`` the CPUs this process may use
    per rank on the node minus one, at least 1 on a multi-core node (0 on one core)."""
    if setting != "auto":
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cpus or 1) < 2:
        return 0
    return max(1, cpus // max(local_world, 1) - 1)


def steps_per_epoch(cfg: TrainConfig, world: int) -> int:
    """Batches per rank per epoch: about one pass over the training items."""
    manifest, _ = load_shard_manifest(cfg.shards)
    split = manifest.splits["train"]
    per_subject = {"slices": split.shape[-1], "patches": PATCHES_PER_VOLUME, "volumes": 1}
    items = len(split.subjects) * per_subject[cfg.method_spec().data.mode]
    return max(1, items // (cfg.batch_size * world))


def _stream(cfg: TrainConfig, split: str, rank: int, world: int, **kw: Any) -> ShardStream:
    """This rank's stream of ``split`` as the method's data spec declares it (the val split
    with the spec's ``val_corruption``)."""
    spec: DataSpec = cfg.method_spec().data
    corruption = spec.val_corruption if split == "val" else spec.corruption
    return ShardStream(
        cfg.shards, split=split, mode=spec.mode, batch_size=cfg.batch_size, rank=rank,
        world_size=world, seed=cfg.seed, min_brain_fraction=spec.min_brain_fraction,
        patch_size=spec.patch_size, patches_per_volume=PATCHES_PER_VOLUME, fields=spec.fields,
        corruption=None if corruption is None else corruption.build(), **kw,
    )  # fmt: skip


def train_batches(
    cfg: TrainConfig, rank: int, world: int, start_step: int = 0, local_world: int = 1
) -> Iterator[dict[str, Any]]:
    """Endless training batches for this rank, positioned at ``start_step``.

    Corrupt samples are skipped (the reader checks every checksum) and counted in the log.
    """
    spe = steps_per_epoch(cfg, world)
    stream = _stream(cfg, "train", rank, world, resampled=True, steps_per_epoch=spe,
                     on_corrupt="skip")
    loader = make_loader(stream, num_workers=data_workers(cfg.data_workers, local_world))
    epoch, skip = divmod(start_step, spe)
    while True:
        loader.set_epoch(epoch)
        yield from itertools.islice(loader, skip, None)
        if loader.skipped:
            log.warning("rank %d: %d corrupt sample(s) skipped so far", rank, loader.skipped)
        skip, epoch = 0, epoch + 1


def val_batches(cfg: TrainConfig, rank: int, world: int) -> list[dict[str, Any]]:
    """The first ``val_batches`` batches of this rank's exact share of the val split."""
    stream = _stream(cfg, "val", rank, world, resampled=False, shuffle=False,
                     on_corrupt="raise")
    loader = make_loader(stream, num_workers=0)
    return list(itertools.islice(loader, cfg.val_batches))


def train_pass(cfg: TrainConfig) -> Iterator[dict[str, Any]]:
    """Every item of the train split once, in shard order (the method's data spec, batches
    of ``batch_size``; corrupt samples raise): the pass a method that is not trainable
    computes its statistics from (:mod:`adsys.train.statistics`)."""
    stream = _stream(cfg, "train", 0, 1, resampled=False, shuffle=False, on_corrupt="raise")
    yield from make_loader(stream, num_workers=0)


def shard_preprocess_config(cfg: TrainConfig) -> dict[str, Any] | None:
    """The preprocessing config the shards were built with (for inference on raw NIfTI)."""
    manifest, _ = load_shard_manifest(cfg.shards)
    return manifest.spec["spec"]["preprocess"]  # the spec's identity record (ShardSpec.identity)
