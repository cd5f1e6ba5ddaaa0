"""A smoke model trained once per session on the smoke shards, and one inference run on it.

``smoke_shards`` (demo cohort: 3 train / 1 val / 2 test at 4 mm, 44×52×44; test subjects
carry ground-truth lesions) comes from the training tests' fixture; ``ray_session`` is the
session's one local Ray.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures

SMOKE_TRAINING = {
    "max_steps": 40,
    "lr": 2e-3,
    "batch_size": 8,
    "checkpoint_every": 40,
    "val_every": 40,
    "method_config": {"data": {"min_brain_fraction": 0.1}},
    "seed": 0,
}


@pytest.fixture(scope="session")
def smoke_model(smoke_shards, tmp_path_factory) -> Path:  # noqa: F811
    """An exported cddpm (the smoke preset's tiny UNet) trained for a few dozen steps."""
    from adsys.train.config import resolve_config
    from adsys.train.job import run_training

    runs = tmp_path_factory.mktemp("infer-runs")
    cfg = resolve_config(
        "smoke", None,
        {"shards": smoke_shards, "storage_path": runs, "name": "smoke", **SMOKE_TRAINING},
    )
    result = run_training(cfg)
    assert result.error is None, result.error
    return runs / "smoke" / "export"


@pytest.fixture(scope="session")
def smoke_cohort_manifest(smoke_cohort) -> Path:  # noqa: F811
    """The raw (native-space) cohort manifest the smoke shards were built from."""
    return Path(smoke_cohort)


@pytest.fixture(scope="session")
def smoke_inference(smoke_model, smoke_shards, tmp_path_factory):  # noqa: F811
    """One complete inference run on the smoke cohort store (val + test)."""
    from adsys.infer.config import InferConfig
    from adsys.infer.job import run_inference

    out = tmp_path_factory.mktemp("infer") / "out"
    config = InferConfig(models=[smoke_model], cohort=smoke_shards, out=out,
                         threshold="val-fpr=0.05", zarr=True)
    return config, run_inference(config, progress=False)
