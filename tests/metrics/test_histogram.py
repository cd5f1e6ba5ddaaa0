"""The mergeable histogram: close to exact metrics, and merging equals pooling."""

import numpy as np
import pytest

from adsys.metrics import ExactScores, ScoreHistogram


def _map_like(seed: int, n: int = 200_000):
    """Anomaly-map-like scores in [0, 1]: many zeros (background), lesions score higher."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.03
    scores = np.clip(rng.gamma(2.0, 0.05, n) + labels * rng.uniform(0.0, 0.4, n), 0, 1)
    scores[rng.random(n) < 0.4] = 0.0  # background voxels, heavily tied
    return scores.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_metrics_within_1e3_of_exact(seed):
    scores, labels = _map_like(seed)
    exact = ExactScores(scores, labels).metrics()
    hist = ScoreHistogram().update(scores, labels).metrics()
    assert hist.ap == pytest.approx(exact.ap, abs=1e-3)
    assert hist.auroc == pytest.approx(exact.auroc, abs=1e-3)
    assert hist.best.dice == pytest.approx(exact.best.dice, abs=1e-3)
    assert (hist.positives, hist.negatives) == (exact.positives, exact.negatives)


def test_histogram_of_bin_edge_scores_is_exact():
    rng = np.random.default_rng(3)
    h = ScoreHistogram(bins=256)
    scores = rng.integers(0, 256, 10_000) / 256.0  # every score is a bin edge
    labels = rng.random(10_000) < 0.2
    got, want = h.update(scores, labels).metrics(), ExactScores(scores, labels).metrics()
    assert got.ap == pytest.approx(want.ap, abs=1e-12)
    assert got.auroc == pytest.approx(want.auroc, abs=1e-12)
    assert got.best.dice == pytest.approx(want.best.dice, abs=1e-12)
    assert got.best.threshold == want.best.threshold


def test_merge_equals_accumulating_the_union():
    scores, labels = _map_like(4, 50_000)
    rng = np.random.default_rng(5)
    part = rng.integers(0, 3, scores.size)
    pieces = [ScoreHistogram().update(scores[part == k], labels[part == k]) for k in range(3)]
    union = ScoreHistogram().update(scores, labels)
    assert pieces[0] + pieces[1] + pieces[2] == union
    assert pieces[2] + (pieces[1] + pieces[0]) == union  # any order
    acc = ScoreHistogram()
    for p in pieces:
        acc += p
    assert acc == union
    assert (pieces[0] + pieces[1]).metrics() == ScoreHistogram().update(
        scores[part < 2], labels[part < 2]).metrics()


def test_state_round_trip_and_clipping():
    h = ScoreHistogram(bins=64, lo=0.0, hi=2.0).update(np.array([-1.0, 0.5, 3.0]),
                                                       np.array([0, 1, 1]))
    assert h.clipped == 2 and h.vmin == -1.0 and h.vmax == 3.0
    assert ScoreHistogram.from_state(h.state_dict()) == h
    with pytest.raises(ValueError, match="different bins"):
        h + ScoreHistogram(bins=64)


def test_dice_at_and_threshold_at_fpr():
    scores, labels = _map_like(6, 20_000)
    h = ScoreHistogram().update(scores, labels)
    exact = ExactScores(scores, labels)
    for t in (0.1, 0.3, 0.5):
        assert h.dice_at(t) == pytest.approx(exact.dice_at(t), abs=2e-3)
    t = h.threshold_at_fpr(0.05)
    fpr = np.mean(scores[~labels] >= t)
    assert fpr <= 0.05 + 1e-12
    assert np.mean(scores[~labels] >= t - h.width) > 0.05  # the lowest such edge
