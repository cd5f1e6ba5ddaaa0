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

A stream stacks only the ``fields`` its consumer asks for, and may apply an online
``corruption`` (:mod:`adsys.synth.corruption`) to each batch where the batch is made — in the
loader's worker processes — seeded from (seed, rank, worker, epoch, batch index), seeding
domain ``corruption``. A corruption's cohort options left unset (e.g. tissue centroids) are
filled once, here, from the manifest's ``statistics``, so every worker uses the same values.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from adsys.errors import InputError
from adsys.seeding import generator
from adsys.shards.sample import Sample
from adsys.shards.schema import ShardFormatError
from adsys.shards.tar import load_shard_manifest, read_shard

if TYPE_CHECKING:
    from adsys.synth.corruption import Corruption

log = logging.getLogger(__name__)

Mode = Literal["slices", "patches", "volumes"]
OnCorrupt = Literal["raise", "skip"]


class CorruptShardError(ShardFormatError):
    """A shard or sample does not match its manifest record (checksum, count, format)."""


FIELDS = ("image", "mask", "variant", "lesion")  # item arrays, after (subject_id, k, where)
CORRUPTION_FIELDS = ("corrupted", "anomaly_mask")  # what a corruption adds to a batch
TARGET_FIELD = "target"  # added too when the corruption yields a restoration target


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
        """Write item array ``i`` (``it[3 + i]``) of ``items`` into ``dests[i]`` (n, 1, *item)."""
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


def _crop_box(
    array: np.ndarray, box: list[tuple[int, int]], corner: list[int], size: tuple[int, ...]
) -> np.ndarray:
    """The ``size`` crop at ``corner`` of ``array`` (x, y) restricted to ``box`` (lo, hi) per
    axis: zeros outside the box (a compact copy)."""
    out = np.zeros(size, array.dtype)
    src, dst = [], []
    for (lo, hi), c, p in zip(box, corner, size, strict=True):
        a, b = max(lo, c), min(hi, c + p)
        src.append(slice(a, b))
        dst.append(slice(a - c, b - c))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _to_torch(labels: dict[str, Any]) -> dict[str, Any]:
    """A batch's labels with the (int64) index arrays as tensors."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in labels.items()}


def _batch_tensors(
    fields: tuple[str, ...], n: int, item: tuple[int, ...], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Empty (n, 1, *item) tensors of ``dtype``, one per field (a batch made in-process)."""
    return {name: torch.empty((n, 1, *item), dtype=dtype) for name in fields}


