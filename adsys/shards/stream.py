"""Streaming reader: training batches from tar shards, checked against ``manifest.json``.

Shards are read by :func:`~adsys.shards.tar.read_shard`, which checks every sample against
the shard's manifest record and reports what it lost. ``on_corrupt="raise"`` stops with
:class:`CorruptShardError`; ``"skip"`` drops the sample and counts it (batches carry the
count, :class:`~adsys.shards.loader.ShardLoader` sums it) — a stream is never silently
shortened.

Two ways to split the work, both explicit about ``rank``/``world_size`` and loader workers
(``consumers = world_size × num_workers``):

* ``resampled=True`` (training): each consumer draws shards at random (weighted by sample
  count, seeded per (seed, rank, worker, epoch)) and yields exactly its share of
  ``steps_per_epoch`` full batches, so every rank does the same number of steps (no DDP hang).
* ``resampled=False`` (evaluation, "split" mode): every sample of the split is seen exactly
  once by exactly one consumer — whole shards per consumer when there are at least as many
  shards as consumers, else every ``consumers``-th sample.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from adsys.shards.sample import Sample
from adsys.shards.schema import ShardFormatError
from adsys.shards.tar import load_shard_manifest, read_shard

log = logging.getLogger(__name__)

Mode = Literal["slices", "patches", "volumes"]
OnCorrupt = Literal["raise", "skip"]


class CorruptShardError(ShardFormatError):
    """A shard or sample does not match its manifest record (checksum, count, format)."""


FIELDS = ("image", "mask", "variant", "lesion")  # item arrays, after (subject_id, k, where)


class _Stacker:
    """Stacks items' arrays into batch tensors of any dtype, through reused scratch arrays.

    numpy stacks the (views of) item arrays into a scratch array of their stored dtype,
    then torch casts it into the destination in one pass (numpy's float16 cast is slow);
    when the dtypes agree numpy stacks straight into the destination. Scratch arrays live
    as long as the stream's iterator, so a batch allocates nothing but its tensors.
    """

    def __init__(self) -> None:
        self.scratch: dict[tuple[int, np.dtype, tuple[int, ...]], np.ndarray] = {}

    def __call__(self, items: list[tuple], dests: list[torch.Tensor]) -> None:
        """Write field ``FIELDS[i]`` of ``items`` into ``dests[i]`` (n, 1, *item)."""
        n = len(items)
        for i, dest in enumerate(dests):
            arrays = [it[3 + i] for it in items]
            first = arrays[0]
            if _torch_dtype(first.dtype) == dest.dtype:
                _stack(arrays, dest[:, 0].numpy())
                continue
            key = (i, first.dtype, first.shape)
            if key not in self.scratch or len(self.scratch[key]) < n:
                self.scratch[key] = np.empty((n, *first.shape), first.dtype)
            scratch = self.scratch[key][:n]
            _stack(arrays, scratch)
            dest[:, 0].copy_(torch.from_numpy(scratch))


def _stack(arrays: list[np.ndarray], out: np.ndarray) -> None:
    """``np.stack(arrays, out=out)`` for same-shape arrays and a C-contiguous ``out``, as
    one concatenation along the first axis (it skips np.stack's per-array views)."""
    np.concatenate(arrays, out=out.reshape(-1, *out.shape[2:]))


@functools.cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _labels(items: list[tuple], mode: Mode) -> dict[str, Any]:
    """The non-array fields of a batch of items: subject ids (list) and int64 index arrays
    (what workers send as is)."""
    labels: dict[str, Any] = {
        "variant_index": np.array([it[1] for it in items], dtype=np.int64),
        "subject_id": [it[0] for it in items],
    }
    if mode == "slices":
        labels["slice_index"] = np.array([it[2] for it in items], dtype=np.int64)
    elif mode == "patches":
        labels["origin"] = np.array([it[2] for it in items], dtype=np.int64)
    return labels


def _to_torch(labels: dict[str, Any]) -> dict[str, Any]:
    """:func:`_labels` with the index arrays as int64 tensors."""
    return {k: v if k == "subject_id" else torch.from_numpy(v) for k, v in labels.items()}


def _collate(
    items: list[tuple], mode: Mode, dtype: torch.dtype, stack: _Stacker
) -> dict[str, Any]:
    """Stack items ``(subject_id, k, where, image, mask, variant, lesion)`` into a batch."""
    shape = (len(items), 1, *items[0][3].shape)
    batch = {name: torch.empty(shape, dtype=dtype) for name in FIELDS}
    stack(items, list(batch.values()))
    return {**batch, **_to_torch(_labels(items, mode))}


class ShardStream(IterableDataset):
    """Training / evaluation batches from the tar shards of one split.

    Args:
        source: build folder, ``manifest.json`` path, or its URL.
        split: ``train``, ``val`` or ``test``.
        mode: ``slices`` (axial, the last axis; items (1, x, y)), ``patches`` (items
            (1, *patch_size), centred on random brain voxels) or ``volumes`` (1, x, y, z).
        batch_size: items per batch.
        rank, world_size: this process's place among the training ranks.
        seed: base seed; draws use (seed, rank, worker, epoch) — see :meth:`set_epoch`.
        resampled: draw shards with replacement, ``steps_per_epoch`` batches per rank.
        steps_per_epoch: batches per rank per epoch (``resampled`` only; required there).
        shuffle: shuffle shard order and items (buffer ``shuffle_buffer``); default:
            ``resampled``.
        min_brain_fraction: ``slices`` keeps slices whose brain fraction is ≥ this.
        patch_size, patches_per_volume: ``patches`` mode geometry and count per sample.
        on_corrupt: ``raise`` or ``skip`` (counted in each batch's ``skipped``).
        shard_url: template for shard URLs with ``{name}`` (e.g.
            ``"pipe:aws s3 cp s3://bucket/demo/{name} -"``); default: beside the manifest.
        drop_last: drop a final partial batch (split mode); resampled batches are all full.
        dtype: dtype of the batch's image, mask, variant and lesion tensors. ``torch.float16``
            (exact: the shards store float16) halves what workers send to the trainer; cast on
            the device.

    Each batch is a dict: ``image``, ``mask``, ``variant``, ``lesion`` (B, 1, ...) ``dtype``;
    ``variant_index`` (B,) int64 (-1 when the split has no variants: the variant is then the
    clean image and the lesion empty); ``subject_id`` list of B str; ``slice_index`` (B,)
    or ``origin`` (B, 3) int64 in ``slices`` / ``patches`` mode; ``skipped``: corrupt
    samples dropped since the previous batch. A batch holding only ``skipped`` may end a
    stream; :class:`~adsys.shards.loader.ShardLoader` absorbs it.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        split: str = "train",
        mode: Mode = "slices",
        batch_size: int = 32,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        resampled: bool = False,
        steps_per_epoch: int | None = None,
        shuffle: bool | None = None,
        shuffle_buffer: int = 512,
        min_brain_fraction: float = 0.0,
        patch_size: tuple[int, int, int] | None = None,
        patches_per_volume: int = 8,
        on_corrupt: OnCorrupt = "raise",
        shard_url: str | None = None,
        drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if mode not in ("slices", "patches", "volumes"):
            raise ValueError(f"mode must be slices, patches or volumes, got {mode!r}")
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        if resampled and not (steps_per_epoch and steps_per_epoch > 0):
            raise ValueError("resampled=True needs steps_per_epoch > 0")
        if mode == "patches" and (patch_size is None or len(patch_size) != 3):
            raise ValueError("mode='patches' needs patch_size=(px, py, pz)")
        self.manifest, base = load_shard_manifest(source)
        if split not in self.manifest.splits:
            raise ValueError(f"split {split!r} is not in {source} ({list(self.manifest.splits)})")
        self.shards = self.manifest.shards_of(split)
        if not self.shards:
            raise ValueError(
                f"{source}: split {split!r} has no tar shards (formats: {self.manifest.formats})"
            )
        self.shape = tuple(self.manifest.splits[split].shape)
        if mode == "patches" and any(p > s for p, s in zip(patch_size, self.shape, strict=True)):
            raise ValueError(f"patch_size {patch_size} exceeds the volume shape {self.shape}")
        self.split, self.mode, self.batch_size = split, mode, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.resampled, self.steps_per_epoch = resampled, steps_per_epoch
        self.shuffle = resampled if shuffle is None else shuffle
        self.shuffle_buffer = shuffle_buffer
        self.min_brain_fraction = min_brain_fraction
        self.patch_size = tuple(patch_size) if patch_size else None
        self.patches_per_volume = patches_per_volume
        self.on_corrupt = on_corrupt
        self.drop_last = drop_last
        self.dtype = dtype
        template = shard_url or f"{base}/{{name}}"
        self.urls = [template.format(name=s.name) for s in self.shards]
        self.epoch = 0
        self.skipped = 0  # corrupt samples skipped in this process

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draws; call before creating each epoch's iterator."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples (subjects) in the split, per the manifest."""
        return sum(s.count for s in self.shards)

    # --- splitting ------------------------------------------------------------------------

    def _consumer(self) -> tuple[int, int]:
        """(worker id, workers per rank) of the calling DataLoader worker (0, 1 in-process)."""
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def _split_plan(self, consumer: int, n_consumers: int) -> list[tuple[int, Callable | None]]:
        """Shards (index, position filter) this consumer reads in split mode."""
        if len(self.shards) >= n_consumers:
            return [(i, None) for i in range(consumer, len(self.shards), n_consumers)]
        plan, offset = [], 0
        for i, shard in enumerate(self.shards):
            plan.append((i, lambda p, o=offset: (o + p) % n_consumers == consumer))
            offset += shard.count
        return plan

    # --- samples → items → batches --------------------------------------------------------

    def _samples(self, plan: Iterator[tuple[int, Callable | None]]) -> Iterator[Sample | int]:
        """Decoded samples of the planned shards; an int is a count of skipped samples."""
        for index, wanted in plan:
            for read in read_shard(self.urls[index], self.shards[index], wanted=wanted):
                if read.sample is not None:
                    yield read.sample
                elif self.on_corrupt == "raise":
                    raise CorruptShardError(read.problem)
                else:
                    log.warning("skipping corrupt sample: %s", read.problem)
                    self.skipped += 1
                    yield 1

    def _items(self, sample: Sample, rng: np.random.Generator) -> list[tuple]:
        """Items ``(subject_id, k, where, image, mask, variant, lesion)`` of one sample.

        Axial items are views of the decoded sample wherever no variant box meets them
        (:meth:`Sample.axial`), so the shuffle buffer keeps the samples it draws from alive
        rather than copying every slice; patches and volumes are compact copies. ``k`` is
        -1 when the split has no variants: the clean image with an empty lesion.
        """
        n_var = sample.num_variants
        if self.mode == "slices":
            brain = np.asarray(sample.meta["axial_brain_voxels"])
            zs = np.flatnonzero(brain >= self.min_brain_fraction * self.shape[0] * self.shape[1])
            ks = rng.integers(n_var, size=len(zs)) if n_var else np.full(len(zs), -1)
            where = zs.tolist()
            columns = list(sample.axial(zs, ks))
        elif self.mode == "patches":
            size = np.array(self.patch_size)
            brain = np.argwhere(sample.mask > 0)
            centres = brain[rng.integers(len(brain), size=self.patches_per_volume)]
            origins = np.clip(centres - size // 2, 0, np.array(self.shape) - size)
            ks = rng.integers(n_var, size=len(origins)) if n_var else [-1] * len(origins)
            where = origins.tolist()
            regions = [tuple(slice(a, a + s) for a, s in zip(o, size, strict=True)) for o in where]
            columns = [
                [np.ascontiguousarray(a[r]) for r in regions] for a in (sample.image, sample.mask)
            ] + [
                [cut(int(k), r) for k, r in zip(ks, regions, strict=True)]
                for cut in (sample.variant, sample.lesion)
            ]
        else:
            ks = rng.integers(n_var, size=1) if n_var else [-1]
            where = [None]
            columns = [[np.ascontiguousarray(a)] for a in (sample.image, sample.mask)]
            columns += [[sample.variant(int(ks[0]))], [sample.lesion(int(ks[0]))]]
        ks = [int(k) for k in ks]
        return list(zip([sample.subject_id] * len(ks), ks, where, *columns, strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """This process's batches (a DataLoader worker's share under a DataLoader)."""
        return self.batches(*self._consumer())

    def batches(
        self, worker: int = 0, n_workers: int = 1, ring: Any = None
    ) -> Iterator[dict[str, Any]]:
        """The batches of loader worker ``worker`` of ``n_workers`` (of this rank). With a
        ``ring`` (:class:`adsys.shards.loader.BatchRing`), batch arrays go into its slots
        and the batch carries the slot's address instead."""
        rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])
        if self.resampled:
            quota = self.steps_per_epoch // n_workers + (worker < self.steps_per_epoch % n_workers)
            samples = self._samples(self._resampled_plan(rng))
        else:
            quota = None
            consumer, n_consumers = self.rank * n_workers + worker, self.world_size * n_workers
            plan = self._split_plan(consumer, n_consumers)
            if self.shuffle:
                rng.shuffle(plan)
            samples = self._samples(iter(plan))
        yield from self._batches(samples, rng, quota, self._packer(worker, ring))

    def _packer(self, worker: int, ring: Any) -> Callable[[list[tuple]], dict[str, Any]]:
        """Items → batch: collated tensors, or (with a ring) the arrays in a free ring slot
        and the batch carrying its address (collated tensors when no slot came free)."""
        stack = _Stacker()

        def pack(items: list[tuple]) -> dict[str, Any]:
            slot = None if ring is None else ring.put(worker, items, stack)
            if slot is None:
                return _collate(items, self.mode, self.dtype, stack)
            return {**_labels(items, self.mode), "slot": (worker, slot, len(items))}

        return pack

    def _resampled_plan(self, rng: np.random.Generator) -> Iterator[tuple[int, None]]:
        weights = np.array([s.count for s in self.shards], dtype=np.float64)
        weights /= weights.sum()
        while True:
            yield int(rng.choice(len(self.shards), p=weights)), None

    def _batches(
        self,
        samples: Iterator[Sample | int],
        rng: np.random.Generator,
        quota: int | None,
        pack: Callable[[list[tuple]], dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        buffer: list[tuple] = []
        skipped = produced = idle = 0
        capacity = self.shuffle_buffer if self.shuffle else 0
        if quota == 0:
            return

        def ready() -> bool:
            """A batch is due: the buffer is full, or (resampled) holds the rest of the quota."""
            full = max(capacity, self.batch_size)
            if quota is None:
                return len(buffer) >= full
            return produced < quota and len(buffer) >= min(
                full, (quota - produced) * self.batch_size
            )

        for sample in samples:
            if isinstance(sample, int):
                skipped += sample
                idle += 1
                if quota is not None and idle > 10 * len(self.shards) + 10:
                    raise CorruptShardError(f"no readable sample in the last {idle} reads")
                continue
            idle = 0
            buffer.extend(self._items(sample, rng))
            while ready():
                if self.shuffle:
                    picks = rng.choice(len(buffer), size=self.batch_size, replace=False)
                    items = [buffer[i] for i in picks]
                    for i in sorted(picks, reverse=True):
                        buffer[i] = buffer[-1]
                        buffer.pop()
                else:
                    items, buffer = buffer[: self.batch_size], buffer[self.batch_size :]
                yield {**pack(items), "skipped": skipped}
                skipped, produced = 0, produced + 1
            if quota is not None and produced >= quota:
                break
        if quota is None:  # split mode: flush what is left
            if self.shuffle:
                rng.shuffle(buffer)
            while buffer and (len(buffer) >= self.batch_size or not self.drop_last):
                items, buffer = buffer[: self.batch_size], buffer[self.batch_size :]
                yield {**pack(items), "skipped": skipped}
                skipped = 0
        if skipped:
            yield {"skipped": skipped}
