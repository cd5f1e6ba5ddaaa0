"""`adsys synth fluid`: real NIfTI files in, K variants + masks + parameter JSONs out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from adsys.cli import build_parser, main
from adsys.errors import GeometryMismatchError, InputError
from adsys.io import load_volume
from adsys.synth.fluid import replay
from tests.synth.shapes import irregular_mask, smooth_field

SHAPE = (18, 20, 16)
LPS = np.array([[-1.5, 0, 0, 20.0], [0, -1.5, 0, 30.0], [0, 0, 1.5, -10.0], [0, 0, 0, 1]])


def _write(path, data, affine=LPS):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


@pytest.fixture
def files(tmp_path):
    mask = irregular_mask(SHAPE, seed=31)
    image = mask * (0.4 + 0.5 * smooth_field(SHAPE, 32))
    lesions = tmp_path / "lesions"
    lesions.mkdir()
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    for k, centre in enumerate([(8, 10, 7), (10, 9, 9)]):
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        _write(lesions / f"sub{k}_prob.nii.gz", np.exp(-r2 / 6.0))
    return {
        "image": _write(tmp_path / "sub-01_T1w.nii.gz", image),
        "mask": _write(tmp_path / "sub-01_mask.nii.gz", mask),
        "wm": _write(tmp_path / "sub-01_wm.nii.gz", smooth_field(SHAPE, 33)),
        "lesions": lesions,
        "out": tmp_path / "out",
    }


def test_fluid_writes_k_variants_that_replay(files):
    rc = main(
        [
            "synth",
            "fluid",
            str(files["image"]),
            "--mask",
            str(files["mask"]),
            "--out",
            str(files["out"]),
            "--lesions",
            str(files["lesions"]),
            "--seed",
            "5",
            "--n",
            "2",
        ]
    )
    assert rc == 0
    vol = load_volume(files["image"])
    mask = load_volume(files["mask"]).data.astype(np.uint8)
    for k in range(2):
        base = files["out"] / f"sub-01_T1w_fluid-{k:02d}"
        img = nib.load(f"{base}.nii.gz")
        les = nib.load(f"{base}_lesion.nii.gz")
        np.testing.assert_allclose(img.affine, vol.affine)  # written on the input's grid
        np.testing.assert_allclose(les.affine, vol.affine)
        lesion = np.asarray(les.dataobj)
        assert set(np.unique(lesion)) <= {0, 1} and lesion.any()
        assert not np.any(lesion & (mask == 0))
        params = json.loads((base.parent / f"{base.name}.json").read_text())
        assert params["source"]["variant"] == k and params["lesion_map"].endswith("_prob.nii.gz")
        again = replay(vol.data, mask, params)
        np.testing.assert_array_equal(np.asarray(img.dataobj, np.float32), again.image)
        prob = nib.load(f"{base}_prob.nii.gz").get_fdata(dtype=np.float32)
        np.testing.assert_array_equal(prob, again.p_t)
    first = nib.load(files["out"] / "sub-01_T1w_fluid-00.nii.gz").get_fdata()
    second = nib.load(files["out"] / "sub-01_T1w_fluid-01.nii.gz").get_fdata()
    assert not np.array_equal(first, second)


def test_fluid_perlin_shapes_with_wm_map(files):
    common = [str(files["image"]), "--mask", str(files["mask"]), "--out", str(files["out"])]
    rc = main(["synth", "fluid", *common, "--wm", str(files["wm"]), "--intensity", "una"])
    assert rc == 0
    params = json.loads((files["out"] / "sub-01_T1w_fluid-00.json").read_text())
    assert params["lesion_map"] is None and 90 <= params["shape_percentile"] <= 99.6
    assert params["source"]["wm"] == str(files["wm"])
    assert params["config"]["intensity"] == "una" and params["intensity"]["mode"] == "una"
    assert main(["synth", "fluid", *common, "--wm-tissue", "dark", "--seed", "1"]) == 0
    params = json.loads((files["out"] / "sub-01_T1w_fluid-00.json").read_text())
    assert params["config"]["wm_tissue"] == "dark" and params["intensity"]["mode"] == "paper"


def _run(argv):
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_bad_lesion_inputs_name_the_file(files, tmp_path):
    common = [str(files["image"]), "--mask", str(files["mask"]), "--out", str(files["out"])]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no NIfTI lesion maps"):
        _run(["synth", "fluid", *common, "--lesions", str(empty)])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _write(wrong / "small_prob.nii.gz", np.ones((4, 4, 4)))
    with pytest.raises(GeometryMismatchError, match="small_prob.nii.gz"):
        _run(["synth", "fluid", *common, "--lesions", str(wrong)])


def test_main_reports_bad_input_as_an_error_message(files, tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    rc = main(
        [
            "synth",
            "fluid",
            str(files["image"]),
            "--mask",
            str(files["mask"]),
            "--out",
            str(files["out"]),
            "--lesions",
            str(empty),
        ]
    )
    assert rc == 2
    assert "no NIfTI lesion maps" in capsys.readouterr().err
