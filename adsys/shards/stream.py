"""Streaming reader: training batches from tar shards, checked against ``manifest.json``.

Tar alone cannot tell a complete shard from a damaged one: a corrupt header mid-shard reads
as the end of the archive and a corrupt payload reads as data. Every shard is therefore read
against its manifest record: each sample's checksum is verified, and a shard that ends early
(truncated, or a header overwritten) reports every sample it lost. ``on_corrupt="raise"``
stops with :class:`CorruptShardError`; ``"skip"`` drops the sample and counts it (batches
carry the count, :class:`ShardLoader` sums it) — a stream is never silently shortened.

Two ways to split the work, both explicit about ``rank``/``world_size`` and DataLoader
workers (``consumers = world_size × num_workers``):

* ``resampled=True`` (training): each consumer draws shards at random (weighted by sample
  count, seeded per (seed, rank, worker, epoch)) and yields exactly its share of
  ``steps_per_epoch`` full batches, so every rank does the same number of steps (no DDP hang).
* ``resampled=False`` (evaluation, "split" mode): every sample of the split is seen exactly
  once by exactly one consumer — whole shards per consumer when there are at least as many
  shards as consumers, else every ``consumers``-th sample.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import tarfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adsys.shards.schema import (
    MANIFEST_NAME,
    MAX_MEMBER_BYTES,
    REQUIRED_FIELDS,
    Sample,
    ShardFormatError,
    ShardManifest,
    ShardRecord,
    decode_sample,
    parse_member_name,
    sample_digest,
)

log = logging.getLogger(__name__)

Mode = Literal["slices", "patches", "volumes"]
OnCorrupt = Literal["raise", "skip"]
_READ_BUFFER = 1 << 20
_ALIGN = 64  # byte alignment of the arrays in a ring slot


class CorruptShardError(ShardFormatError):
    """A shard or sample does not match its manifest record (checksum, count, format)."""


@dataclass
class ShardRead:
    """One sample position of a shard: the decoded ``sample``, or the ``problem`` with it."""

    position: int
    sample: Sample | None = None
    problem: str | None = None


def load_shard_manifest(source: str | Path) -> tuple[ShardManifest, str]:
    """``(manifest, base URL)`` from a build folder, a manifest path, or a manifest URL."""
    source = str(source)
    if Path(source).is_dir():
        source = str(Path(source) / MANIFEST_NAME)
    with contextlib.closing(wds.gopen(source, "rb")) as f:
        manifest = ShardManifest.from_json(f.read(), source)
    return manifest, source.rsplit("/", 1)[0] if "/" in source else "."


def read_shard(
    url: str,
    shard: ShardRecord,
    *,
    wanted: Callable[[int], bool] | None = None,
    fields: tuple[str, ...] = REQUIRED_FIELDS,
) -> Iterator[ShardRead]:
    """Read one tar shard (any URL ``webdataset.gopen`` opens) against its record.

    Yields one :class:`ShardRead` per sample position of ``shard`` that ``wanted`` accepts
    (default: all), in order: decoded (only ``fields``; checksum verified) or with the
    problem found. Positions lost to truncation or a damaged header come last, one each.
    """
    expected = shard.samples
    position = 0  # position of the sample being read
    key, members = None, []

    def finish() -> ShardRead | None:
        nonlocal position
        pos, position = position, position + 1
        if wanted is not None and not wanted(pos):
            return None
        if pos >= len(expected):
            return ShardRead(pos, problem=f"{url}: extra sample {key!r} beyond the manifest")
        record = expected[pos]
        if key != record.key or sample_digest(members) != record.sha256:
            return ShardRead(pos, problem=f"{url}: sample {record.key} (#{pos}) checksum mismatch")
        try:
            return ShardRead(pos, sample=decode_sample(members, fields))
        except (ShardFormatError, KeyError, TypeError) as exc:
            return ShardRead(pos, problem=f"{url}: sample {record.key} (#{pos}) undecodable: {exc}")

    try:
        with (
            contextlib.closing(wds.gopen(url, "rb")) as stream,
            tarfile.open(fileobj=stream, mode="r|", bufsize=_READ_BUFFER) as tar,
        ):
            for info in tar:
                k, _, _ = parse_member_name(info.name)
                if not info.isreg() or info.size > MAX_MEMBER_BYTES:
                    raise ShardFormatError(f"member {info.name!r} is not a regular file we wrote")
                if key is not None and k != key:
                    if (read := finish()) is not None:
                        yield read
                    members = []
                key = k
                keep = wanted is None or wanted(position)
                members.append((info.name, tar.extractfile(info).read() if keep else b""))
            if key is not None:
                if (read := finish()) is not None:
                    yield read
    except (tarfile.TarError, OSError, EOFError, ShardFormatError) as exc:
        log.warning("%s: unreadable after %d sample(s): %s", url, position, exc)
    lost = f"{url}: shard ends after {position} of {len(expected)} samples (truncated or damaged)"
    for pos in range(position, len(expected)):
        if wanted is None or wanted(pos):
            yield ShardRead(pos, problem=lost)


FIELDS = ("image", "mask", "variant", "lesion")  # item arrays, after (subject_id, k, where)


def _stack(arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, *shape) ``dtype`` tensor from C-contiguous same-shape arrays (torch casts:
    numpy's float16 cast is slow)."""
    return torch.from_numpy(np.stack(arrays)).to(dtype).unsqueeze(1)


