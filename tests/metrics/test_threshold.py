"""Validation thresholds: exact max-F1 and cDDPM's interval search."""

import numpy as np
import pytest

from adsys.metrics import ExactScores, ScoreHistogram, choose_threshold, interval_search


def _dice(x, y):
    return 2 * np.sum(x & y) / (x.sum() + y.sum()) if (x.sum() + y.sum()) else 0.0


def find_best_val_reference(x, y, val_range, max_steps=10, step=0, max_val=0.0, max_point=0.0):
    """cDDPM/Zimmerer's recursive interval search, written out as the reference code does."""
    if step == max_steps:
        return max_val, max_point
    if val_range[0] == val_range[1]:
        val_range = (val_range[0], 1)
    bottom, top = val_range
    center = bottom + (top - bottom) * 0.5
    q_bottom = bottom + (top - bottom) * 0.25
    q_top = bottom + (top - bottom) * 0.75
    val_bottom = _dice(x > q_bottom, y)
    val_top = _dice(x > q_top, y)
    if val_bottom > val_top:
        if val_bottom > max_val:
            max_val, max_point = val_bottom, q_bottom
        return find_best_val_reference(x, y, (bottom, center), max_steps, step + 1, max_val,
                                       max_point)
    if val_top > max_val:
        max_val, max_point = val_top, q_top
    return find_best_val_reference(x, y, (center, top), max_steps, step + 1, max_val, max_point)


@pytest.mark.parametrize("seed", range(5))
def test_interval_search_reproduces_find_best_val(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.1
    x = np.clip(rng.normal(0.2, 0.1, 3000) + y * rng.uniform(0, 0.5, 3000), 0, None)
    want_dice, want_q = find_best_val_reference(x, y, (0, float(x.max())))
    got = interval_search(ExactScores(x, y))
    assert got.dice == pytest.approx(want_dice, abs=1e-12)
    assert np.array_equal(x >= got.threshold, x > want_q)  # same voxels, >= convention


def test_exact_search_is_never_worse_than_interval_search():
    rng = np.random.default_rng(7)
    y = rng.random(5000) < 0.05
    x = rng.random(5000) + 0.3 * y
    scores = ExactScores(x, y)
    exact, interval = choose_threshold(scores, "exact"), choose_threshold(scores, "interval")
    assert exact.dice >= interval.dice - 1e-12
    assert exact.dice == pytest.approx(scores.metrics().best.dice)


def test_searches_work_on_histograms():
    rng = np.random.default_rng(8)
    y = rng.random(20_000) < 0.05
    x = np.clip(rng.random(20_000) * 0.6 + 0.35 * y, 0, 1)
    h = ScoreHistogram().update(x, y)
    assert choose_threshold(h, "exact").dice == pytest.approx(
        choose_threshold(ExactScores(x, y), "exact").dice, abs=1e-3)
    assert choose_threshold(h, "interval").dice == pytest.approx(
        interval_search(ExactScores(x, y)).dice, abs=1e-3)
    with pytest.raises(ValueError, match="unknown threshold search"):
        choose_threshold(h, "grid")
