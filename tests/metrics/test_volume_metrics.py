"""Dice / FPR at a threshold, slice scores, reconstruction metrics against references."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from adsys.metrics import (
    dice_score,
    histogram_kld,
    metrics_at_threshold,
    reconstruction_metrics,
    slice_labels,
    slice_scores,
)


def _cddpm_cc_filter(binary):
    """cDDPM's filter: skimage label(connectivity=3), drop regions with filled_area <= 7."""
    out = binary.copy()
    lab = label(binary, connectivity=3)
    for region in regionprops(lab):
        if region.area_filled <= 7:
            out[lab == region.label] = False
    return out


def test_dice_and_fpr_at_threshold_after_component_filtering():
    rng = np.random.default_rng(0)
    scores = ndimage.gaussian_filter(rng.random((24, 20, 16)), 1.0)
    gt = scores > np.quantile(scores, 0.93)
    noisy = scores + 0.02 * rng.standard_normal(scores.shape)
    t = float(np.quantile(noisy, 0.9))
    got = metrics_at_threshold(noisy, gt, t, cc_max_size=7)
    pred = _cddpm_cc_filter(noisy >= t)
    assert got.dice == pytest.approx(2 * np.sum(pred & gt) / (pred.sum() + gt.sum()))
    assert got.fpr == pytest.approx(np.sum(pred & ~gt) / np.sum(~gt))
    assert got.tpr == pytest.approx(np.sum(pred & gt) / gt.sum())
    assert got.predicted == pred.sum()
    unfiltered = metrics_at_threshold(noisy, gt, t, cc_max_size=None)
    assert unfiltered.predicted == np.sum(noisy >= t) >= got.predicted


def test_dice_score_edge_cases():
    assert np.isnan(dice_score(np.zeros(4), np.zeros(4)))
    assert dice_score(np.ones(4), np.zeros(4)) == 0.0
    assert dice_score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == pytest.approx(2 / 3)


def test_slice_scores_and_labels():
    rng = np.random.default_rng(1)
    m = rng.random((10, 12, 6))
    mask = rng.random((10, 12, 6)) < 0.5
    mask[..., 0] = False
    gt = np.zeros(m.shape, bool)
    gt[3, 4, 2] = True
    for z in range(6):
        sl = m[..., z]
        assert slice_scores(m, "mean")[z] == pytest.approx(sl.mean())
        assert slice_scores(m, "max")[z] == pytest.approx(sl.max())
        assert slice_scores(m, "top100")[z] == pytest.approx(np.sort(sl.ravel())[-100:].mean())
        want = sl[mask[..., z]].mean() if mask[..., z].any() else 0.0
        assert slice_scores(m, "mean", mask)[z] == pytest.approx(want)
    assert slice_labels(gt).tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError, match="mean"):
        slice_scores(m, "max", mask)


def test_reconstruction_metrics_against_skimage():
    rng = np.random.default_rng(2)
    x = ndimage.gaussian_filter(rng.random((20, 22, 8)), 1.5)
    x = (x - x.min()) / (x.max() - x.min())
    rec = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    brain = np.ones(x.shape, bool)
    gt = np.zeros(x.shape, bool)
    gt[5:9, 5:9, 2:5] = True
    got = reconstruction_metrics(x, rec, brain, gt)
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(x, rec, data_range=1.0))
    ssim = np.mean([structural_similarity(x[..., z], rec[..., z], data_range=1.0,
                                          gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, full=True)[1].mean()
                    for z in range(x.shape[2])])
    assert got["ssim"] == pytest.approx(ssim, abs=1e-6)
    err = np.abs(x - rec)
    assert got["l1_unhealthy"] == pytest.approx(err[gt].mean())
    assert got["l1_healthy"] == pytest.approx(err[~gt].mean())
    assert got["l1_ratio"] == pytest.approx(err[gt].mean() / err[~gt].mean())
    assert got["kld"] == pytest.approx(histogram_kld(x[~gt], rec[~gt]))


def test_histogram_kld_is_the_papers_entropy_difference():
    rng = np.random.default_rng(3)
    a, b = rng.random(10_000), rng.random(10_000) ** 2

    def neg_sum_plogp(v):
        counts, edges = np.histogram(v, bins=500, range=(0, 1))
        p = counts / (counts.sum() * (edges[1] - edges[0]))
        p = p[p > 0]
        return -(p * np.log(p)).sum()

    assert histogram_kld(a, b) == pytest.approx(neg_sum_plogp(a) - neg_sum_plogp(b))
    assert histogram_kld(a, a) == 0.0