def _labels(items: list[tuple], mode: Mode) -> dict[str, Any]:
    """The non-array fields of a batch of items, as plain lists (what workers send as is)."""
    labels: dict[str, Any] = {
        "variant_index": [it[1] for it in items],
        "subject_id": [it[0] for it in items],
    }
    if mode == "slices":
        labels["slice_index"] = [it[2] for it in items]
    elif mode == "patches":
        labels["origin"] = [it[2] for it in items]
    return labels


def _to_torch(labels: dict[str, Any]) -> dict[str, Any]:
    """:func:`_labels` with the index lists as int64 tensors."""
    return {
        k: v if k == "subject_id" else torch.tensor(v, dtype=torch.int64) for k, v in labels.items()
    }


def _collate(items: list[tuple], mode: Mode, dtype: torch.dtype) -> dict[str, Any]:
    """Stack items ``(subject_id, k, where, image, mask, variant, lesion)`` into a batch."""
    batch = {name: _stack([it[i] for it in items], dtype) for i, name in enumerate(FIELDS, 3)}
    return {**batch, **_to_torch(_labels(items, mode))}


class _Ring:
    """Shared-memory batch slots from DataLoader workers to the consumer, without copies.

    A worker stacks a batch's arrays, cast to the batch dtype, straight into a free slot of
    its own and sends only the slot's address and the labels. The consumer hands out
    tensors that view the slot (all four share one storage); the slot is freed when that
    storage is (``weakref.finalize`` on the array under it), i.e. when the batch and every
    view of it are gone. So a batch costs no shared-memory segment, no page faults and no
    copy in the training process. ``slots`` per worker cover the batches in flight plus the
    one the consumer holds; a consumer that keeps more alive makes the worker wait up to
    ``wait`` seconds once, then send such batches the ordinary way (counted as copied):
    holding on to batches is safe, only slower.
    """

    def __init__(
        self, stream: ShardStream, workers: int, slots: int, context: Any, wait: float = 0.2
    ) -> None:
        item = {
            "slices": stream.shape[:2],
            "patches": stream.patch_size,
            "volumes": stream.shape,
        }[stream.mode]
        self.shape = (stream.batch_size, 1, *item)
        self.dtype = stream.dtype
        self.np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
        self.field_bytes = -(-math.prod(self.shape) * self.dtype.itemsize // _ALIGN) * _ALIGN
        self.slots, self.wait = slots, wait
        size = (workers, slots, len(FIELDS) * self.field_bytes)
        self.buffer = torch.zeros(size, dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()
        self.free = [context.Semaphore(slots) for _ in range(workers)]

    def _fields(self, raw: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The (n, 1, *item) tensors of ``FIELDS`` in a slot's bytes."""
        count = n * math.prod(self.shape[1:])
        return [
            raw[i * self.field_bytes :].view(self.dtype)[:count].view(n, *self.shape[1:])
            for i in range(len(FIELDS))
        ]

    def put(self, worker: int, items: list[tuple]) -> int | None:
        """Stack ``items``' arrays into a free slot of ``worker``; its index, or None when
        none came free in time (the caller then sends the batch the ordinary way)."""
        if not self.free[worker].acquire(timeout=self.wait):
            self.wait = 0.0  # the consumer holds on to batches: stop waiting for it
            return None
        busy = self.busy[worker].numpy()
        slot = int(np.flatnonzero(busy == 0)[0])
        busy[slot] = 1
        for i, out in enumerate(self._fields(self.buffer[worker, slot], len(items)), start=3):
            arrays = [it[i] for it in items]
            if arrays[0].dtype == self.np_dtype:  # straight into the slot
                np.stack(arrays, out=out[:, 0].numpy())
            else:  # numpy casts float16 slowly: stack, then let torch cast
                out[:, 0].copy_(torch.from_numpy(np.stack(arrays)))
        return slot

    def take(self, worker: int, slot: int, n: int) -> dict[str, torch.Tensor]:
        """The slot's (n, 1, *item) tensors, valid until the last of them (or of their
        views) is freed; then the slot goes back to ``worker``."""
        under = self.buffer[worker, slot].numpy()  # the storage of what we hand out keeps it
        weakref.finalize(under, self._release, worker, slot)
        return dict(zip(FIELDS, self._fields(torch.from_numpy(under), n), strict=True))

    def _release(self, worker: int, slot: int) -> None:
        self.busy[worker, slot] = 0
        self.free[worker].release()


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
    stream; :class:`ShardLoader` absorbs it.
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
        self._ring: _Ring | None = None  # set by ShardLoader for its DataLoader workers

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

        Item arrays are compact C copies cut from the decoded sample (a variant only where
        its box meets the item), so the shuffle buffer never keeps whole samples alive.
        ``k`` is -1 when the split has no variants: the clean image with an empty lesion.
        """
        n_var = sample.num_variants
        if self.mode == "slices":
            rows = sample.mask.transpose(2, 0, 1).reshape(self.shape[2], -1)
            brain = rows.sum(axis=1, dtype=np.int32)  # the mask is {0, 1}
            zs = np.flatnonzero(brain >= self.min_brain_fraction * rows.shape[1])
            ks = rng.integers(n_var, size=len(zs)) if n_var else np.full(len(zs), -1)
            where = zs.tolist()
            columns = [list(a) for a in sample.axial(zs, ks)]
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
        worker, n_workers = self._consumer()
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
        yield from self._batches(samples, rng, quota, self._packer(worker))

    def _packer(self, worker: int) -> Callable[[list[tuple]], dict[str, Any]]:
        """Items → batch: collated tensors in-process; in a :class:`ShardLoader` worker, the
        arrays go into a free ring slot and the batch carries its address (collated
        tensors when no slot came free)."""
        ring = self._ring if get_worker_info() is not None else None

        def pack(items: list[tuple]) -> dict[str, Any]:
            slot = None if ring is None else ring.put(worker, items)
            if slot is None:
                return _collate(items, self.mode, self.dtype)
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


class ShardLoader:
    """A DataLoader over a :class:`ShardStream` that sums skipped corrupt samples.

    Iterating yields the stream's batches without the ``skipped`` field; ``skipped`` holds
    the total over all workers since the loader was made. ``len()`` is ``steps_per_epoch``
    in resampled mode. Workers hand batch arrays over through a shared-memory ring
    (:class:`_Ring`, made per iteration) rather than one new shared tensor per array; the
    batches are views of it, recycled once freed. ``copied`` counts batches that came the
    ordinary way because the consumer was holding all of a worker's slots.
    """

    def __init__(self, stream: ShardStream, loader: DataLoader) -> None:
        self.stream = stream
        self.loader = loader
        self.skipped = 0
        self.copied = 0

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        if not self.stream.resampled:
            raise TypeError("a split-mode ShardLoader has no fixed length")
        return self.stream.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ring = None
        # persistent workers keep the stream they started with, so they cannot get a new ring
        if self.loader.num_workers > 0 and not self.loader.persistent_workers:
            context = self.loader.multiprocessing_context or multiprocessing.get_context()
            slots = (self.loader.prefetch_factor or 0) + 2  # in flight, being made, held
            ring = _Ring(self.stream, self.loader.num_workers, slots, context)
        self.stream._ring = ring  # the workers started by iter(self.loader) inherit it
        pin = self.loader.pin_memory and torch.cuda.is_available()
        for batch in self.loader:
            self.skipped += int(batch.pop("skipped"))
            if "slot" in batch:
                arrays = ring.take(*batch.pop("slot"))
                if pin:
                    arrays = {k: v.pin_memory() for k, v in arrays.items()}
                batch = {**arrays, **_to_torch(batch)}
            elif ring is not None and "image" in batch:
                self.copied += 1
            if batch:
                yield batch


def make_loader(
    stream: ShardStream,
    *,
    num_workers: int = 2,
    pin_memory: bool = False,
    prefetch_factor: int | None = 2,
    multiprocessing_context: str | None = None,
) -> ShardLoader:
    """A :class:`ShardLoader` with ``num_workers`` worker processes (batches are made by the
    stream, so the DataLoader runs with ``batch_size=None``). Workers are not persistent:
    call ``loader.set_epoch(e)`` before each epoch's ``iter``."""
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        persistent_workers=False,
    )
    return ShardLoader(stream, loader)
