"""Named protocols: post-processing, voxel selection, per-volume and pooled numbers."""

import json

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from adsys.metrics import (
    PROTOCOLS,
    choose_cohort_threshold,
    get_protocol,
    score_subject,
    summarize,
)
from tests.helpers import ellipsoid_brain


def _subject(seed: int, shape=(30, 34, 20)):
    """(image, mask, seg, raw map): a blurred brain, one lesion, a map that sees it."""
    rng = np.random.default_rng(seed)
    mask = ellipsoid_brain(shape, 0.8)
    image = (ndimage.gaussian_filter(rng.random(shape), 1) * 0.5 + 0.3) * mask
    seg = np.zeros(shape, np.uint8)
    c = rng.integers([10, 10, 7], [20, 24, 13])
    seg[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 2 : c[2] + 2] = 1
    seg &= mask
    raw = np.clip(0.1 * rng.random(shape) + 0.3 * seg * rng.random(shape), 0, 1) * mask
    return image.astype(np.float32), mask.astype(np.uint8), seg, raw.astype(np.float32)


def _erode_per_slice(mask, iterations):
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.zeros(mask.shape, bool)
    for z in range(mask.shape[2]):
        out[..., z] = ndimage.binary_erosion(mask[..., z], cross, iterations=iterations)
    return out


