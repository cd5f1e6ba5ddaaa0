"""Training data for the loop: this rank's axial slices streamed from the shards.

Training uses ``resampled`` streams (every rank does the same number of steps, seeded per
(seed, rank, worker, epoch)); an epoch is ``steps_per_epoch`` batches per rank, so resuming
at step s restarts epoch ``s // steps_per_epoch`` and skips ``s % steps_per_epoch`` batches:
the same batches as an uninterrupted run. Validation reads the val split exactly once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

from adsys.shards.loader import make_loader
from adsys.shards.stream import ShardStream
from adsys.shards.tar import load_shard_manifest
from adsys.train.config import TrainConfig

log = logging.getLogger(__name__)


def steps_per_epoch(cfg: TrainConfig, world: int) -> int:
    """Batches per rank per epoch: about one pass over the training slices."""
    manifest, _ = load_shard_manifest(cfg.shards)
    split = manifest.splits["train"]
    slices = len(split.subjects) * split.shape[-1]
    return max(1, slices // (cfg.batch_size * world))


def _images(batch: dict[str, Any]) -> dict[str, Any]:
    """The part of a stream batch the reconstruction methods train on (clean slices)."""
    return {"image": batch["image"], "mask": batch["mask"]}


def _slices(cfg: TrainConfig, split: str, rank: int, world: int, **kw: Any) -> ShardStream:
    """This rank's axial-slice stream of ``split``."""
    return ShardStream(
        cfg.shards, split=split, mode="slices", batch_size=cfg.batch_size, rank=rank,
        world_size=world, seed=cfg.seed, min_brain_fraction=cfg.min_brain_fraction, **kw,
    )  # fmt: skip


def train_batches(cfg: TrainConfig, rank: int, world: int, start_step: int = 0) -> Iterator[dict]:
    """Endless training batches for this rank, positioned at ``start_step``.

    Corrupt samples are skipped (the reader checks every checksum) and counted in the log.
    """
    spe = steps_per_epoch(cfg, world)
    stream = _slices(cfg, "train", rank, world, resampled=True, steps_per_epoch=spe,
                     on_corrupt="skip")  # fmt: skip
    loader = make_loader(stream, num_workers=cfg.data_workers)
    epoch, skip = divmod(start_step, spe)
    while True:
        loader.set_epoch(epoch)
        for batch in itertools.islice(loader, skip, None):
            yield _images(batch)
        if loader.skipped:
            log.warning("rank %d: %d corrupt sample(s) skipped so far", rank, loader.skipped)
        skip, epoch = 0, epoch + 1


def val_batches(cfg: TrainConfig, rank: int, world: int) -> list[dict]:
    """The first ``val_batches`` batches of this rank's exact share of the val split."""
    stream = _slices(cfg, "val", rank, world, resampled=False, shuffle=False, on_corrupt="raise")
    loader = make_loader(stream, num_workers=0)
    return [_images(b) for b in itertools.islice(loader, cfg.val_batches)]


def shard_preprocess_config(cfg: TrainConfig) -> dict[str, Any] | None:
    """The preprocessing config the shards were built with (for inference on raw NIfTI)."""
    manifest, _ = load_shard_manifest(cfg.shards)
    return manifest.spec["spec"]["preprocess"]  # the spec's identity record (ShardSpec.identity)
