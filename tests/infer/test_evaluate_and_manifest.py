"""Re-scoring saved maps (`adsys evaluate`) and inference straight from a NIfTI manifest."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from adsys.cli import main
from adsys.infer.config import InferConfig
from adsys.infer.job import run_inference
from adsys.infer.outputs import MAP, RESULT, subject_dir
from adsys.shards.store import CohortStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_evaluate_rescores_saved_maps_under_each_protocol(smoke_inference, smoke_cohort_manifest,
                                                          capsys):
    config, _ = smoke_inference
    tests = CohortStore(config.cohort).subjects("test")
    for protocol in ("behrendt", "upd", "disyre", "conddiff"):
        code = main(["evaluate", str(config.out), "--manifest", str(smoke_cohort_manifest),
                     "--protocol", protocol, "--threshold", "val-fpr=0.05"])
        assert code == 0
        printed = capsys.readouterr().out
        assert protocol in printed
        folder = config.out / f"eval-{protocol}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["protocol"]["name"] == protocol and summary["run"]["missing"] == []
        with open(folder / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["subject_id"] for r in rows) == sorted(tests)
        assert {r["protocol"] for r in rows} == {protocol}
    # the protocol the run used, re-scored from the saved maps, gives the run's numbers
    with open(config.out / "eval-behrendt" / "metrics.csv") as f:
        rescored = {r["subject_id"]: r for r in csv.DictReader(f)}
    for sid in tests:
        row = json.loads((subject_dir(config.out, sid) / RESULT).read_text())["row"]
        assert float(rescored[sid]["ap"]) == pytest.approx(row["ap"], abs=1e-9)
        assert float(rescored[sid]["auroc"]) == pytest.approx(row["auroc"], abs=1e-9)


def test_evaluate_names_a_folder_that_is_not_an_inference_output(tmp_path, smoke_cohort_manifest,
                                                                 capsys):
    code = main(["evaluate", str(tmp_path), "--manifest", str(smoke_cohort_manifest),
                 "--protocol", "upd"])
    assert code != 0
    assert str(tmp_path) in capsys.readouterr().err


def test_manifest_cohort_is_preprocessed_on_the_fly_like_the_store(smoke_model, smoke_inference,
                                                                  smoke_cohort_manifest, tmp_path,
                                                                  ray_session):
    store_config, _ = smoke_inference
    config = InferConfig(models=[smoke_model], cohort=smoke_cohort_manifest, out=tmp_path / "m",
                         splits=("test",), threshold="none", overlays=False)
    result = run_inference(config, progress=False)
    tests = CohortStore(store_config.cohort).subjects("test")
    assert sorted(result.processed) == sorted(tests) and not result.failed
    for sid in tests:
        ours = nib.load(subject_dir(config.out, sid) / MAP)
        stored = nib.load(subject_dir(store_config.out, sid) / MAP)
        assert ours.shape == stored.shape
        np.testing.assert_allclose(ours.affine, stored.affine, atol=1e-5)
        # same preprocessing, same seed: only the store's float16 rounding differs
        a, b = ours.get_fdata(), stored.get_fdata()
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_bad_model_or_empty_selection_is_a_clear_error(smoke_model, smoke_shards, tmp_path):
    from adsys.errors import InputError

    with pytest.raises(InputError, match="not an exported model folder.*--model"):
        run_inference(InferConfig(models=[tmp_path], cohort=smoke_shards, out=tmp_path / "a"))
    with pytest.raises(InputError, match=r"no subjects of splits \['holdout'\]"):
        run_inference(InferConfig(models=[smoke_model], cohort=smoke_shards,
                                  out=tmp_path / "b", splits=("holdout",)))
