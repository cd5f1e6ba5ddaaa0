"""The smoke benchmark through the real jobs: two diffusion methods and every baseline on
real smoke shards — trained with Ray Train, inferred with Ray Data, re-scored, ranked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from adsys.benchmark.runner import run_benchmark
from adsys.benchmark.spec import load_benchmark_spec
from adsys.cli import main
from adsys.io.nifti import load_volume
from adsys.shards.store import CohortStore
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures

REPO = Path(__file__).resolve().parents[2]
BASELINES = {"threshold", "threshold-hypo", "deviation", "deviation-z"}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _raw_map(out: Path, run: str, sid: str) -> np.ndarray:
    return load_volume(out / "infer" / run / "subjects" / sid / "anomaly_map.nii.gz").data


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_benchmark_trains_infers_rescores_and_ranks(smoke_shards, smoke_cohort,  # noqa: F811
                                                          tmp_path, capsys):
    out = tmp_path / "bench"
    spec = load_benchmark_spec(REPO / "leaderboard" / "smoke.yaml").model_copy(update={
        "shards": smoke_shards, "manifest": smoke_cohort, "out": out, "protocols": ["behrendt"]})
    first = run_benchmark(spec)
    names = {"ddpm", "cddpm"} | BASELINES
    assert not first.failed and set(first.trained) == names
    assert first.inferred == dict.fromkeys(names, 3)  # 1 val + 2 test subjects each

    # the leaderboard: 6 methods x (all + 2 orientation groups) x 1 protocol
    rows = _csv(out / "leaderboard.csv")
    assert len(rows) == 18 and (out / "leaderboard.md").is_file()
    by = {(r["method"], r["group"]): r for r in rows}
    assert {g for _, g in by} == {"all", "RAS", "LPS"}  # sub-0004 RAS, sub-0005 LPS
    assert all(int(by[(m, "all")]["subjects"]) == 2 for m in names)
    assert all(int(by[(m, g)]["subjects"]) == 1 for m in names for g in ("RAS", "LPS"))
    assert {m for m in names if by[(m, "all")]["baseline"] == "True"} == BASELINES
    per_subject = {m: {r["subject_id"]: float(r["ap"]) for r in
                       _csv(out / "infer" / m / "metrics.csv") if r["split"] == "test"}
                   for m in names}
    assert float(by[("ddpm", "all")]["ap_mean"]) == pytest.approx(
        np.mean(list(per_subject["ddpm"].values())))
    assert float(by[("ddpm", "LPS")]["ap_mean"]) == pytest.approx(per_subject["ddpm"]["sub-0005"])
    best = max(BASELINES, key=lambda m: float(by[(m, "all")]["ap_mean"]))
    assert by[("cddpm", "all")]["best_baseline"] == best
    sids = sorted(per_subject["cddpm"])
    scipy_p = wilcoxon([per_subject["cddpm"][s] for s in sids],
                       [per_subject[best][s] for s in sids]).pvalue
    assert float(by[("cddpm", "all")]["p_vs_best_baseline"]) == pytest.approx(scipy_p)
    assert float(by[("cddpm", "all")]["train_seconds"]) > 0
    assert float(by[("cddpm", "all")]["infer_peak_rss_mb"]) > 0
    report = (out / "report.html").read_text()
    assert 'id="leaderboard"' in report and "pr-all.png" in report
    assert (out / "pr-all.png").is_file() and len(list((out / "overlays").glob("*.png"))) == 2

    # the baselines' maps are their definitions, the statistics those of the train split
    store = CohortStore(Path(smoke_shards) / "cohort.zarr")
    train = np.stack([store.read(s, "image").astype(np.float64)
                      for s in store.subjects("train")])
    mean, std = train.mean(0), train.std(0)
    sid = "sub-0004"
    image = load_volume(out / "infer" / "ddpm" / "subjects" / sid / "image.nii.gz").data
    np.testing.assert_allclose(_raw_map(out, "threshold", sid), image, atol=1e-6)
    np.testing.assert_allclose(_raw_map(out, "threshold-hypo", sid), 1 - image, atol=1e-6)
    np.testing.assert_allclose(_raw_map(out, "deviation", sid), np.abs(image - mean), atol=1e-5)
    np.testing.assert_allclose(_raw_map(out, "deviation-z", sid),
                               np.abs(image - mean) / np.maximum(std, 0.01), rtol=1e-4,
                               atol=1e-4)
    fitted = json.loads((out / "runs" / "deviation" / "export" / "config.json").read_text())
    assert fitted["fitted_items"] == 3 and fitted["steps"] == 0

    # a new protocol re-scores the saved maps: no training, no model run, maps untouched
    maps = {m: (out / "infer" / m / "subjects" / sid / "anomaly_map.nii.gz").stat().st_mtime_ns
            for m in names}
    again = run_benchmark(spec.model_copy(update={"protocols": ["behrendt", "upd"]}))
    assert not again.trained and not any(again.inferred.values())
    assert sorted(again.rescored) == sorted(f"{m}/upd" for m in names)
    assert maps == {m: (out / "infer" / m / "subjects" / sid / "anomaly_map.nii.gz")
                    .stat().st_mtime_ns for m in names}
    rows = _csv(out / "leaderboard.csv")
    assert len(rows) == 36 and {r["protocol"] for r in rows} == {"behrendt", "upd"}
    upd = {r["subject_id"]: float(r["ap"]) for r in
           _csv(out / "infer" / "ddpm" / "eval-upd" / "metrics.csv")}
    row = next(r for r in rows if (r["method"], r["group"], r["protocol"]) == ("ddpm", "all",
                                                                               "upd"))
    assert float(row["ap_mean"]) == pytest.approx(np.mean(list(upd.values())))

    # and a finished benchmark does no work at all
    third = run_benchmark(spec.model_copy(update={"protocols": ["behrendt", "upd"]}))
    assert not third.did_work and not third.failed


    # `make demo`'s floor: an inference output made elsewhere (--add) beside a baseline,
    # under that output's own protocol, and the line saying whether it beats the baseline
    floor = tmp_path / "floor.yaml"
    floor.write_text(f"name: floor\nshards: {smoke_shards}\nmanifest: {smoke_cohort}\n"
                     "threshold: val-fpr=0.05\nmethods: [{method: threshold}]\n")
    code = main(["benchmark", str(floor), "--out", str(tmp_path / "floor"),
                 "--add", f"mine={out / 'infer' / 'cddpm'}"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| mine | 2 |" in printed and "| threshold (baseline) | 2 |" in printed
    assert "mine: AP" in printed and "the best baseline threshold: AP" in printed
    assert "protocol behrendt" in printed  # cddpm's own protocol, read from its maps
    assert not (tmp_path / "floor" / "infer" / "mine").exists()  # its maps used as they are
