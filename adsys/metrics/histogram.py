"""A mergeable histogram of scores for cohort-scale pooled metrics.

Pooling every voxel of a cohort (the UPD and DISYRE protocols) does not fit in memory, and
Ray workers see disjoint subjects. :class:`ScoreHistogram` keeps, per score bin, the number
of positive and negative voxels (2¹⁶ bins over a fixed range by default). Histograms of
disjoint voxel sets merge by adding counts, so ``merge(a, b)`` equals the histogram of
``a ∪ b`` exactly, in any order, on any worker.

Metrics read off the histogram are the exact metrics of :mod:`adsys.metrics.ranking` applied
to *binned* scores: each score is represented by its bin's lower edge. With 2¹⁶ bins over
[0, 1] the bin width is 1.5·10⁻⁵, and AP / AUROC / best Dice agree with the exact values to
well within 10⁻³ on realistic maps (tested). Scores outside ``[lo, hi]`` are counted in the
first / last bin (``clipped`` says how many were).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adsys.metrics.ranking import RankMetrics, dice_from_counts, rank_metrics

__all__ = ["DEFAULT_BINS", "ScoreHistogram"]

DEFAULT_BINS = 1 << 16


class ScoreHistogram:
    """Positive / negative voxel counts per score bin over ``[lo, hi]``.

    Args:
        bins: number of equal-width bins (default 2¹⁶).
        lo, hi: the score range; fix it before pooling (e.g. (0, 1) for L1 residuals of
            [0, 1] images, (0, 2) for 1 − SSIM): histograms merge only with equal ranges.

    Example::

        h = ScoreHistogram()
        for scores, labels in subjects:
            h.update(scores, labels)
        total = h_worker_a + h_worker_b
        total.metrics().ap
    """

    def __init__(self, bins: int = DEFAULT_BINS, lo: float = 0.0, hi: float = 1.0) -> None:
        if bins < 2 or not hi > lo:
            raise ValueError(f"need bins >= 2 and hi > lo, got bins={bins}, [{lo}, {hi}]")
        self.bins, self.lo, self.hi = int(bins), float(lo), float(hi)
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)
        self.vmin, self.vmax = float("inf"), float("-inf")
        self.clipped = 0

    # --- accumulation -------------------------------------------------------------------

    @property
    def width(self) -> float:
        """Bin width in score units."""
        return (self.hi - self.lo) / self.bins

    @property
    def edges(self) -> np.ndarray:
        """Lower edge of each bin, float64 (the value a binned score takes)."""
        return self.lo + np.arange(self.bins, dtype=np.float64) * self.width

    def bin_index(self, scores: np.ndarray) -> np.ndarray:
        """Bin of each score (int64), clipped into ``[0, bins − 1]``."""
        scaled = np.asarray(scores, dtype=np.float64) - self.lo
        scaled *= self.bins / (self.hi - self.lo)
        np.floor(scaled, out=scaled)
        np.clip(scaled, 0, self.bins - 1, out=scaled)
        return scaled.astype(np.int64)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> ScoreHistogram:
        """Add voxels: ``scores`` (any shape) and ``labels`` (same size, positive when > 0)."""
        scores = np.asarray(scores).ravel()
        labels = np.asarray(labels).ravel()
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in size")
        if not scores.size:
            return self
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores contain NaN or infinite values")
        lo_v, hi_v = float(scores.min()), float(scores.max())
        self.vmin, self.vmax = min(self.vmin, lo_v), max(self.vmax, hi_v)
        if lo_v < self.lo or hi_v > self.hi:
            self.clipped += int(np.count_nonzero((scores < self.lo) | (scores > self.hi)))
        idx = self.bin_index(scores)
        idx += (labels > 0).astype(np.int64) * self.bins
        counts = np.bincount(idx, minlength=2 * self.bins)
        self.neg += counts[: self.bins]
        self.pos += counts[self.bins :]
        return self

    def _check_compatible(self, other: ScoreHistogram) -> None:
        if (self.bins, self.lo, self.hi) != (other.bins, other.lo, other.hi):
            raise ValueError(
                f"cannot merge histograms with different bins/ranges: "
                f"{(self.bins, self.lo, self.hi)} vs {(other.bins, other.lo, other.hi)}"
            )

    def __iadd__(self, other: ScoreHistogram) -> ScoreHistogram:
        self._check_compatible(other)
        self.pos += other.pos
        self.neg += other.neg
        self.vmin, self.vmax = min(self.vmin, other.vmin), max(self.vmax, other.vmax)
        self.clipped += other.clipped
        return self

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        return self.copy().__iadd__(other)

    def copy(self) -> ScoreHistogram:
        out = ScoreHistogram(self.bins, self.lo, self.hi)
        out += self
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ScoreHistogram)
            and (self.bins, self.lo, self.hi, self.clipped) == (other.bins, other.lo, other.hi,
                                                                other.clipped)
            and np.array_equal(self.pos, other.pos)
            and np.array_equal(self.neg, other.neg)
            and (self.vmin, self.vmax) == (other.vmin, other.vmax)
        )

    __hash__ = None  # mutable

    @property
    def positives(self) -> int:
        return int(self.pos.sum())

    @property
    def negatives(self) -> int:
        return int(self.neg.sum())

    @property
    def min_score(self) -> float:
        """The smallest score seen (exact, not binned); ``nan`` when empty."""
        return self.vmin if np.isfinite(self.vmin) else float("nan")

    @property
    def max_score(self) -> float:
        """The largest score seen (exact, not binned); ``nan`` when empty."""
        return self.vmax if np.isfinite(self.vmax) else float("nan")

    # --- metrics ------------------------------------------------------------------------

    def metrics(self) -> RankMetrics:
        """AP, AUROC and best Dice of the binned scores (thresholds are bin lower edges)."""
        bins = np.flatnonzero(self.pos)[::-1]  # candidate bins, descending score
        tp = np.cumsum(self.pos[::-1])[::-1]  # positives in bins >= b
        fp = np.cumsum(self.neg[::-1])[::-1]
        return rank_metrics(
            self.edges[bins], self.pos[bins], tp[bins], fp[bins], self.neg[bins],
            self.positives, self.negatives,
        )

    def counts_at(self, thresholds: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, fp)`` of ``binned score >= t`` for each threshold ``t``."""
        t = np.asarray(thresholds, dtype=np.float64)
        first = np.ceil((t - self.lo) / self.width - 1e-9).astype(np.int64)
        first = np.clip(first, 0, self.bins)
        tp = np.append(np.cumsum(self.pos[::-1])[::-1], 0)[first]
        fp = np.append(np.cumsum(self.neg[::-1])[::-1], 0)[first]
        return tp, fp

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(precision, recall) of ``binned score >= t`` at every occupied bin's lower edge,
        from the highest score down (recall rises to 1); empty without positives."""
        occupied = np.flatnonzero(self.pos + self.neg)[::-1]
        if not self.positives or not occupied.size:
            return np.zeros(0), np.zeros(0)
        tp = np.cumsum(self.pos[::-1])[::-1][occupied]
        fp = np.cumsum(self.neg[::-1])[::-1][occupied]
        return tp / (tp + fp), tp / self.positives

    def dice_at(self, thresholds: np.ndarray | float) -> np.ndarray | float:
        """Voxel-wise Dice of ``binned score >= t`` for each threshold."""
        tp, fp = self.counts_at(thresholds)
        return dice_from_counts(tp, fp, self.positives)

    def threshold_at_fpr(self, fpr: float) -> float:
        """The lowest bin edge whose false-positive rate (negatives ``>=`` it) is ``<= fpr``."""
        if not 0.0 <= fpr <= 1.0:
            raise ValueError(f"fpr must be in [0, 1], got {fpr}")
        n = self.negatives
        if n == 0:
            raise ValueError("no negative voxels to set a false-positive rate on")
        rates = np.cumsum(self.neg[::-1])[::-1] / n  # FPR of threshold = edge of bin b
        ok = np.flatnonzero(rates <= fpr)
        return float(self.edges[ok[0]]) if ok.size else self.hi

    # --- serialisation ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Arrays and scalars for ``np.savez_compressed`` (no pickle needed to read back)."""
        return {
            "hist_pos": self.pos,
            "hist_neg": self.neg,
            "hist_range": np.array([self.lo, self.hi, self.vmin, self.vmax]),
            "hist_clipped": np.array(self.clipped, dtype=np.int64),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScoreHistogram:
        lo, hi, vmin, vmax = (float(v) for v in state["hist_range"])
        out = cls(len(state["hist_pos"]), lo, hi)
        out.pos[:] = state["hist_pos"]
        out.neg[:] = state["hist_neg"]
        out.vmin, out.vmax = vmin, vmax
        out.clipped = int(state["hist_clipped"])
        return out