class ShardStream(IterableDataset):
    """Training / evaluation batches from the tar shards of one split.

    Args:
        source: build folder, ``manifest.json`` path, or its URL.
        split: ``train``, ``val`` or ``test``.
        mode: ``slices`` (axial, the last axis; items (1, x, y)), ``patches`` (items
            (1, *patch_size): 3 sizes, centred on random brain voxels; 2 sizes, random crops
            of random axial slices with brain, each slice cropped to its brain's bounding
            box and zero-padded where the box is smaller than the patch) or ``volumes``
            (1, x, y, z).
        batch_size: items per batch.
        rank, world_size: this process's place among the training ranks.
        seed: base seed; draws use (seed, rank, worker, epoch) — see :meth:`set_epoch`.
        resampled: draw shards with replacement, ``steps_per_epoch`` batches per rank.
        steps_per_epoch: batches per rank per epoch (``resampled`` only; required there).
        shuffle: shuffle shard order and items (buffer ``shuffle_buffer``); default:
            ``resampled``.
        min_brain_fraction: ``slices`` keeps slices whose brain fraction is ≥ this.
        patch_size, patches_per_volume: ``patches`` mode geometry and count per sample
            (2D patches: their slices' brain fraction ≥ ``min_brain_fraction``, > 0).
        on_corrupt: ``raise`` or ``skip`` (counted in each batch's ``skipped``).
        shard_url: template for shard URLs with ``{name}`` (e.g.
            ``"pipe:aws s3 cp s3://bucket/demo/{name} -"``); default: beside the manifest.
        drop_last: drop a final partial batch (split mode); resampled batches are all full.
        fields: which of ``image``, ``mask``, ``variant``, ``lesion`` batches hold (default:
            all four; only these are cut and stacked).
        corruption: an online corruption (:class:`adsys.synth.corruption.Corruption`;
            needs the ``image`` and ``mask`` fields) applied to every batch where it is
            made; the batch then also holds ``corrupted``, ``anomaly_mask`` and
            ``corruption``: ``{"keys": [seed, rank, worker, epoch, index], "params": [...]}``
            — :func:`adsys.seeding.generator` ``("corruption", *keys)`` regenerates it and
            ``corruption.replay(image, mask, params)`` replays it — and ``target`` when the
            corruption yields one. Its unset cohort options are filled from the manifest's
            ``statistics`` (:attr:`corruption`).
        dtype: dtype of the batch's array tensors. ``torch.float16``
            (exact: the shards store float16) halves what workers send to the trainer; cast on
            the device.

    Each batch is a dict: the ``fields`` (B, 1, ...) ``dtype`` (``image``, ``mask``,
    ``variant``, ``lesion``), the corruption's fields when there is one;
    ``variant_index`` (B,) int64 (-1 when the split has no variants: the variant is then the
    clean image and the lesion empty); ``subject_id`` list of B str; ``slice_index`` (B,)
    or ``origin`` (B, 3) int64 in ``slices`` / ``patches`` mode (2D patches: (x, y) of the
    corner and the slice z); ``skipped``: corrupt
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
        patch_size: tuple[int, ...] | None = None,
        patches_per_volume: int = 8,
        on_corrupt: OnCorrupt = "raise",
        shard_url: str | None = None,
        drop_last: bool = False,
        fields: tuple[str, ...] = FIELDS,
        corruption: Corruption | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not set(fields) <= set(FIELDS) or "image" not in fields:
            raise ValueError(f"fields must include 'image' and be some of {FIELDS}, got {fields}")
        if corruption is not None and "mask" not in fields:
            raise ValueError("a corruption reads the brain mask: add 'mask' to fields")
        if mode not in ("slices", "patches", "volumes"):
            raise ValueError(f"mode must be slices, patches or volumes, got {mode!r}")
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        if resampled and not (steps_per_epoch and steps_per_epoch > 0):
            raise ValueError("resampled=True needs steps_per_epoch > 0")
        if mode == "patches" and (patch_size is None or len(patch_size) not in (2, 3)
                                  or min(patch_size) < 1):
            raise ValueError("mode='patches' needs patch_size=(px, py, pz) or (px, py)")
        self.manifest, base = load_shard_manifest(source)
        if split not in self.manifest.splits:
            raise ValueError(f"split {split!r} is not in {source} ({list(self.manifest.splits)})")
        self.shards = self.manifest.shards_of(split)
        if not self.shards:
            raise ValueError(
                f"{source}: split {split!r} has no tar shards (formats: {self.manifest.formats})"
            )
        self.shape = tuple(self.manifest.splits[split].shape)
        if mode == "patches" and len(patch_size) == 3 and any(
            p > s for p, s in zip(patch_size, self.shape, strict=True)
        ):
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
        self.fields = tuple(f for f in FIELDS if f in fields)  # the items' array order
        self.corruption = None if corruption is None else self._bind(corruption, source)
        self.batch_fields = self.fields + (CORRUPTION_FIELDS if corruption else ()) + (
            (TARGET_FIELD,) if corruption is not None and corruption.yields_target else ())
        self.dtype = dtype
        template = shard_url or f"{base}/{{name}}"
        self.urls = [template.format(name=s.name) for s in self.shards]
        self.epoch = 0
        self.skipped = 0  # corrupt samples skipped in this process

    def _bind(self, corruption: Corruption, source: str | Path) -> Corruption:
        """``corruption`` with its unset cohort options from the manifest's statistics."""
        missing = corruption.cohort_keys() - set(self.manifest.statistics)
        if missing:
            raise InputError(
                source, f"the stream's corruption needs cohort statistics "
                f"{sorted(missing)} that these shards' manifest.json does not hold (built "
                f"before they were computed)",
                "rebuild the shards (adsys shards build SPEC --overwrite), or set the "
                "corruption's options explicitly",
            )
        return corruption.with_statistics(self.manifest.statistics)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draws; call before creating each epoch's iterator."""
        self.epoch = int(epoch)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The spatial shape of one item: an axial slice, a patch or the volume."""
        return {"slices": self.shape[:2], "patches": self.patch_size,
                "volumes": self.shape}[self.mode]

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
        """Items ``(subject_id, k, where, *arrays)`` of one sample, one array per field.

        Axial items are views of the decoded sample wherever no variant box meets them
        (:meth:`Sample.axial`), so the shuffle buffer keeps the samples it draws from alive
        rather than copying every slice; patches and volumes are compact copies. ``k`` is
        -1 when the split has no variants: the clean image with an empty lesion. The draws
        do not depend on ``fields``: a stream of fewer fields yields the same items.
        """
        n_var = sample.num_variants
        cut_variants = "variant" in self.fields or "lesion" in self.fields
        if self.mode == "slices":
            brain = np.asarray(sample.meta["axial_brain_voxels"])
            zs = np.flatnonzero(brain >= self.min_brain_fraction * self.shape[0] * self.shape[1])
            ks = rng.integers(n_var, size=len(zs)) if n_var else np.full(len(zs), -1)
            where = zs.tolist()
            cuts = sample.axial(zs, ks if cut_variants else np.full_like(ks, -1))
            arrays = dict(zip(FIELDS, cuts, strict=True))
            columns = [arrays[f] for f in self.fields]
        elif self.mode == "patches" and len(self.patch_size) == 2:
            where, columns, ks = self._slice_patches(sample, rng, n_var, cut_variants)
        else:
            if self.mode == "patches":
                size = np.array(self.patch_size)
                brain = np.argwhere(sample.mask > 0)
                centres = brain[rng.integers(len(brain), size=self.patches_per_volume)]
                origins = np.clip(centres - size // 2, 0, np.array(self.shape) - size)
                where = origins.tolist()
                regions = [tuple(slice(a, a + s) for a, s in zip(o, size, strict=True))
                           for o in where]
            else:
                where, regions = [None], [(slice(None),) * 3]
            ks = rng.integers(n_var, size=len(regions)) if n_var else [-1] * len(regions)
            cut = {
                "image": lambda k, r: np.ascontiguousarray(sample.image[r]),
                "mask": lambda k, r: np.ascontiguousarray(sample.mask[r]),
                "variant": sample.variant,
                "lesion": sample.lesion,
            }
            columns = [[cut[f](int(k), r) for k, r in zip(ks, regions, strict=True)]
                       for f in self.fields]
        ks = [int(k) for k in ks]
        return list(zip([sample.subject_id] * len(ks), ks, where, *columns, strict=True))

    def _slice_patches(
        self, sample: Sample, rng: np.random.Generator, n_var: int, cut_variants: bool
    ) -> tuple[list, list[list[np.ndarray]], np.ndarray]:
        """2D patches of one sample: ``patches_per_volume`` random axial slices with brain,
        each cut to its brain's bounding box, then a random ``patch_size`` crop of the box
        (zero-padded, the box at a random place in the patch, when the box is smaller).
        Returns (where = [x, y, z] corners, one column of arrays per field, variants)."""
        area = self.shape[0] * self.shape[1]
        brain = np.asarray(sample.meta["axial_brain_voxels"])
        eligible = np.flatnonzero((brain > 0) & (brain >= self.min_brain_fraction * area))
        if not len(eligible):
            raise ValueError(f"subject {sample.subject_id}: no axial slice with brain "
                             f"(min_brain_fraction {self.min_brain_fraction})")
        zs = eligible[rng.integers(len(eligible), size=self.patches_per_volume)]
        ks = rng.integers(n_var, size=len(zs)) if n_var else np.full(len(zs), -1)
        cuts = dict(zip(FIELDS, sample.axial(zs, ks if cut_variants else np.full_like(ks, -1)),
                        strict=True))
        where, boxes = [], []
        for z, mask in zip(zs, cuts["mask"], strict=True):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = [(rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)]
            corner = [lo + int(rng.integers(min(0, hi - lo - p), max(0, hi - lo - p) + 1))
                      for (lo, hi), p in zip(box, self.patch_size, strict=True)]
            where.append([*corner, int(z)])
            boxes.append(box)
        columns = [[_crop_box(a, box, w[:2], self.patch_size)
                    for a, box, w in zip(cuts[f], boxes, where, strict=True)]
                   for f in self.fields]
        return where, columns, ks

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

    def _packer(self, worker: int, ring: Any) -> Callable[[list[tuple], int], dict[str, Any]]:
        """(items, batch index) → batch: its tensors, or (with a ring) the arrays in a free
        ring slot and the batch carrying its address (tensors when no slot came free)."""
        stack = _Stacker()

        def fill(items: list[tuple], dests: list[torch.Tensor], index: int) -> dict[str, Any]:
            """Stack ``items`` into ``dests`` (one tensor per batch field), corrupt; the
            batch's labels."""
            stack(items, dests[: len(self.fields)])
            labels = _labels(items, self.mode)
            if self.corruption is not None:
                tensors = dict(zip(self.batch_fields, dests, strict=True))
                labels["corruption"] = self._corrupt(tensors, worker, index)
            return labels

        def pack(items: list[tuple], index: int) -> dict[str, Any]:
            if ring is not None:
                put = ring.put(worker, len(items), lambda dests: fill(items, dests, index))
                if put is not None:
                    slot, labels = put
                    return {**labels, "slot": (worker, slot, len(items))}
            batch = _batch_tensors(self.batch_fields, len(items), self.item_shape, self.dtype)
            return {**batch, **_to_torch(fill(items, list(batch.values()), index))}

        return pack

    def _corrupt(self, batch: dict[str, torch.Tensor], worker: int, index: int) -> dict:
        """Apply the corruption to ``batch`` in place (its corruption fields); the record of
        the keys that regenerate it and the items' replay parameters."""
        keys = [self.seed, self.rank, worker, self.epoch, index]
        res = self.corruption(batch["image"], batch["mask"], generator("corruption", *keys))
        batch["corrupted"].copy_(res.corrupted)
        batch["anomaly_mask"].copy_(res.anomaly_mask)
        if TARGET_FIELD in batch:
            batch[TARGET_FIELD].copy_(res.target)
        return {"keys": keys, "params": res.params}

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
        pack: Callable[[list[tuple], int], dict[str, Any]],
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
                yield {**pack(items, produced), "skipped": skipped}
                skipped, produced = 0, produced + 1
            if quota is not None and produced >= quota:
                break
        if quota is None:  # split mode: flush what is left
            if self.shuffle:
                rng.shuffle(buffer)
            while buffer and (len(buffer) >= self.batch_size or not self.drop_last):
                items, buffer = buffer[: self.batch_size], buffer[self.batch_size :]
                yield {**pack(items, produced), "skipped": skipped}
                skipped, produced = 0, produced + 1
        if skipped:
            yield {"skipped": skipped}
