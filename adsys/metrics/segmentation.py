"""Segmentation metrics of a map binarised at a given threshold.

The map is binarised as ``map >= threshold``; then, optionally, connected components of at
most ``cc_max_size`` voxels (filled size, 26-connectivity) are removed, as cDDPM does before
its test Dice (:func:`adsys.scoring.postprocess.remove_small_components`). Dice, the false
positive rate and the true positive rate are counted over every voxel of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adsys.scoring.postprocess import remove_small_components

__all__ = ["ThresholdedMetrics", "dice_score", "metrics_at_threshold"]


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """``2|P ∩ G| / (|P| + |G|)`` of two binary arrays; ``nan`` when both are empty."""
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    denom = int(pred.sum()) + int(gt.sum())
    return float("nan") if denom == 0 else 2.0 * int(np.count_nonzero(pred & gt)) / denom


@dataclass(frozen=True)
class ThresholdedMetrics:
    """Metrics of one binarised volume: ``dice``, ``fpr`` = FP / negatives, ``tpr`` =
    TP / positives (``nan`` when undefined), and the predicted voxel count."""

    threshold: float
    dice: float
    fpr: float
    tpr: float
    predicted: int


def metrics_at_threshold(
    scores: np.ndarray, gt: np.ndarray, threshold: float, cc_max_size: int | None = 7
) -> ThresholdedMetrics:
    """Binarise ``scores >= threshold``, drop components ``<= cc_max_size`` voxels (``None``
    keeps all), and compare with the binary ``gt`` (same shape)."""
    scores, gt = np.asarray(scores), np.asarray(gt) > 0
    if scores.shape != gt.shape:
        raise ValueError(f"map {scores.shape} and ground truth {gt.shape} differ in shape")
    pred = scores >= threshold
    if cc_max_size:
        pred = remove_small_components(pred, cc_max_size)
    tp = int(np.count_nonzero(pred & gt))
    positives, predicted = int(gt.sum()), int(pred.sum())
    negatives = gt.size - positives
    nan = float("nan")
    return ThresholdedMetrics(
        threshold=float(threshold),
        dice=dice_score(pred, gt),
        fpr=(predicted - tp) / negatives if negatives else nan,
        tpr=tp / positives if positives else nan,
        predicted=predicted,
    )
