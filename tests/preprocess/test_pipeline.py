import json
import logging

import nibabel as nib
import numpy as np
import pytest

from adsys.errors import CropError, EmptyMaskError, InputError
from adsys.io import SubjectEntry, load_manifest, load_volume, save_volume
from adsys.io.geometry import Grid
from adsys.preprocess import preprocess_cohort, preprocess_subject, preprocess_volume, to_native
from adsys.preprocess.config import PreprocessConfig
from adsys.preprocess.crop import brain_bbox
from tests.helpers import brain_volume, lps_affine, write_nifti


def _entry(tmp_path, image, vox2world, mask=None, **kw) -> SubjectEntry:
    img = write_nifti(tmp_path / "img.nii.gz", image, vox2world)
    m = None if mask is None else write_nifti(tmp_path / "mask.nii.gz", mask, vox2world, np.uint8)
    return SubjectEntry("subj", img, "test", mask=m, **kw)


def test_lps_input_preprocessed_and_mapped_back_voxel_for_voxel(tmp_path):
    image, mask = brain_volume((20, 24, 18))
    affine = lps_affine(image.shape)
    cfg = PreprocessConfig(spacing=1.0, shape=(24, 28, 22), normalization="max")
    p = preprocess_subject(_entry(tmp_path, image, affine, mask), cfg)
    assert nib.aff2axcodes(p.grid.affine) == ("R", "A", "S")
    assert p.image.shape == (24, 28, 22)
    # the map on the preprocessed grid goes back onto the LPS source grid exactly
    native, native_affine = to_native(p.image, p.record)
    np.testing.assert_allclose(native_affine, affine)
    np.testing.assert_allclose(native, image / image.max(), atol=1e-6)
    labels, _ = to_native(p.mask, p.record, order=0)
    np.testing.assert_array_equal(labels > 0, mask)
    # and a saved native map overlays the source file in world space
    path = save_volume(tmp_path / "native.nii.gz", native, native_affine)
    assert np.allclose(nib.load(str(path)).affine, nib.load(str(tmp_path / "img.nii.gz")).affine)


def test_registration_affine_is_applied_and_inverted(tmp_path):
    image, mask = brain_volume((20, 24, 18))
    # subject -> template: 90 degrees about z (x -> y, y -> -x), then a shift in mm
    reg = np.array([[0.0, -1, 0, 3], [1, 0, 0, -2], [0, 0, 1, 1], [0, 0, 0, 1]])
    np.savetxt(tmp_path / "reg.txt", reg)
    entry = _entry(tmp_path, image, np.eye(4), mask, affine=tmp_path / "reg.txt")
    cfg = PreprocessConfig(shape=None, normalization="max", interpolation="linear")
    p = preprocess_subject(entry, cfg)
    # on the RAS template grid the volume is the source rotated by 90 degrees
    assert p.image.shape == (24, 20, 18)
    np.testing.assert_allclose(p.image, np.rot90(image, 1, (0, 1)) / image.max(), atol=1e-5)
    np.testing.assert_allclose(p.grid.affine[:3, 3], [3.0 - 23.0, -2.0, 1.0])
    native, aff = to_native(p.image, p.record)
    np.testing.assert_allclose(aff, np.eye(4))
    np.testing.assert_allclose(native, image / image.max(), atol=1e-5)


def test_resampling_to_2mm_gives_shape_spacing_and_linear_values(tmp_path):
    shape = (40, 48, 36)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-20.0, -24.0, -18.0]
    # a linear ramp in world x (plus an offset so the whole volume is "brain")
    x = np.arange(shape[0])[:, None, None] + affine[0, 3]
    image = np.broadcast_to(x + 100.0, shape).astype(np.float32)
    from adsys.io import Volume

    vol = Volume(image, affine, Grid(shape, affine))
    # no background anywhere: the mask threshold's level is given, not estimated
    cfg = PreprocessConfig(spacing=2.0, shape=None, interpolation="linear", normalization="max",
                           mask_background=0.0)
    p = preprocess_volume(vol, cfg)
    assert p.image.shape == (20, 24, 18)
    assert p.grid.spacing == (2.0, 2.0, 2.0)
    # linear interpolation of a linear ramp is exact: value = world x of the new voxel + 100
    world_x = p.grid.affine[0, 3] + 2.0 * np.arange(20)
    hi = p.record["normalization"]["hi"]
    np.testing.assert_allclose(p.image[:, 5, 5], (world_x + 100.0) / hi, rtol=1e-5)
    # 2 mm voxels that cover the same field of view as the 1 mm source
    np.testing.assert_allclose(p.grid.affine[:3, 3], affine[:3, 3])


