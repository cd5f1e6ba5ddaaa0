"""Smoke shards for the training tests: a tiny demo cohort built with shards/smoke.yaml."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_cohort(tmp_path_factory) -> Path:
    """The demo cohort's manifest (3 train / 1 val / 2 test subjects), in ``ROOT/cohort``."""
    from adsys.demo import write_demo_cohort

    root = tmp_path_factory.mktemp("train-smoke")
    return write_demo_cohort(root / "cohort", n_train=3, n_val=1, n_test=2, progress=False)


@pytest.fixture(scope="session")
def smoke_shards(ray_session, smoke_cohort) -> Path:
    """``smoke_cohort`` built with shards/smoke.yaml into ``ROOT/shards``."""
    from adsys.shards.build import build_shards
    from adsys.shards.spec import load_spec

    out = Path(smoke_cohort).parents[1] / "shards"
    spec = load_spec(REPO / "shards" / "smoke.yaml", {"manifest": smoke_cohort, "out": out})
    return build_shards(spec, progress=False).out
