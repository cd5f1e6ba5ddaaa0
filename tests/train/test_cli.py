"""`adsys train` / `ray_jobs/train.py`: the whole configuration is checked before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adsys.cli import main
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures

REPO = Path(__file__).resolve().parents[2]


def test_a_bad_method_key_fails_in_one_line_before_ray_starts(tmp_path):
    # a Ray address nothing listens on: reaching ray.init() would fail differently
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    r = subprocess.run(
        [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--preset", "demo", "--method",
         "ddpm", "--set", "method_config.encoder.depth=18", "--storage-path", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "method 'ddpm'" in errors[0] and "method_config.encoder: unknown key" in errors[0]
    assert "Ray" not in r.stdout + r.stderr.replace(errors[0], "")


def test_adsys_train_checks_the_same_way(tmp_path, capsys):
    bad = tmp_path / "train.yaml"
    bad.write_text("method: cddpm\nmethod_config:\n  encoder: {depth: 19}\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "method 'cddpm'" in err
    assert "method_config.encoder.depth" in err
    assert main(["train", "--method", "nope", "--shards", str(tmp_path)]) == 2
    assert "unknown method 'nope'; known: aekl, cddpm, cldm" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--shards", str(tmp_path / "none")]) == 2
    assert "no shards at" in capsys.readouterr().err


@pytest.mark.ray
def test_a_baseline_is_fitted_without_ray(smoke_shards, tmp_path):  # noqa: F811
    """`adsys train --method deviation`: one statistics pass over the train split, exported
    like a trained model, with no Ray (an address nothing listens on would fail)."""
    import json

    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    r = subprocess.run(
        [sys.executable, "-m", "adsys.cli", "train", "--method", "deviation", "--preset",
         "smoke", "--shards", str(smoke_shards), "--storage-path", str(tmp_path), "--name",
         "dev"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads((tmp_path / "dev" / "export" / "config.json").read_text())
    assert record["method"] == "deviation" and record["fitted_items"] == 3
    assert record["config"]["grid"] == [44, 52, 44] and record["preprocess"]["spacing"] == 4
