"""The method contract, checked for every registered method (a new method gets these free).

Config round trip, presets, export → load → restore, deterministic restore, and the method's
``smoke`` preset through the real jobs: shards → Ray Train + DeepSpeed → Ray Data inference.
"""

from __future__ import annotations

import json

import pytest
import torch

from adsys.methods import PRESET_NAMES, build_method, method_class, method_config, method_names
from adsys.methods.export import export_model, load_exported
from adsys.train.config import TrainConfig, resolve_config
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures

METHODS = method_names()
# methods trained on another's export run the real jobs in their pipeline test instead
# (tests/train/test_latent_pipeline.py: aekl, then conddiff and cldm on it, all inferred);
# the smoke benchmark (tests/benchmark/test_benchmark.py) trains and infers ddpm, cddpm and
# every baseline through the same real jobs
PIPELINE_TESTED = {"aekl", "conddiff", "cldm", "ddpm", "cddpm"} | {
    m for m in method_names() if not method_class(m).trainable}


def _smoke(name: str):
    """Method ``name`` with its smoke preset's config, weights perturbed off their init (the
    zero-initialised output conv would make every restoration trivially equal)."""
    torch.manual_seed(0)
    method = build_method(name, resolve_config("smoke", None, {"method": name}).method_config)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if not method.trainable:  # a baseline: its statistics from a few random volumes
        method.fit([{"image": _images(method, n=3)}])
    return method.eval()


def _run(method, x: torch.Tensor, seed: int) -> torch.Tensor:
    """What inference calls: the method's own map (map kind ``method``) or its restoration."""
    call = method.anomaly_map if method.config.inference.map.kind == "method" else method.restore
    return call(x, torch.Generator().manual_seed(seed))


def _images(method, n: int = 2, size: int = 32) -> torch.Tensor:
    dims = method.config.data.dims
    g = torch.Generator().manual_seed(7)
    return torch.rand(n, 1, *(size,) * dims, generator=g)


def test_registry_lists_the_methods_and_names_the_unknown():
    assert {"ddpm", "cddpm"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method 'nope'; known: .*cddpm"):
        method_class("nope")


@pytest.mark.parametrize("name", METHODS)
def test_config_round_trips_through_json(name):
    cfg = method_config(name)
    again = method_config(name, json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert again == cfg and again.method == name
    assert method_config(name, cfg) == cfg


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_resolves_to_a_valid_training_config(name, preset):
    cfg = resolve_config(preset, None, {"method": name})
    assert isinstance(cfg, TrainConfig) and cfg.method_spec().method == name
    assert preset in method_class(name).presets  # declared next to the method


@pytest.mark.parametrize("name", METHODS)
def test_export_then_load_restores_like_the_model_in_memory(name, tmp_path):
    method = _smoke(name)
    export_model(tmp_path, name, method.config, method.state_dict())
    loaded, record = load_exported(tmp_path)
    assert record["method"] == name and loaded.config == method.config
    x = _images(method)
    torch.testing.assert_close(_run(loaded, x, 1), _run(method, x, 1))


@pytest.mark.parametrize("name", METHODS)
def test_restore_is_deterministic_given_the_generator_and_in_range(name):
    method = _smoke(name)
    x = _images(method)
    a, b = _run(method, x, 3), _run(method, x, 3)
    assert torch.equal(a, b)
    low, high = method.config.inference.map.score_range  # [0, 1] for a restoration
    assert a.shape == x.shape and a.min() >= low and a.max() <= high


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in METHODS if m not in PIPELINE_TESTED])
def test_smoke_preset_trains_and_infers_through_the_real_jobs(name, smoke_shards, tmp_path):  # noqa: F811
    from adsys.infer.config import InferConfig
    from adsys.infer.job import run_inference
    from adsys.train.job import run_training

    cfg = resolve_config("smoke", None, {"method": name, "shards": smoke_shards,
                                         "storage_path": tmp_path, "name": name,
                                         "max_steps": 3})
    result = run_training(cfg)
    assert result.error is None, result.error
    export = tmp_path / name / "export"
    record = json.loads((export / "config.json").read_text())
    assert record["method"] == name and record["steps"] == 3
    assert record["config"]["inference"] == cfg.method_spec().inference.model_dump(mode="json")
    out = tmp_path / "infer"
    inferred = run_inference(InferConfig(models=[export], cohort=smoke_shards, out=out,
                                         threshold="none"), progress=False)
    assert not inferred.failed and len(inferred.processed) == 3  # 1 val + 2 test subjects
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == record["config"]["inference"]  # the recipe it used, recorded
    assert inferred.summary["protocol"]["name"] == run["recipe"]["protocol"]
    assert inferred.summary["per_volume"]["ap"]["n"] == 2
