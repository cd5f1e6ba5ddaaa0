"""Exact AP / AUROC / best Dice against scikit-learn and brute force, ties included."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from adsys.metrics import ExactScores, average_precision, best_dice, roc_auc


def _cases():
    rng = np.random.default_rng(0)
    for n, prevalence in [(7, 0.4), (200, 0.1), (5000, 0.02), (20000, 0.3)]:
        labels = rng.random(n) < prevalence
        labels[0] = True
        labels[1] = False
        yield "random", rng.normal(size=n) + 1.5 * labels, labels
        yield "ties", np.round(rng.random(n) + 0.4 * labels, 1), labels
        yield "integers", rng.integers(0, 4, n).astype(np.float32) + labels, labels
    lab = np.array([0, 1, 0, 1, 1, 0], bool)
    yield "all-equal", np.full(6, 0.5), lab
    yield "perfect", lab.astype(float), lab
    yield "inverted", 1.0 - lab, lab


@pytest.mark.parametrize("kind,scores,labels", list(_cases()))
def test_ap_and_auroc_equal_sklearn(kind, scores, labels):
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-9)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def _brute_force_best_dice(scores, labels):
    best, best_t = 0.0, None
    for t in np.unique(scores):
        pred = scores >= t
        d = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        if d > best:
            best, best_t = d, t
    return best, best_t


@pytest.mark.parametrize("kind,scores,labels", list(_cases()))
def test_best_dice_equals_brute_force_over_all_thresholds(kind, scores, labels):
    got = best_dice(scores, labels)
    want, _ = _brute_force_best_dice(scores, labels)
    assert got.dice == pytest.approx(want, abs=1e-12)
    pred = scores >= got.threshold  # the returned threshold reaches it
    assert 2 * np.sum(pred & labels) / (pred.sum() + labels.sum()) == pytest.approx(want)
    assert got.fpr == pytest.approx(np.sum(pred & ~labels) / np.sum(~labels))


def test_shapes_and_dtypes_do_not_matter():
    rng = np.random.default_rng(1)
    scores = rng.random((6, 7, 5)).astype(np.float32)
    seg = (rng.random((6, 7, 5)) < 0.2).astype(np.uint8)
    m = ExactScores(scores, seg).metrics()
    assert m.ap == pytest.approx(average_precision_score(seg.ravel(), scores.ravel()), abs=1e-9)
    assert (m.positives, m.negatives) == (int(seg.sum()), int(seg.size - seg.sum()))


def test_dice_at_thresholds_matches_direct_count():
    rng = np.random.default_rng(2)
    scores, labels = np.round(rng.random(500), 2), rng.random(500) < 0.3
    s = ExactScores(scores, labels)
    for t in (0.0, 0.25, 0.5, 0.99, 2.0):
        pred = scores >= t
        want = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        assert s.dice_at(t) == pytest.approx(want)
    assert s.dice_at(np.array([0.1, 0.9])).shape == (2,)


def test_undefined_cases_are_nan():
    no_pos = ExactScores(np.arange(5.0), np.zeros(5)).metrics()
    assert np.isnan(no_pos.ap) and np.isnan(no_pos.auroc) and np.isnan(no_pos.best.dice)
    no_neg = ExactScores(np.arange(5.0), np.ones(5)).metrics()
    assert no_neg.ap == 1.0 and np.isnan(no_neg.auroc) and no_neg.best.dice == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in size"):
        ExactScores(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        ExactScores(np.array([0.1, np.nan]), np.array([0, 1]))
