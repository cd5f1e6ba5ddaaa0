"""Exact ranking metrics of a score map against a binary ground truth.

Every metric here is computed from the same few numbers per *candidate threshold*: a voxel is
predicted anomalous when its score is ``>= threshold`` (scikit-learn's convention), and
because F1 can only fall while a lowered threshold admits negatives alone, the candidates
are the distinct scores of the positive voxels. For each candidate ``v`` (descending) we
need ``c`` (positives scoring exactly ``v``), ``tp`` (positives ``>= v``), ``fp``
(negatives ``>= v``) and ``neg_eq`` (negatives scoring exactly ``v``); then

* **AP** (average precision, = ``sklearn.metrics.average_precision_score``)
  ``= Σ c/P · tp/(tp + fp)`` — the step-wise area under the precision–recall curve;
* **AUROC** (= ``sklearn.metrics.roc_auc_score``) ``= Σ c · (N − fp + ½ neg_eq) / (P·N)``,
  the Mann–Whitney statistic with ties counted one half, which equals the trapezoidal area
  under the ROC curve;
* **best Dice** ``= max 2·tp / (tp + fp + P)``, i.e. the maximum of ``2PR/(P+R)`` over the
  precision–recall curve: the Dice of the best single global threshold, found exactly
  (not by a search over a threshold grid).

:class:`ExactScores` gets these numbers from the sorted positive and negative scores (one
sort each, no per-voxel Python), :class:`~adsys.metrics.histogram.ScoreHistogram` from bin
counts; both share :func:`rank_metrics`, so the histogram form is the exact form applied to
binned scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BestDice",
    "ExactScores",
    "RankMetrics",
    "average_precision",
    "best_dice",
    "dice_from_counts",
    "rank_metrics",
    "roc_auc",
]


@dataclass(frozen=True)
class BestDice:
    """The best Dice over all thresholds and where it is reached.

    ``threshold``: predicted positive when ``score >= threshold``; ``fpr``: the false-positive
    rate at that threshold (``nan`` without negatives). All ``nan`` without positives.
    """

    dice: float
    threshold: float
    fpr: float


@dataclass(frozen=True)
class RankMetrics:
    """AP, AUROC and best Dice of one score set (``nan`` where undefined: no positives for
    all three, no negatives for AUROC)."""

    ap: float
    auroc: float
    best: BestDice
    positives: int
    negatives: int


def rank_metrics(
    values: np.ndarray,
    c: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    neg_eq: np.ndarray,
    positives: int,
    negatives: int,
) -> RankMetrics:
    """AP, AUROC and best Dice from the per-candidate counts described in the module doc.

    All arrays are 1-D over the candidate thresholds ``values`` in *descending* order; ``c``,
    ``tp``, ``fp``, ``neg_eq`` are integer counts (float64 arithmetic is exact up to 2^53).
    """
    p, n = int(positives), int(negatives)
    if p == 0:
        nan = float("nan")
        return RankMetrics(nan, nan, BestDice(nan, nan, nan), p, n)
    c = c.astype(np.float64)
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    ap = float(np.dot(c, tp / (tp + fp)) / p)
    if n:
        auroc = float(np.dot(c, n - fp + 0.5 * neg_eq.astype(np.float64)) / (float(p) * n))
    else:
        auroc = float("nan")
    dice = 2.0 * tp / (tp + fp + p)
    i = int(np.argmax(dice))
    best = BestDice(
        dice=float(dice[i]),
        threshold=float(values[i]),
        fpr=float(fp[i] / n) if n else float("nan"),
    )
    return RankMetrics(ap, auroc, best, p, n)


def _as_flat(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in size")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if labels.dtype != bool:
        labels = labels > 0
    return scores, labels


class ExactScores:
    """Exact, threshold-free view of ``scores`` against binary ``labels`` (any shapes, same
    size; labels are ``> 0``). Sorts positives and negatives once; every metric after that is
    vectorised (``searchsorted``), so a 10⁷-voxel volume costs about one sort.

    Example::

        s = ExactScores(anomaly_map, seg)
        s.metrics().ap, s.metrics().best.dice, s.dice_at(0.3)
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores, labels = _as_flat(scores, labels)
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores contain NaN or infinite values")
        self.pos = np.sort(scores[labels])
        self.neg = np.sort(scores[~labels])

    @property
    def positives(self) -> int:
        return int(self.pos.size)

    @property
    def negatives(self) -> int:
        return int(self.neg.size)

    @property
    def max_score(self) -> float:
        """The largest score; ``nan`` when empty."""
        tops = [a[-1] for a in (self.pos, self.neg) if a.size]
        return float(max(tops)) if tops else float("nan")

    @property
    def min_score(self) -> float:
        """The smallest score; ``nan`` when empty."""
        lows = [a[0] for a in (self.pos, self.neg) if a.size]
        return float(min(lows)) if lows else float("nan")

    def metrics(self) -> RankMetrics:
        """AP, AUROC and best Dice (see the module doc), exact."""
        if not self.pos.size:
            return rank_metrics(np.empty(0), *([np.empty(0)] * 4), 0, self.negatives)
        values, first = np.unique(self.pos, return_index=True)  # ascending
        c = np.diff(np.append(first, self.pos.size))
        tp_asc = self.pos.size - first  # positives >= value
        lo = np.searchsorted(self.neg, values, side="left")
        hi = np.searchsorted(self.neg, values, side="right")
        fp_asc = self.neg.size - lo
        return rank_metrics(
            values[::-1], c[::-1], tp_asc[::-1], fp_asc[::-1], (hi - lo)[::-1],
            self.positives, self.negatives,
        )

    def counts_at(self, thresholds: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, fp)``: positives and negatives with ``score >= t`` for each threshold."""
        t = np.asarray(thresholds, dtype=np.float64)
        tp = self.pos.size - np.searchsorted(self.pos, t, side="left")
        fp = self.neg.size - np.searchsorted(self.neg, t, side="left")
        return tp, fp

    def dice_at(self, thresholds: np.ndarray | float) -> np.ndarray | float:
        """Dice of ``score >= t`` for each threshold (voxel-wise, no component filtering);
        0 where nothing is predicted and there are positives, ``nan`` without positives."""
        tp, fp = self.counts_at(thresholds)
        return dice_from_counts(tp, fp, self.positives)


def dice_from_counts(
    tp: np.ndarray, fp: np.ndarray, positives: int
) -> np.ndarray | float:
    """Dice ``2·tp / (tp + fp + P)``; ``nan`` when there are no positives."""
    tp = np.asarray(tp, dtype=np.float64)
    if positives == 0:
        out = np.full(tp.shape, np.nan)
    else:
        out = 2.0 * tp / (tp + np.asarray(fp, dtype=np.float64) + positives)
    return float(out) if out.ndim == 0 else out


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact average precision (= scikit-learn's ``average_precision_score``, ties included)."""
    return ExactScores(scores, labels).metrics().ap


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve (= scikit-learn's ``roc_auc_score``, ties included)."""
    return ExactScores(scores, labels).metrics().auroc


def best_dice(scores: np.ndarray, labels: np.ndarray) -> BestDice:
    """Exact best Dice: ``max 2PR/(P+R)`` over the precision–recall curve (all thresholds)."""
    return ExactScores(scores, labels).metrics().best
