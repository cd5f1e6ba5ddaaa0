"""Choosing a binarisation threshold on a validation pool.

Two searches over any score set that can count ``tp`` / ``fp`` at a threshold
(:class:`~adsys.metrics.ranking.ExactScores` or
:class:`~adsys.metrics.histogram.ScoreHistogram`):

* ``exact`` (default): the threshold of maximal F1 (= Dice) over the pool, over *all*
  thresholds (:attr:`RankMetrics.best`).
* ``interval``: cDDPM's ``find_best_val`` (Zimmerer's interval search, in cDDPM/pDDPM's
  ``utils_eval``): start from ``[0, max score]``; at each of ``steps`` (10) steps evaluate Dice
  of ``score > q`` at the interval's 25 % and 75 % points, keep the half around the better
  one and remember the best value seen. It assumes Dice is unimodal in the threshold and is
  not exhaustive; it is here to reproduce cDDPM's numbers.

Thresholds are returned in this package's convention, *positive when* ``score >= t``; the
interval search's strict ``score > q`` is returned as ``t = nextafter(q, +inf)``, which selects
exactly the same voxels for float32 / float64 scores.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from adsys.metrics.ranking import BestDice, RankMetrics, dice_from_counts

__all__ = ["ThresholdSearch", "choose_threshold", "interval_search"]

ThresholdSearch = Literal["exact", "interval"]


class CountingScores(Protocol):
    """What a threshold search needs from a score set."""

    @property
    def positives(self) -> int: ...

    @property
    def negatives(self) -> int: ...

    @property
    def max_score(self) -> float: ...

    def counts_at(self, thresholds: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]: ...

    def metrics(self) -> RankMetrics: ...


def _strict(q: float) -> float:
    """The ``>=`` threshold equivalent to ``score > q``."""
    return float(np.nextafter(q, np.inf))


def interval_search(scores: CountingScores, steps: int = 10) -> BestDice:
    """cDDPM's 10-step interval search for the Dice-maximising threshold (see module doc).

    Returns the best Dice seen, its threshold (``>=`` convention) and the FPR there; with no
    positives, all ``nan``.
    """
    p, n = scores.positives, scores.negatives
    nan = float("nan")
    if p == 0:
        return BestDice(nan, nan, nan)
    bottom, top = 0.0, float(scores.max_score)
    best_dice, best_t = 0.0, _strict(0.0)
    for _ in range(steps):
        if bottom == top:  # as find_best_val: a degenerate range widens to [bottom, 1]
            top = 1.0
        span = top - bottom
        q_lo, q_hi = bottom + 0.25 * span, bottom + 0.75 * span
        tp, fp = scores.counts_at(np.array([_strict(q_lo), _strict(q_hi)]))
        d_lo, d_hi = dice_from_counts(tp, fp, p)
        if d_lo > d_hi:
            if d_lo > best_dice:
                best_dice, best_t = float(d_lo), _strict(q_lo)
            top = bottom + 0.5 * span
        else:
            if d_hi > best_dice:
                best_dice, best_t = float(d_hi), _strict(q_hi)
            bottom = bottom + 0.5 * span
    _, fp = scores.counts_at(best_t)
    return BestDice(best_dice, best_t, float(fp) / n if n else nan)


def choose_threshold(scores: CountingScores, search: ThresholdSearch = "exact") -> BestDice:
    """The Dice-maximising threshold of a pooled validation set (``exact`` or ``interval``)."""
    if search == "exact":
        return scores.metrics().best
    if search == "interval":
        return interval_search(scores)
    raise ValueError(f"unknown threshold search {search!r}; use 'exact' or 'interval'")