def test_behrendt_postprocessing_and_per_volume_metrics():
    image, mask, seg, raw = _subject(0)
    score, pp = score_subject(PROTOCOLS["behrendt"], raw, image, mask, seg,
                              subject_id="s0", split="test")
    want = ndimage.median_filter(raw * _erode_per_slice(mask > 0, 30 // 25), size=5)
    np.testing.assert_allclose(pp, want, atol=1e-7)
    row = score.row
    assert row["ap"] == pytest.approx(average_precision_score(seg.ravel(), pp.ravel()), abs=1e-9)
    assert row["auroc"] == pytest.approx(roc_auc_score(seg.ravel(), pp.ravel()), abs=1e-9)
    assert row["protocol"] == "behrendt" and row["lesion_voxels"] == seg.sum()
    assert "dice" not in row  # no threshold given
    means = [pp[..., z][mask[..., z] > 0].mean() if mask[..., z].any() else 0.0
             for z in range(pp.shape[2])]
    np.testing.assert_allclose(score.slices["mean"], means, rtol=1e-6)
    assert score.histogram.positives + score.histogram.negatives == pp.size


def test_upd_zeroes_background_and_pools_nonempty_slices():
    image, mask, seg, raw = _subject(1)
    raw = raw + 0.05  # the background would score without zeroing
    score, pp = score_subject(PROTOCOLS["upd"], raw, image, mask, seg, subject_id="s1",
                              split="test")
    keep = image > image.min(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(pp, raw * keep)
    nonempty = image.reshape(-1, image.shape[2]).sum(0) > 0
    assert score.histogram.positives + score.histogram.negatives == pp[..., nonempty].size
    assert len(score.slices["mean"]) == nonempty.sum()


def test_disyre_samples_10k_voxels_reproducibly():
    image, mask, seg, raw = _subject(2)
    proto = PROTOCOLS["disyre"]
    a, _ = score_subject(proto, raw, image, mask, seg, subject_id="s2", split="test", seed=3)
    b, _ = score_subject(proto, raw, image, mask, seg, subject_id="s2", split="test", seed=3)
    c, _ = score_subject(proto, raw, image, mask, seg, subject_id="s2", split="test", seed=4)
    assert a.histogram == b.histogram and a.histogram != c.histogram
    assert a.histogram.positives + a.histogram.negatives == 10_000
    assert set(a.slices) == {"mean", "max", "top100"}


def test_disyre_pooled_ap_and_maxdsc_have_their_known_answers():
    """Two cases with closed-form answers over the protocol's own 10k-voxel samples."""
    proto = PROTOCOLS["disyre"]
    subjects = [_subject(s, shape=(40, 40, 12)) for s in (5, 6)]

    def pooled(make_map, image_of):
        scores = [score_subject(proto, make_map(seg), image_of(image), mask, seg,
                                subject_id=f"s{k}", split="test", seed=1)[0]
                  for k, (image, mask, seg, _) in enumerate(subjects)]
        summary = summarize(proto, scores)["pooled"]
        pos = sum(s.histogram.positives for s in scores)
        neg = sum(s.histogram.negatives for s in scores)
        return summary, pos, neg

    # lesion 0.75, brain 0.25, background zeroed: perfect separation at any grid threshold
    # between the two levels → AP 1, MaxDSC 1 (background voxels sampled, scored 0)
    perfect, pos, neg = pooled(lambda seg: np.where(seg > 0, 0.75, 0.25).astype(np.float32),
                               lambda image: image)
    assert pos + neg == 20_000 and pos > 0
    assert perfect["ap"] == pytest.approx(1.0) and perfect["best_dice"] == pytest.approx(1.0)
    # no background, lesion 0.5 below every other voxel's 0.75: the ranking puts all N
    # negatives first → AP = P / (P + N); the best of the 200 thresholds flags everything
    # → MaxDSC = 2P / (2P + N)
    inverted, pos, neg = pooled(lambda seg: np.where(seg > 0, 0.5, 0.75).astype(np.float32),
                                lambda image: np.ones_like(image))
    assert inverted["ap"] == pytest.approx(pos / (pos + neg), rel=1e-6)
    assert inverted["best_dice"] == pytest.approx(2 * pos / (2 * pos + neg), rel=1e-6)


def test_conddiff_soft_ground_truth_and_normalisation():
    image, mask, seg, raw = _subject(3)
    soft = seg * 0.5 + (ndimage.binary_dilation(seg) & ~seg.astype(bool)) * 0.05
    score, pp = score_subject(PROTOCOLS["conddiff"], raw, image, mask, soft, subject_id="s3",
                              split="test")
    assert pp.max() <= 1.0 and pp.min() >= 0.0
    assert score.row["lesion_voxels"] == int((soft >= 0.1).sum()) == int(seg.sum())
    assert 0.0 <= score.row["fpr_at_best"] <= 1.0


def test_threshold_choices_and_dice_at_threshold():
    subjects = [_subject(s) for s in range(4)]
    proto = get_protocol("behrendt")
    val = [score_subject(proto, r, i, m, g, subject_id=f"v{k}", split="val")[0]
           for k, (i, m, g, r) in enumerate(subjects[:2])]
    choice, note = choose_cohort_threshold(proto, val, "val")
    assert choice is not None and "interval" in note and choice.validation_dice > 0
    fixed, _ = choose_cohort_threshold(proto, val, "0.2")
    assert fixed.value == 0.2
    by_fpr, _ = choose_cohort_threshold(proto, val, "val-fpr=0.01")
    assert by_fpr.value > 0
    none, note = choose_cohort_threshold(proto, [], "val")
    assert none is None and "no validation" in note
    image, mask, seg, raw = subjects[3]
    score, _ = score_subject(proto, raw, image, mask, seg, subject_id="t", split="test",
                             threshold=choice.value)
    assert 0.0 <= score.row["dice"] <= 1.0 and score.row["threshold"] == choice.value
    with pytest.raises(ValueError, match="unknown threshold"):
        choose_cohort_threshold(proto, val, "best")


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_summary_names_the_protocol_and_is_strict_json(name):
    proto = get_protocol(name)
    scores = []
    for s in range(3):
        image, mask, seg, raw = _subject(10 + s)
        scores.append(score_subject(proto, raw, image, mask, seg if s else None,
                                    subject_id=f"s{s}", split="test", threshold=0.1)[0])
    summary = summarize(proto, scores)
    json.dumps(summary, allow_nan=False)
    assert summary["protocol"]["name"] == name and summary["subjects_with_lesions"] == 2
    assert set(summary["headline"]) == set(proto.headline)
    assert all(v is not None for v in summary["headline"].values()), summary["headline"]
    pooled_ap = summary["pooled"]["ap"]
    assert 0.0 < pooled_ap <= 1.0


def test_unknown_protocol():
    with pytest.raises(ValueError, match="known"):
        get_protocol("brats")
