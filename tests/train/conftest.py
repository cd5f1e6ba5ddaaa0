"""Smoke shards for the training tests: a tiny demo cohort built with shards/smoke.yaml."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_shards(ray_session, tmp_path_factory) -> Path:
    from adsys.demo import write_demo_cohort
    from adsys.shards.build import build_shards
    from adsys.shards.spec import load_spec

    root = tmp_path_factory.mktemp("train-smoke")
    manifest = write_demo_cohort(root / "cohort", n_train=3, n_val=1, n_test=2, progress=False)
    spec = load_spec(REPO / "shards" / "smoke.yaml", {"manifest": manifest, "out": root / "shards"})
    return build_shards(spec, progress=False).out
