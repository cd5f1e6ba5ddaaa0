"""Image-level (axial slice) scores and labels for sample-level AP / AUROC.

A slice's label is 1 when it holds any ground-truth voxel (every protocol). Its score is a
reduction of the anomaly map over the slice:

* ``"mean"`` — the mean over the slice, or over the brain-mask voxels of the slice when a
  mask is given (cDDPM: inside the *un-eroded* mask; 0 for a slice without brain);
* ``"max"`` — the maximum (DISYRE);
* ``"top100"`` — the mean of the 100 largest values (DISYRE).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["SLICE_REDUCTIONS", "slice_labels", "slice_scores"]

SliceReduction = Literal["mean", "max", "top100"]
SLICE_REDUCTIONS: tuple[SliceReduction, ...] = ("mean", "max", "top100")


def slice_scores(
    scores: np.ndarray, reduction: SliceReduction = "mean", mask: np.ndarray | None = None
) -> np.ndarray:
    """Score of each axial slice of ``scores`` (x, y, z) → (z,) float64.

    ``mask`` (x, y, z) restricts the ``"mean"`` to brain voxels (0 for a slice without any).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3:
        raise ValueError(f"expected an (x, y, z) map, got shape {scores.shape}")
    flat = scores.reshape(-1, scores.shape[2])  # (x·y, z)
    if reduction == "mean":
        if mask is None:
            return flat.mean(axis=0)
        m = (np.asarray(mask) > 0).reshape(flat.shape)
        counts = m.sum(axis=0)
        sums = (flat * m).sum(axis=0)
        return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    if mask is not None:
        raise ValueError(f"a mask applies to the 'mean' reduction only, not {reduction!r}")
    if reduction == "max":
        return flat.max(axis=0)
    if reduction == "top100":
        k = min(100, flat.shape[0])
        return np.partition(flat, flat.shape[0] - k, axis=0)[-k:].mean(axis=0)
    raise ValueError(f"unknown slice reduction {reduction!r}; use one of {SLICE_REDUCTIONS}")


def slice_labels(gt: np.ndarray) -> np.ndarray:
    """(z,) bool: the slice holds any ground-truth voxel."""
    gt = np.asarray(gt) > 0
    return gt.reshape(-1, gt.shape[2]).any(axis=0)
