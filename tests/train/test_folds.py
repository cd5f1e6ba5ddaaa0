"""Several folds as one job (adsys.train.folds): concurrent Ray Train runs, failures isolated,
a re-run resumes the unfinished folds, and inference runs the folds' ensemble."""

import json

import pytest

from adsys.errors import InputError
from adsys.infer.config import InferConfig
from adsys.methods.export import expand_models, write_ensemble
from adsys.train.config import resolve_config
from adsys.train.folds import fold_configs, parse_folds


def test_parse_folds():
    assert parse_folds("all", "icdm") == parse_folds(" ALL ", "icdm") == list(range(10))
    assert parse_folds("9, 1,3", "icdm") == [9, 1, 3]
    for bad, message in (("", "'' is not a fold"), ("0,,2", "'' is not a fold"),
                         ("10", "'10' is not a fold"), ("-1", "'-1' is not a fold"),
                         ("one", "'one' is not a fold"), ("1,1", "listed twice")):
        with pytest.raises(InputError, match=message):
            parse_folds(bad, "icdm")
    with pytest.raises(InputError, match="has no folds"):
        parse_folds("all", "cddpm")


def test_fold_configs_are_separate_runs_of_one_job(tmp_path):
    cfg = resolve_config("smoke", None, {"method": "icdm", "storage_path": tmp_path,
                                         "name": "job"})
    folds = fold_configs(cfg, [0, 9])
    assert [c.run_dir for c in folds.values()] == [tmp_path / "job" / "fold-0",
                                                   tmp_path / "job" / "fold-9"]
    assert [c.method_spec().fold for c in folds.values()] == [0, 9]
    assert folds[0].seed != folds[9].seed  # each fold draws its own data order and noise
    tasks = [c.method_spec().data.corruption.options["tasks"] for c in folds.values()]
    assert tasks[0] != tasks[1]


def test_an_ensemble_folder_stands_for_its_members(tmp_path):
    members = [tmp_path / "fold-0" / "export", tmp_path / "fold-3" / "export"]
    for m in members:
        m.mkdir(parents=True)
        (m / "config.json").write_text("{}")
    write_ensemble(tmp_path, members, {"fold-5": "RuntimeError: x"})
    assert expand_models([tmp_path]) == members
    assert InferConfig(models=[tmp_path], cohort=tmp_path, out=tmp_path).models == members
    (tmp_path / "ensemble.json").write_text(json.dumps({"members": ["../evil"], "failed": {}}))
    with pytest.raises(InputError, match="not a folder inside"):
        expand_models([tmp_path])
    write_ensemble(tmp_path, [], {"fold-0": "boom"})
    with pytest.raises(InputError, match="no trained member"):
        expand_models([tmp_path])


def _steps(run_dir):
    return [json.loads(x)["step"]
            for x in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.slow
def test_folds_train_concurrently_isolate_failures_resume_and_infer_as_one_ensemble(
    smoke_shards, tmp_path
):
    from adsys.infer.job import run_inference
    from adsys.train.folds import run_folds

    def cfg(max_failures):
        return resolve_config("smoke", None, {
            "method": "icdm", "shards": smoke_shards, "storage_path": tmp_path, "name": "icdm",
            "max_steps": 6, "checkpoint_every": 2, "log_every": 1, "val_every": 2,
            "val_smoothing": 0.9, "max_failures": max_failures})  # fmt: skip

    job = tmp_path / "icdm"
    # fold 9 crashes at step 3 with no retries left: it fails alone, fold 0 finishes
    outcome = run_folds(cfg(0), [0, 9], faults={9: 3})
    assert outcome[0] is None and outcome[9] is not None
    ensemble = json.loads((job / "ensemble.json").read_text())
    assert ensemble["members"] == ["fold-0/export"] and list(ensemble["failed"]) == ["fold-9"]
    assert (job / "fold-9" / "checkpoint_00000002").is_dir()
    finished = _steps(job / "fold-0")
    # validation follows the moving average m <- 0.9 m + 0.1 loss (the code's α)
    vals = [json.loads(x) for x in (job / "fold-0" / "logs" / "metrics.jsonl").read_text()
            .splitlines() if "val_loss" in x]
    assert [v["step"] for v in vals] == [2, 4, 6]
    m = vals[0]["val_loss"]
    for v in vals:
        m = m if v is vals[0] else 0.9 * m + 0.1 * v["val_loss"]
        assert v["val_loss_smoothed"] == pytest.approx(m)
    # the re-run resumes fold 9 from its step-2 checkpoint, leaves fold 0 as it was, and
    # trains a new fold 5 through a crash that Ray retries
    outcome = run_folds(cfg(1), [0, 5, 9], faults={5: 3})
    assert outcome == {0: None, 5: None, 9: None}
    assert _steps(job / "fold-0") == finished
    assert _steps(job / "fold-9")[-4:] == [3, 4, 5, 6]
    assert (job / "fold-5" / ".fault-injected-3").exists()
    ensemble = json.loads((job / "ensemble.json").read_text())
    assert ensemble == {"members": ["fold-0/export", "fold-5/export", "fold-9/export"],
                        "failed": {}}
    out = tmp_path / "infer"
    result = run_inference(InferConfig(models=[job], cohort=smoke_shards, out=out,
                                       threshold="none"), progress=False)
    assert not result.failed and len(result.processed) == 3
    run = json.loads((out / "run.json").read_text())
    assert len(run["models"]) == 3 and run["recipe"]["protocol"] == "upd"
