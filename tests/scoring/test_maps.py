"""Anomaly maps against scikit-image / SciPy / NumPy references."""

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from adsys.scoring import l1_residual, shift_tolerant_residual, ssim_anomaly_map, ssim_map


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.0)
    x = (x - x.min()) / (x.max() - x.min())
    rec = np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1)
    return x, rec


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


def _skimage_ssim(x, rec, data_range):
    return structural_similarity(x, rec, data_range=data_range, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, full=True)[1]


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_2d_equals_skimage(data_range):
    x, rec = _pair((37, 29))
    got = ssim_map(_t(x), _t(rec), spatial_dims=2, data_range=data_range)[0, 0].numpy()
    np.testing.assert_allclose(got, _skimage_ssim(x, rec, data_range), atol=1e-10)
    anomaly = ssim_anomaly_map(_t(x), _t(rec), data_range=data_range)[0, 0].numpy()
    np.testing.assert_allclose(anomaly, 1 - got, atol=1e-12)


def _scipy_ssim(x, rec):
    """SSIM as skimage computes it (which refuses images smaller than the window)."""
    def blur(a):
        return ndimage.gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(rec)
    vx, vy, cov = blur(x * x) - mx**2, blur(rec * rec) - my**2, blur(x * rec) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_3d_equals_skimage_and_small_sizes_reflect_as_scipy():
    x, rec = _pair((14, 12, 11), seed=1)
    got = ssim_map(_t(x), _t(rec), spatial_dims=3)[0, 0].numpy()
    np.testing.assert_allclose(got, _skimage_ssim(x, rec, 1.0), atol=1e-10)
    small_x, small_rec = _pair((4, 3), seed=2)  # narrower than the window's radius
    got = ssim_map(_t(small_x), _t(small_rec))[0, 0].numpy()
    np.testing.assert_allclose(got, _scipy_ssim(small_x, small_rec), atol=1e-10)


def test_ssim_zero_padding_is_a_zero_padded_gaussian_convolution():
    x, rec = _pair((20, 18), seed=3)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(a):
        a = ndimage.convolve1d(a, g, axis=0, mode="constant")
        return ndimage.convolve1d(a, g, axis=1, mode="constant")

    mx, my = blur(x), blur(rec)
    vx, vy, cov = blur(x * x) - mx**2, blur(rec * rec) - my**2, blur(x * rec) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    want = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    got = ssim_map(_t(x), _t(rec), data_range=255.0, padding="zeros")[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-10)


def _shift_reference(x, rec, k, mode):
    best = np.full(x.shape, np.inf)
    for s in itertools.product(range(-k, k + 1), repeat=x.ndim):
        if mode == "circular":
            shifted = np.roll(rec, s, axis=tuple(range(x.ndim)))
        else:
            padded = np.pad(rec, k, mode="edge")
            shifted = padded[
                tuple(slice(k - d, k - d + n) for d, n in zip(s, x.shape, strict=True))
            ]
        best = np.minimum(best, np.abs(x - shifted))
    return best


@pytest.mark.parametrize("mode", ["edge", "circular"])
@pytest.mark.parametrize("shape,k", [((9, 8, 7), 2), ((12, 10), 1), ((6, 5, 4), 0)])
def test_shift_tolerant_residual_equals_numpy(shape, k, mode):
    x, rec = _pair(shape, seed=4)
    got = shift_tolerant_residual(_t(x), _t(rec), k=k, spatial_dims=len(shape), padding=mode)
    np.testing.assert_allclose(got[0, 0].numpy(), _shift_reference(x, rec, k, mode), atol=1e-12)


def test_l1_and_argument_checks():
    x, rec = _pair((5, 6), seed=5)
    np.testing.assert_allclose(l1_residual(_t(x), _t(rec))[0, 0].numpy(), np.abs(x - rec))
    with pytest.raises(ValueError, match="differ"):
        l1_residual(_t(x), _t(rec[:4]))
    with pytest.raises(ValueError, match="spatial dims"):
        ssim_map(_t(x), _t(rec), spatial_dims=3)
    with pytest.raises(ValueError, match="padding"):
        shift_tolerant_residual(_t(x), _t(rec), spatial_dims=2, padding="reflect")
