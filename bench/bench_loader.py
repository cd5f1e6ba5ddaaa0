"""Axial slices/s to a consumer: the shard streaming reader vs nibabel reading .nii.gz.

Same data, same batch size, same number of DataLoader workers, measured in one run:

* **shards**: :class:`adsys.shards.ShardStream` in training mode (``resampled``) over the
  build's tar shards — decode each sample, cut its axial slices, one random variant per slice.
* **nibabel**: the usual per-subject pipeline — for each subject, ``nib.load(...).get_fdata()``
  of its image, mask, one random variant and that variant's lesion (``.nii.gz``, float32 /
  uint8, exported from the same build beforehand), cut the same slices.

Both deliver (B, 1, x, y) float32 image, mask, variant and lesion batches of the slices whose
brain fraction is at least ``--min-brain-fraction``. Each pipeline is one loader with
persistent workers, as a training job keeps it: an untimed warm-up epoch (workers start,
page cache), then ``--repeats`` timed epochs of ``--passes`` passes over the split each,
interleaved across pipelines; the best epoch of each counts. Also reported: the shard
stream with float16 batches (exact, since shards hold float16; half the bytes that workers
write), and each pipeline's first epoch (worker start included).

    python bench/bench_loader.py [--shards shards/out/demo] [--workers 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adsys.shards import CohortStore, ShardLoader, ShardStream, make_loader

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("image", "mask", "variant", "lesion")


def export_nifti(store: CohortStore, split: str, folder: Path) -> list[dict[str, object]]:
    """Write each subject's image, mask and every variant + lesion as .nii.gz."""
    subjects = []
    for sid in store.subjects(split):
        sample = store[sid]
        affine = np.asarray(sample.meta["grid"]["affine"])
        paths: dict[str, object] = {"id": sid, "variants": []}
        for name, arr, dtype in (
            ("image", sample.image, np.float32),
            ("mask", sample.mask, np.uint8),
        ):
            paths[name] = folder / f"{sid}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(arr.astype(dtype), affine), paths[name])
        for k in range(sample.variants.shape[0]):
            pair = (folder / f"{sid}_variant{k}.nii.gz", folder / f"{sid}_lesion{k}.nii.gz")
            nib.save(nib.Nifti1Image(sample.variants[k].astype(np.float32), affine), pair[0])
            nib.save(nib.Nifti1Image(sample.lesions[k].astype(np.uint8), affine), pair[1])
            paths["variants"].append(pair)
        subjects.append(paths)
    return subjects


class NiftiSlices(IterableDataset):
    """The reference: per subject, nibabel-read four .nii.gz files and slice them."""

    def __init__(self, subjects, batch_size: int, min_brain_fraction: float, passes: int):
        self.subjects, self.batch_size, self.passes = subjects, batch_size, passes
        self.min_brain_fraction = min_brain_fraction

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n = (0, 1) if info is None else (info.id, info.num_workers)
        shared = np.random.default_rng(0)  # every worker deals from the same order
        order = np.concatenate([shared.permutation(len(self.subjects)) for _ in range(self.passes)])
        rng = np.random.default_rng(worker + 1)
        items: list[tuple[np.ndarray, ...]] = []
        for i in order[worker::n]:
            s = self.subjects[i]
            variant, lesion = s["variants"][rng.integers(len(s["variants"]))]
            image, mask, variant, lesion = (
                nib.load(p).get_fdata(dtype=np.float32)
                for p in (s["image"], s["mask"], variant, lesion)
            )
            keep = np.flatnonzero(mask.mean(axis=(0, 1)) >= self.min_brain_fraction)
            items += [(image[..., z], mask[..., z], variant[..., z], lesion[..., z]) for z in keep]
            while len(items) >= self.batch_size:
                batch, items = items[: self.batch_size], items[self.batch_size :]
                yield {
                    f: torch.from_numpy(np.stack([b[j] for b in batch])[:, None])
                    for j, f in enumerate(FIELDS)
                }
        if items:
            yield {
                f: torch.from_numpy(np.stack([b[j] for b in items])[:, None])
                for j, f in enumerate(FIELDS)
            }


def rate(loader: Iterable[dict]) -> float:
    """Slices per second of one epoch of ``loader``, as its consumer sees them."""
    slices, start = 0, time.perf_counter()
    for batch in loader:
        assert batch["variant"].ndim == 4
        slices += len(batch["image"])
    return slices / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, default=ROOT / "shards" / "out" / "demo")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--passes", type=int, default=20, help="passes over the split per epoch")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs; the best counts")
    p.add_argument("--min-brain-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    if not (args.shards / "manifest.json").is_file():
        print(f"no shard build at {args.shards}: run `make demo` or pass --shards", file=sys.stderr)
        return 2
    store = CohortStore(args.shards)
    masks = [store.read(s, "mask") for s in store.subjects(args.split)]
    per_pass = sum(int((m.mean(axis=(0, 1)) >= args.min_brain_fraction).sum()) for m in masks)

    def shards(dtype: torch.dtype) -> ShardLoader:
        stream = ShardStream(
            args.shards,
            split=args.split,
            mode="slices",
            batch_size=args.batch_size,
            resampled=True,
            steps_per_epoch=math.ceil(args.passes * per_pass / args.batch_size),
            min_brain_fraction=args.min_brain_fraction,
            dtype=dtype,
        )
        return make_loader(stream, num_workers=args.workers)  # workers persist across epochs

    with tempfile.TemporaryDirectory() as tmp:
        subjects = export_nifti(store, args.split, Path(tmp))
        ref = NiftiSlices(subjects, args.batch_size, args.min_brain_fraction, args.passes)
        pipelines = {
            "shards": shards(torch.float32),
            "nibabel": DataLoader(
                ref, batch_size=None, num_workers=args.workers, persistent_workers=True
            ),
            "shards_f16": shards(torch.float16),
        }
        first = {name: rate(loader) for name, loader in pipelines.items()}  # warm-up
        best = {name: 0.0 for name in pipelines}
        for epoch in range(1, args.repeats + 1):  # interleaved: load changes hit all alike
            for name, loader in pipelines.items():
                if isinstance(loader, ShardLoader):
                    loader.set_epoch(epoch)
                best[name] = max(best[name], rate(loader))
        for loader in pipelines.values():
            if isinstance(loader, ShardLoader):
                loader.close()

    shape = store.read(store.subjects()[0], "image").shape
    print(
        f"data: {len(masks)} {args.split} subjects of {shape}, {per_pass} slices per pass "
        f"(brain fraction >= {args.min_brain_fraction}), batch {args.batch_size}, "
        f"{args.workers} workers, best of {args.repeats} epochs of {args.passes} passes"
    )
    for name, label in (
        ("shards", "shard stream, float32 batches"),
        ("nibabel", "nibabel .nii.gz, float32     "),
        ("shards_f16", "shard stream, float16 batches"),
    ):
        print(f"{label} : {best[name]:8.0f} slices/s  (first epoch: {first[name]:6.0f})")
    print(
        f"ratio shard stream / nibabel (float32 both): {best['shards'] / best['nibabel']:.1f}x "
        f"(goal >= 10x); with float16 batches: {best['shards_f16'] / best['nibabel']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
