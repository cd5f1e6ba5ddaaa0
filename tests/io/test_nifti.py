import gzip

import nibabel as nib
import numpy as np
import pytest

from adsys.errors import (
    AffineError,
    DimensionError,
    GeometryMismatchError,
    NonFiniteError,
    VolumeReadError,
)
from adsys.io import load_label, load_volume, save_volume
from tests.helpers import brain_volume, lps_affine, write_nifti


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_data_and_affine(tmp_path, suffix):
    image, _ = brain_volume()
    affine = np.array([[0.9, 0.1, 0, -40], [0, 1.1, 0.05, -60], [0, 0, 1.2, -20], [0, 0, 0, 1]])
    path = save_volume(tmp_path / f"a{suffix}", image, affine)
    vol = load_volume(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    # other readers see it too: the sform holds it exactly; the qform (rigid + zooms only)
    # cannot hold this sheared affine and is switched off rather than left approximate
    img = nib.load(str(path))
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 0
    rigid = save_volume(tmp_path / f"r{suffix}", image, lps_affine(image.shape))
    np.testing.assert_allclose(nib.load(str(rigid)).get_qform(), lps_affine(image.shape))
    assert not list(tmp_path.glob(".tmp-*")), "atomic write left a temporary file"


def test_lps_input_is_canonicalised(tmp_path):
    image, _ = brain_volume()
    affine = lps_affine(image.shape)
    vol = load_volume(write_nifti(tmp_path / "lps.nii.gz", image, affine))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(vol.data, image[::-1, ::-1, :])
    # every voxel keeps its world position: compare world coordinates of one voxel
    ijk_src = np.array([3, 5, 7, 1.0])
    world = affine @ ijk_src
    ijk_can = np.linalg.inv(vol.affine) @ world
    assert vol.data[tuple(np.rint(ijk_can[:3]).astype(int))] == image[3, 5, 7]
    assert vol.source.shape == image.shape
    np.testing.assert_allclose(vol.source.affine, affine)


def test_mgz_is_read(tmp_path):
    image, _ = brain_volume()
    path = tmp_path / "a.mgz"
    nib.save(nib.MGHImage(image, np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
    np.testing.assert_array_equal(load_volume(path).data, image)


def test_4d_with_one_volume_is_squeezed(tmp_path):
    image, _ = brain_volume()
    vol = load_volume(write_nifti(tmp_path / "one.nii.gz", image[..., None], np.eye(4)))
    assert vol.data.shape == image.shape


def test_real_4d_is_an_error_naming_the_file(tmp_path):
    image, _ = brain_volume()
    path = write_nifti(tmp_path / "series.nii.gz", np.stack([image, image], -1), np.eye(4))
    with pytest.raises(DimensionError, match="series.nii.gz.*4D"):
        load_volume(path)


def test_2d_is_an_error(tmp_path):
    path = write_nifti(tmp_path / "flat.nii", np.ones((8, 9)), np.eye(4))
    with pytest.raises(DimensionError, match="flat.nii"):
        load_volume(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    image, _ = brain_volume()
    good = save_volume(tmp_path / "good.nii.gz", image, np.eye(4))
    blob = good.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VolumeReadError, match="truncated.nii.gz.*cannot be read"):
        load_volume(bad)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(VolumeReadError, match="garbage.nii.gz"):
        load_volume(garbage)


def test_missing_file(tmp_path):
    with pytest.raises(VolumeReadError, match="nowhere.nii.gz: file not found"):
        load_volume(tmp_path / "nowhere.nii.gz")


def test_non_finite_voxels(tmp_path):
    image, _ = brain_volume()
    image[2, 3, 4] = np.nan
    image[5, 6, 7] = np.inf
    with pytest.raises(NonFiniteError, match="nan.nii.gz: 2 voxel"):
        load_volume(write_nifti(tmp_path / "nan.nii.gz", image, np.eye(4)))


def test_singular_affine(tmp_path):
    image, _ = brain_volume()
    img = nib.Nifti1Image(image, np.eye(4))
    singular = np.diag([1.0, 0.0, 1.0, 1.0])
    img.set_sform(singular, code=1)
    img.set_qform(None, code=0)
    path = tmp_path / "singular.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(AffineError, match="singular.nii.gz.*singular"):
        load_volume(path)


def test_mask_shape_mismatch_names_both_files(tmp_path):
    image, mask = brain_volume()
    vol = load_volume(write_nifti(tmp_path / "img.nii.gz", image, np.eye(4)))
    path = write_nifti(tmp_path / "m.nii.gz", mask[:-1], np.eye(4), np.uint8)
    with pytest.raises(GeometryMismatchError, match=r"m.nii.gz: this mask .*img.nii.gz"):
        load_label(path, vol)


def test_label_affine_mismatch(tmp_path):
    image, mask = brain_volume()
    vol = load_volume(write_nifti(tmp_path / "img.nii.gz", image, np.eye(4)))
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    path = write_nifti(tmp_path / "seg.nii.gz", mask, shifted, np.uint8)
    with pytest.raises(GeometryMismatchError, match="seg.nii.gz: this seg"):
        load_label(path, vol, role="seg")


def test_label_on_lps_grid_follows_its_image(tmp_path):
    image, mask = brain_volume()
    aff = lps_affine(image.shape)
    vol = load_volume(write_nifti(tmp_path / "img.nii.gz", image, aff))
    lab = load_label(write_nifti(tmp_path / "m.nii.gz", mask, aff, np.uint8), vol)
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab > 0, vol.data > 0)


def test_save_refuses_float16(tmp_path):
    with pytest.raises(ValueError, match="float16"):
        save_volume(tmp_path / "h.nii.gz", np.zeros((2, 2, 2)), np.eye(4), np.float16)
