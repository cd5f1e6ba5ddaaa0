"""Post-processing against SciPy / scikit-image references (the reference codes' calls)."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops

from adsys.scoring import (
    PostprocessConfig,
    erode_mask,
    median_filter,
    postprocess,
    remove_small_components,
    zero_background,
)
from tests.helpers import ellipsoid_brain


def test_slice_erosion_equals_2d_erosion_of_every_axial_slice():
    mask = ellipsoid_brain((96, 40, 12), 0.9)
    cross = ndimage.generate_binary_structure(2, 1)
    want = np.stack([ndimage.binary_erosion(mask[..., z], cross, iterations=96 // 25)
                     for z in range(12)], axis=-1)
    np.testing.assert_array_equal(erode_mask(mask, "slice2d"), want)
    np.testing.assert_array_equal(erode_mask(mask, "slice2d", 0), mask)


def test_3d_erosion_equals_scipy_with_the_6_neighbour_cross():
    mask = ellipsoid_brain((60, 50, 40), 0.9)
    want = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), iterations=2)
    np.testing.assert_array_equal(erode_mask(mask, "3d"), want)


def test_median_filter_equals_scipy_default():
    data = np.random.default_rng(0).random((15, 13, 11)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(data), ndimage.median_filter(data, size=5))


def _skimage_reference(binary, max_size):
    out = binary.copy()
    lab = label(binary, connectivity=binary.ndim)
    for region in regionprops(lab):
        if region.area_filled <= max_size:
            out[lab == region.label] = False
    return out


@pytest.mark.parametrize("seed", range(3))
def test_component_removal_equals_skimage_filled_area(seed):
    binary = np.random.default_rng(seed).random((20, 18, 16)) < 0.08
    np.testing.assert_array_equal(remove_small_components(binary, 7),
                                  _skimage_reference(binary, 7))
    binary2d = binary[..., 0] | binary[..., 1]
    np.testing.assert_array_equal(remove_small_components(binary2d, 3),
                                  _skimage_reference(binary2d, 3))


def test_component_removal_counts_enclosed_holes():
    shell = np.zeros((7, 7, 7), bool)
    shell[2:5, 2:5, 2:5] = True
    shell[3, 3, 3] = False  # 26 voxels around one hole: filled size 27
    for max_size in (26, 27):
        np.testing.assert_array_equal(remove_small_components(shell, max_size),
                                      _skimage_reference(shell, max_size))
    assert remove_small_components(shell, 26).any() and not remove_small_components(shell, 27).any()


def test_zero_background_rules():
    image = np.zeros((4, 4, 2), np.float32)
    image[1:3, 1:3, 0] = 0.5
    image[..., 1] = 0.2
    image[0, 0, 1] = 0.6
    data = np.ones_like(image)
    above = zero_background(data, image, "above_min_slice")
    assert above[..., 0].sum() == 4 and above[..., 1].sum() == 1  # per-slice minimum
    assert zero_background(data, image, "nonzero").sum() == 4 + 16


def test_postprocess_composes_in_order():
    rng = np.random.default_rng(1)
    mask = ellipsoid_brain((30, 30, 10), 0.9)
    image = rng.random(mask.shape).astype(np.float32) * mask
    raw = rng.random(mask.shape).astype(np.float32) * 3
    cfg = PostprocessConfig(normalize_max=True, erosion="3d", median_size=5, clip=True)
    want = np.clip(ndimage.median_filter(
        np.clip(raw / raw.max(), 0, 1) * erode_mask(mask, "3d"), size=5), 0, 1)
    np.testing.assert_allclose(postprocess(raw, image, mask, cfg), want)
    np.testing.assert_array_equal(postprocess(raw, image, mask, PostprocessConfig()), raw)
