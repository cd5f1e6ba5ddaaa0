"""Scoring speed: the sliding-window ensemble vs MONAI, pooled histogram metrics vs sklearn.

Two comparisons, each measured in one run (ratios, not bare seconds), results checked equal:

1. **Sliding-window ensemble** (:func:`adsys.scoring.sliding_window_ensemble`, torch twin on
   CPU) vs MONAI's ``sliding_window_inference`` on the same volume, predictor, roi, overlap
   and Gaussian blending. The map is the mean over ``M`` ensemble members of the
   (foreground-weighted) residual ``|x − x̂_m|``. MONAI has no ensemble, so it is measured
   two ways: **per member** (one ``sliding_window_inference`` per member, predictor =
   that member's residual, then the mean: MONAI's API as documented) and **bundled** (one
   pass whose predictor returns the members' mean residual per window: the cheapest MONAI
   can do). Both call the predictor on the same windows the same number of times. The
   predictor is a cheap member-dependent stand-in, so the ratio is that of the tiling /
   blending machinery; with a large network both are network-bound. Cases: DISYRE v2
   (2D axial slices of a 1 mm volume, 128² windows with a 32-voxel step = MONAI overlap 0.75,
   4 members t ∈ {99, 74, 49, 24}, foreground weight, 320 windows per call) and 3D patches
   (48³, overlap 0.5, 3 members, 4 windows per call). Goal: ≥ 2× faster, equal to 1e-5.
2. **Pooled metrics on 10⁷ voxels**: :class:`adsys.metrics.ScoreHistogram` (2¹⁶ bins;
   accumulate in 10 chunks as subjects arrive, then AP, AUROC and best Dice) vs
   scikit-learn's ``average_precision_score`` + ``roc_auc_score`` +
   ``precision_recall_curve`` (best Dice = max 2PR/(P+R)) on the whole array.
   Goal: ≥ 50× faster, within 1e-3.

Each timing is the best of ``--repeats`` interleaved runs.

    python bench/bench_scoring.py [--repeats 5] [--voxels 10000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adsys.metrics import ScoreHistogram
from adsys.scoring import sliding_window_ensemble


def restorer(windows: torch.Tensor, member: float) -> torch.Tensor:
    """A cheap, member-dependent stand-in for a restoration model."""
    return windows * (1.0 - 0.002 * member)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def brain_like(shape: tuple[int, ...]) -> torch.Tensor:
    """Random intensities inside an ellipsoid (per image), zero background."""
    axes = [torch.linspace(-1, 1, n) for n in shape[2:]]
    r2 = sum(g**2 for g in torch.meshgrid(*axes, indexing="ij"))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    return x * (r2 < 0.8)


def bench_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float,
                  members: Sequence[float], sw_batch_size: int, foreground: bool,
                  repeats: int) -> dict[str, float]:
    """Speed-ups over MONAI (per member, bundled) and the max abs difference."""
    x = brain_like(shape)

    def residual(windows: torch.Tensor, member: float) -> torch.Tensor:
        res = (windows - restorer(windows, member)).abs()
        if foreground:
            res = res * (windows > 0).flatten(1).float().mean(1).view(-1, *[1] * (res.ndim - 1))
        return res

    def bundled_residual(windows: torch.Tensor) -> torch.Tensor:
        return sum(residual(windows, m) for m in members) / len(members)

    def monai(predictor: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return sliding_window_inference(x, roi, sw_batch_size, predictor, overlap=overlap,
                                        mode="gaussian")

    runs = {
        "ours": lambda: sliding_window_ensemble(
            x, restorer, roi, members=members, overlap=overlap, mode="gaussian",
            sw_batch_size=sw_batch_size, foreground_weight=foreground,
        ).map,
        "per_member": lambda: sum(monai(lambda w, m=m: residual(w, m)) for m in members)
        / len(members),
        "bundled": lambda: monai(bundled_residual),
    }
    best = dict.fromkeys(runs, float("inf"))
    outs = {name: fn() for name, fn in runs.items()}  # warm-up: caches, allocator
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        for name, fn in runs.items():
            t, outs[name] = timed(fn)
            best[name] = min(best[name], t)
    diff = max(float((outs["ours"] - outs[k]).abs().max()) for k in ("per_member", "bundled"))
    return {"per_member": best["per_member"] / best["ours"],
            "bundled": best["bundled"] / best["ours"], "diff": diff}


def bench_histogram(voxels: int, repeats: int) -> tuple[float, float]:
    """(speed-up over scikit-learn, max abs metric difference) on ``voxels`` scores."""
    rng = np.random.default_rng(0)
    labels = rng.random(voxels) < 0.02
    scores = np.clip(rng.normal(0.1, 0.05, voxels) + 0.15 * labels, 0, 1).astype(np.float32)
    chunks = np.array_split(np.arange(voxels), 10)

    def ours() -> tuple[float, float, float]:
        h = ScoreHistogram()
        for c in chunks:
            h.update(scores[c], labels[c])
        m = h.metrics()
        return m.ap, m.auroc, m.best.dice

    def sklearn() -> tuple[float, float, float]:
        precision, recall, _ = precision_recall_curve(labels, scores)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.nanmax(2 * precision * recall / (precision + recall))
        return average_precision_score(labels, scores), roc_auc_score(labels, scores), dice

    t_ours = t_sk = float("inf")
    for _ in range(repeats):
        t, got = timed(ours)
        t_ours = min(t_ours, t)
        t, want = timed(sklearn)
        t_sk = min(t_sk, t)
    return t_sk / t_ours, float(np.max(np.abs(np.subtract(got, want))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--voxels", type=int, default=10_000_000)
    args = p.parse_args(argv)
    cases = [
        ("DISYRE 2D: 160 slices 160x192, roi 128^2 step 32, 4 t, fg weight, 320/call",
         (160, 1, 160, 192), (128, 128), 0.75, (99, 74, 49, 24), 320, True),
        ("3D: 96x112x96, roi 48^3, overlap 0.5, 3 members, 4/call",
         (1, 1, 96, 112, 96), (48, 48, 48), 0.5, (10, 20, 30), 4, False),
    ]
    ok = True
    for name, *case in cases:
        r = bench_windows(*case, repeats=args.repeats)
        ok &= r["diff"] <= 1e-5
        print(f"sliding-window ensemble vs MONAI, {name}: {r['per_member']:.1f}x faster than "
              f"MONAI per member, {r['bundled']:.1f}x than MONAI bundled (goal >= 2x); "
              f"max |diff| {r['diff']:.1e} (goal <= 1e-5)")
    speedup, diff = bench_histogram(args.voxels, args.repeats)
    ok &= diff <= 1e-3
    print(f"pooled AP+AUROC+best Dice on {args.voxels:.0e} voxels, ScoreHistogram vs "
          f"scikit-learn: {speedup:.1f}x faster (goal >= 50x), max |diff| {diff:.1e} "
          f"(goal <= 1e-3)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