@pytest.mark.parametrize("target", [(30, 30, 30), (24, 28, 20), (40, 20, 30), (30, 16, 30)])
def test_crop_pad_keeps_every_brain_voxel(tmp_path, target):
    image, mask = brain_volume((34, 26, 26))
    mask[:, :, :10] = False  # an off-centre brain
    image *= mask
    affine = np.eye(4)
    cfg = PreprocessConfig(shape=target, normalization="max")
    if any(e > t for e, t in zip(np.subtract(*brain_bbox(mask)[::-1]), target, strict=True)):
        with pytest.raises(CropError, match="img.nii.gz.*does not fit.*increase `shape`"):
            preprocess_subject(_entry(tmp_path, image, affine, mask), cfg)
        return
    p = preprocess_subject(_entry(tmp_path, image, affine, mask), cfg)
    assert p.image.shape == target
    assert p.mask.sum() == mask.sum()
    np.testing.assert_allclose(
        np.sort(p.image[p.mask > 0]), np.sort(image[mask] / image.max()), atol=1e-6
    )
    # the brain sits in the middle of the window
    lo, hi = brain_bbox(p.mask)
    np.testing.assert_array_less(np.abs((lo + hi) - np.array(target)), 2)


def test_percentile_recipe_maps_brain_percentiles_to_unit_range():
    image, mask = brain_volume((30, 30, 30), seed=3)
    from adsys.preprocess import normalize_intensity

    out, rec = normalize_intensity(image, mask, "percentile")
    inside = out[mask]
    assert inside.min() == 0.0 and inside.max() == 1.0
    assert rec["lo"] == pytest.approx(np.percentile(image[mask], 1))
    assert rec["hi"] == pytest.approx(np.percentile(image[mask], 99))
    assert 0.005 < np.mean(inside == 0.0) < 0.02  # ~1 % at or below the 1st percentile
    assert 0.005 < np.mean(inside == 1.0) < 0.02
    assert np.all(out[~mask] == 0)


def test_quantile_recipe_uses_whole_volume_background_included():
    image, mask = brain_volume((30, 30, 30), seed=4)
    image[~mask] = -5.0  # negatives are clipped to 0 first
    from adsys.preprocess import normalize_intensity

    out, rec = normalize_intensity(image, mask, "quantile")
    whole = np.clip(image, 0, None)
    assert rec["lo"] == 0.0
    assert rec["hi"] == pytest.approx(np.quantile(whole, 0.98))
    assert np.mean(out == 1.0) == pytest.approx(0.02, abs=0.002)  # of all voxels
    assert out.min() == 0.0


def test_max_recipe_divides_by_max():
    image, mask = brain_volume((30, 30, 30), seed=5)
    from adsys.preprocess import normalize_intensity

    out, rec = normalize_intensity(image, mask, "max")
    assert out.max() == 1.0 and rec["hi"] == image.max()
    np.testing.assert_allclose(out[mask], image[mask] / image.max(), rtol=1e-6)


def test_threshold_mask_when_no_mask_file_and_background_zeroed(tmp_path):
    image, mask = brain_volume((20, 24, 18))
    image += 1.0 * ~mask  # faint background, below the threshold
    p = preprocess_subject(
        _entry(tmp_path, image, np.eye(4)), PreprocessConfig(shape=None, mask_threshold=10.0)
    )
    np.testing.assert_array_equal(p.mask > 0, mask)
    assert np.all(p.image[p.mask == 0] == 0)
    assert p.record["mask"]["source"] == "threshold"


