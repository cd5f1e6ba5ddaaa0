import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from adsys import __version__
from adsys.io import load_manifest, load_volume

ADSYS = str(Path(sys.executable).parent / "adsys")


def run(*args, cwd=None):
    return subprocess.run([ADSYS, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_demo_data_then_preprocess_then_rerun_reuses(tmp_path):
    r = run("demo-data", "--out", tmp_path / "data", "--n-train", 1, "--n-val", 1, "--n-test", 1)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "pp"
    args = ["preprocess", tmp_path / "data" / "manifest.csv", "--out", out, "--spacing", 2,
            "--shape", 96, 112, 96]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert "preprocessed 3 subject(s), reused 0, failed 0" in r.stdout
    m = load_manifest(out / "manifest.csv")
    assert [s.split for s in m.subjects] == ["train", "val", "test"]
    for s in m.subjects:
        vol = load_volume(s.image)
        assert vol.data.shape == (96, 112, 96)
        assert vol.data.min() == 0.0 and vol.data.max() == 1.0
        rec = json.loads((s.image.parent / "preprocess.json").read_text())
        assert rec["config"]["spacing"] == 2.0 and rec["subject_id"] == s.subject_id
    assert m.subjects[2].seg is not None and m.subjects[0].wm is not None
    assert json.loads((out / "failed.json").read_text()) == []
    stamp = os.path.getmtime(m.subjects[0].image)
    r = run(*args)
    assert "preprocessed 0 subject(s), reused 3" in r.stdout
    assert os.path.getmtime(m.subjects[0].image) == stamp


def test_preprocess_lists_failed_subject_and_keeps_the_rest(tmp_path):
    from adsys.io import save_volume
    from tests.helpers import brain_volume

    image, mask = brain_volume((20, 24, 18))
    save_volume(tmp_path / "ok.nii.gz", image, np.eye(4))
    nan = image.copy()
    nan[3, 3, 3] = np.nan
    save_volume(tmp_path / "nan.nii.gz", nan, np.eye(4))
    (tmp_path / "m.csv").write_text(
        "subject_id,image,split\nok,ok.nii.gz,train\nbad,nan.nii.gz,train\n"
    )
    r = run("preprocess", tmp_path / "m.csv", "--out", tmp_path / "pp", "--shape", 24, 28, 22)
    assert r.returncode == 1
    assert "failed 1" in r.stdout and "FAILED bad: NonFiniteError" in r.stderr
    failed = json.loads((tmp_path / "pp" / "failed.json").read_text())
    assert failed[0]["subject_id"] == "bad" and "nan.nii.gz" in failed[0]["reason"]
    written = load_manifest(tmp_path / "pp" / "manifest.csv").subjects
    assert [s.subject_id for s in written] == ["ok"]


def test_broken_manifest_is_a_clear_cli_error(tmp_path):
    (tmp_path / "m.csv").write_text("subject_id,image,split\na,missing.nii.gz,train\n")
    r = run("preprocess", tmp_path / "m.csv", "--out", tmp_path / "pp")
    assert r.returncode == 2
    assert "image file not found" in r.stderr and "Traceback" not in r.stderr
