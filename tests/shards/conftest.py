"""Shared fixtures: one small demo cohort (+ two corrupt subjects), one local Ray, one build.

Building the cohort and starting Ray take seconds, so each happens once per session; tests
that damage a build work on a copy (:func:`copy_build`).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_nifti

REPO = Path(__file__).resolve().parents[2]
SMOKE_SPEC = REPO / "shards" / "smoke.yaml"
CORRUPT = ("bad-gzip", "bad-nan")


def _extend_cohort(manifest: Path) -> None:
    """Add rescans (same files, new ids: their variants differ) and two corrupt subjects.

    Result, in manifest order: train sub-0000, sub-0001, bad-gzip, sub-0000r, bad-nan,
    sub-0001r (failures interleave with shard boundaries); val sub-0002; test sub-0003,
    sub-0003r. Rescans keep the cohort cheap to make (a demo subject takes seconds).
    """
    folder = manifest.parent
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    blob = (folder / rows[0]["image"]).read_bytes()
    (folder / "bad-gzip.nii.gz").write_bytes(blob[: len(blob) // 2])
    nan = np.full((20, 24, 18), np.nan, dtype=np.float32)
    write_nifti(folder / "bad-nan.nii.gz", nan, np.diag([4.0, 4.0, 4.0, 1.0]))
    bad = [
        {**{k: "" for k in rows[0]}, "subject_id": sid, "image": f"{sid}.nii.gz", "split": "train"}
        for sid in CORRUPT
    ]
    rescan = {r["subject_id"]: {**r, "subject_id": r["subject_id"] + "r"} for r in rows}
    train, val, test = rows[:2], rows[2], rows[3]
    rows = [
        *train,
        bad[0],
        rescan["sub-0000"],
        bad[1],
        rescan["sub-0001"],
        val,
        test,
        rescan["sub-0003"],
    ]
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="session")
def cohort_manifest(tmp_path_factory) -> Path:
    """7 good demo subjects (4 train, 1 val, 2 test) and 2 corrupt train subjects."""
    from adsys.demo import write_demo_cohort

    out = tmp_path_factory.mktemp("cohort")
    manifest = Path(write_demo_cohort(out, n_train=2, n_val=1, n_test=1, progress=False))
    _extend_cohort(manifest)
    return manifest


@pytest.fixture(scope="session")
def smoke_spec(cohort_manifest, tmp_path_factory):
    from adsys.shards.spec import load_spec

    out = tmp_path_factory.mktemp("build") / "ref"
    return load_spec(SMOKE_SPEC, {"manifest": cohort_manifest, "out": out})


@pytest.fixture(scope="session")
def built(ray_session, smoke_spec):
    """The uninterrupted reference build of the smoke spec."""
    from adsys.shards.build import build_shards

    return build_shards(smoke_spec, progress=False)


@pytest.fixture
def copy_build(built, tmp_path):
    """A private copy of the reference build's output folder."""
    dst = tmp_path / "copy"
    shutil.copytree(built.out, dst)
    return dst