def _preprocess_files(tmp_path, images: dict[str, nib.Nifti1Image], cfg: PreprocessConfig):
    """Save ``images`` ({subject id: image}), write their cohort manifest CSV and run the
    cohort preprocessing on it; returns its output folder."""
    rows = ["subject_id,image,split"]
    for sid, img in images.items():
        nib.save(img, str(tmp_path / f"{sid}.nii.gz"))
        rows.append(f"{sid},{sid}.nii.gz,train")
    (tmp_path / "cohort.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = preprocess_cohort(load_manifest(tmp_path / "cohort.csv"), out, cfg, progress=False)
    assert not result.failed
    return out


@pytest.mark.parametrize(
    ("inside", "outside", "background"),
    [
        (0.0, 0.0, "border"),  # a zero background
        (100.0, 100.0, "border"),  # a constant scanner offset
        (0.0, -1024.0, "border"),  # CT-like: air at -1024, tissue above 0
        (100.0, 100.0, 100.0),  # the level given in the config
    ],
)
def test_threshold_mask_at_2mm_is_the_1mm_brain_not_bspline_ringing(
    tmp_path, inside, outside, background
):
    """Regression: the mask was ``image > 0`` on the B-spline-resampled image, whose
    ringing is positive far from the brain (60 % of this field of view instead of 17 %)."""
    image, mask = brain_volume((40, 48, 36))
    image = np.where(mask, image + inside, outside).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    cfg = PreprocessConfig(spacing=2.0, shape=None, mask_background=background)
    out = _preprocess_files(tmp_path, {"s1": nib.Nifti1Image(image, affine)}, cfg)
    brain = np.asarray(nib.load(str(out / "subjects/s1/mask.nii.gz")).dataobj) > 0
    # the 2 mm voxel centres are every other 1 mm centre: there the true mask is known
    np.testing.assert_array_equal(brain, mask[::2, ::2, ::2])
    record = json.loads((out / "subjects/s1/preprocess.json").read_text())
    assert record["mask"]["source"] == "threshold"
    assert record["mask"]["background"] == outside
    assert record["mask"]["background_from"] == ("border" if background == "border" else "config")
    img2mm = np.asarray(nib.load(str(out / "subjects/s1/image.nii.gz")).dataobj)
    assert np.all(img2mm[~brain] == 0) and img2mm[brain].max() == 1.0


def test_border_background_is_the_constant_even_where_the_brain_touches_the_border():
    from adsys.preprocess.mask import border_background

    image, mask = brain_volume((20, 24, 18))
    image = np.where(mask, image, -3.0)
    image[:, :, 0] = 60.0  # a brain cut flat at one face
    assert border_background(image) == -3.0


def test_a_header_without_orientation_is_warned_and_recorded(tmp_path, caplog):
    image, _ = brain_volume((20, 24, 18))
    bare = nib.Nifti1Image(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    oriented = nib.Nifti1Image(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    cfg = PreprocessConfig(shape=None, spacing=2.0)
    with caplog.at_level(logging.WARNING, logger="adsys.io.nifti"):
        out = _preprocess_files(tmp_path, {"bare": bare, "oriented": oriented}, cfg)
    warned = [r.getMessage() for r in caplog.records if r.name == "adsys.io.nifti"]
    assert len(warned) == 1 and str(tmp_path / "bare.nii.gz") in warned[0]
    assert "qform_code and sform_code are 0" in warned[0] and "Fix:" in warned[0]
    bare_record = json.loads((out / "subjects/bare/preprocess.json").read_text())
    assert bare_record["warnings"] == warned
    ok_record = json.loads((out / "subjects/oriented/preprocess.json").read_text())
    assert ok_record["warnings"] == []


def test_empty_mask_and_blank_image_errors_name_the_file(tmp_path):
    image, mask = brain_volume((20, 24, 18))
    entry = _entry(tmp_path, image, np.eye(4), np.zeros_like(mask))
    with pytest.raises(EmptyMaskError, match="img.nii.gz.*empty"):
        preprocess_subject(entry, PreprocessConfig())
    with pytest.raises(InputError, match="img.nii.gz.*constant"):
        preprocess_subject(
            _entry(tmp_path, mask.astype(np.float32) * 7, np.eye(4), mask),
            PreprocessConfig(shape=None),
        )


def test_record_holds_every_parameter(tmp_path):
    image, mask = brain_volume((20, 24, 18))
    cfg = PreprocessConfig(shape=(24, 28, 22))
    p = preprocess_subject(_entry(tmp_path, image, lps_affine(image.shape), mask), cfg)
    rec = p.record
    assert rec["config"] == cfg.model_dump(mode="json")
    assert rec["config_digest"] == cfg.digest()
    assert len(rec["source"]["sha256"]) == 64
    assert Grid.from_json(rec["grid"]).same_as(p.grid)
    assert rec["normalization"]["recipe"] == "percentile"


def test_config_validation():
    with pytest.raises(ValueError, match="spacing"):
        PreprocessConfig(spacing=0)
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessConfig(percentiles=(99, 1))
    with pytest.raises(ValueError, match="Extra inputs"):
        PreprocessConfig(spacng=2)


def test_n4_reduces_a_smooth_bias_field(tmp_path):
    shape = (48, 48, 48)
    _, mask = brain_volume(shape)
    rng = np.random.default_rng(0)
    tissue = np.where(rng.random(shape) < 0.5, 100.0, 60.0) * mask  # two tissue classes
    ramp = np.linspace(0.7, 1.3, shape[0])[:, None, None] * np.ones(shape)
    biased = (tissue * ramp).astype(np.float32)
    from adsys.preprocess.bias import n4_correct

    corrected = n4_correct(biased, mask, (1.0, 1.0, 1.0), shrink=2)
    bright = (tissue == 100.0) & mask

    def cv(v):
        return v[bright].std() / v[bright].mean()

    assert cv(corrected) < 0.5 * cv(biased)
    # the pipeline records that it ran
    p = preprocess_volume(load_volume(write_nifti(tmp_path / "b.nii.gz", biased, np.eye(4))),
                          PreprocessConfig(shape=None, n4=True), mask=mask.astype(np.uint8))
    assert p.record["n4"] is True
