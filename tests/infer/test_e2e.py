"""End to end on real local Ray: smoke shards → training → Ray Data inference → maps, metrics.

Checks what a user relies on: maps are valid NIfTI on the preprocessed grid and, in native
space, carry the source scan's affine (nilearn loads and plots them over the scan); the
trained model's AP beats a random map; summary, CSV and report name the protocol; a run
killed mid-way resumes without recomputing finished subjects; saved maps re-score under
another protocol without the model.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from adsys.infer.config import InferConfig
from adsys.infer.job import run_inference
from adsys.infer.outputs import MAP, MAP_PP, RESULT, subject_dir
from adsys.shards.store import CohortStore
from tests.helpers import job_env, sigkill_when

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _run_subjects(cohort: Path) -> set[str]:
    """The subjects a default run scores: the val and test splits."""
    store = CohortStore(cohort)
    return set(store.subjects("val")) | set(store.subjects("test"))


def _record(out: Path, sid: str) -> dict:
    return json.loads((subject_dir(out, sid) / "preprocess.json").read_text())


def test_maps_are_nifti_in_both_spaces_and_nilearn_plots_them(smoke_inference, tmp_path):
    from nilearn import image, plotting

    config, result = smoke_inference
    assert not result.failed and len(result.processed) == 3  # 1 val + 2 test
    assert set(result.subject_seconds) == set(result.processed)  # each one's time in its actor
    assert all(0 < s < result.seconds for s in result.subject_seconds.values())
    store = CohortStore(config.cohort)
    for sid in store.subjects("test"):
        folder = subject_dir(config.out, sid)
        rec = _record(config.out, sid)
        grid = nib.load(folder / MAP)
        assert grid.shape == tuple(rec["grid"]["shape"])
        np.testing.assert_allclose(grid.affine, rec["grid"]["affine"], atol=1e-5)
        for name in (MAP, MAP_PP):
            native = nib.load(folder / "native" / name)
            source = nib.load(rec["source"]["image"])  # the subject's scan as stored
            assert native.shape == source.shape
            np.testing.assert_allclose(native.affine, source.affine, atol=1e-4)
            assert np.isfinite(native.get_fdata()).all()
        loaded = image.load_img(str(folder / "native" / MAP_PP))
        png = tmp_path / f"{sid}.png"
        plotting.plot_stat_map(loaded, bg_img=rec["source"]["image"], output_file=str(png),
                               display_mode="z", cut_coords=3)
        assert png.stat().st_size > 1000
        assert (folder / "overlay.png").stat().st_size > 1000


def test_trained_model_beats_a_random_map(smoke_inference):
    config, result = smoke_inference
    rng = np.random.default_rng(0)
    aps, random_aps = [], []
    for sid in CohortStore(config.cohort).subjects("test"):
        folder = subject_dir(config.out, sid)
        pp = nib.load(folder / MAP_PP).get_fdata()
        seg = nib.load(folder / "seg.nii.gz").get_fdata() > 0
        aps.append(average_precision_score(seg.ravel(), pp.ravel()))
        random_aps.append(average_precision_score(seg.ravel(), rng.random(seg.size)))
        row = json.loads((folder / RESULT).read_text())["row"]
        assert row["ap"] == pytest.approx(aps[-1], abs=1e-6)
    assert np.mean(aps) > 2 * np.mean(random_aps), (aps, random_aps)
    assert result.summary["pooled"]["ap"] > 2 * np.mean(random_aps)


def test_summary_csv_and_report_name_the_protocol(smoke_inference):
    config, result = smoke_inference
    summary = json.loads((config.out / "summary.json").read_text())
    assert summary["protocol"]["name"] == "behrendt"
    assert summary["subjects"] == 2 and summary["subjects_with_lesions"] == 2
    assert summary["threshold"]["source"].startswith("val pool, FPR")
    assert summary["per_volume"]["dice"]["n"] == 2  # Dice at the val threshold, per volume
    with open(config.out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["protocol"] for r in rows} == {"behrendt"} and len(rows) == 2
    html = (config.out / "report.html").read_text()
    assert "behrendt" in html and html.count("overlay.png") == 2
    import zarr

    maps = zarr.open_group(str(config.out / "maps.zarr"), mode="r")
    assert set(maps.group_keys()) == _run_subjects(config.cohort)


def test_killed_run_resumes_without_recomputing_finished_subjects(smoke_model, smoke_shards,
                                                                  tmp_path, ray_session):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "infer.py"), "--model", str(smoke_model),
           "--cohort", str(smoke_shards), "--out", str(out), "--threshold", "val-fpr=0.05",
           "--num-workers", "1"]
    # killed as soon as the first subject (the val subject: its phase runs first) is written
    sigkill_when(cmd, job_env(), lambda: any(out.glob(f"subjects/*/{RESULT}")),
                 "the inference job to finish a subject")
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"subjects/*/{RESULT}")}
    everyone = _run_subjects(smoke_shards)
    assert finished and set(finished) < everyone  # killed mid-run: some subjects unfinished
    config = InferConfig(models=[smoke_model], cohort=smoke_shards, out=out,
                         threshold="val-fpr=0.05")
    rerun = run_inference(config, progress=False)
    assert set(rerun.skipped) >= set(finished)
    assert set(rerun.processed) == everyone - set(rerun.skipped) and not rerun.failed
    for sid, mtime in finished.items():  # finished subjects were not written again
        assert (subject_dir(out, sid) / RESULT).stat().st_mtime_ns == mtime
    again = run_inference(config, progress=False)
    assert not again.processed and set(again.skipped) == everyone
