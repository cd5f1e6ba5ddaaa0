"""The inference recipe: saved with the model, overridden by the run, recorded as used; the
scorer's paths (restore + map, or a method's own map); ensembles that must agree."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from adsys.errors import InputError
from adsys.infer.cli import add_infer_arguments, config_from_args
from adsys.infer.config import InferConfig
from adsys.infer.scorer import VolumeScorer, ensemble_recipe
from adsys.methods import build_method
from adsys.methods.base import InferenceRecipe, Method, MethodConfig
from adsys.methods.export import export_model, load_exported
from adsys.scoring.config import MapConfig


class _HalfConfig(MethodConfig):
    method: str = "half-distance"
    inference: InferenceRecipe = InferenceRecipe(map=MapConfig(kind="method"))


class _Half(Method):
    """A method whose map is its own: the distance of each voxel from 0.5."""

    config_cls = _HalfConfig

    def anomaly_map(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (images - 0.5).abs()


def test_a_methods_own_map_goes_through_the_scorer_without_a_reconstruction():
    image = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    rec, raw = VolumeScorer([_Half(_HalfConfig())], seed=0, device=torch.device("cpu"))(
        image, "sub-1")
    assert rec is None
    np.testing.assert_allclose(raw, np.abs(image - 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="no anomaly_map"):
        build_method("ddpm", {"inference": {"map": {"kind": "method"}}})


def test_an_ensemble_must_agree_on_map_window_and_protocol():
    ddpm = build_method("ddpm").config
    upd = build_method("ddpm", {"inference": {"protocol": "upd"}}).config
    cddpm = build_method("cddpm", {"encoder": {"depth": 18, "width": 8, "out_dim": 8}}).config
    assert ensemble_recipe([ddpm, cddpm]).protocol == "behrendt"  # t values may differ
    with pytest.raises(InputError, match="disagree on inference.protocol"):
        ensemble_recipe([ddpm, upd])


def test_overrides_are_validated_against_the_model_and_name_it(tmp_path):
    method = build_method("ddpm", {"unet": {"model_channels": 32, "channel_mult": [1],
                                            "num_res_blocks": 1, "num_head_channels": 16}})
    export_model(tmp_path, "ddpm", method.config, method.state_dict())
    loaded, _ = load_exported(tmp_path, inference={"t_values": [99, 199]})
    assert loaded.config.inference.t_values == (99, 199)
    assert loaded.config.inference.protocol == "behrendt"  # the rest of the recipe kept
    with pytest.raises(InputError, match=rf"{tmp_path}.*inference.t_values"):
        load_exported(tmp_path, inference={"t_values": [5000]})
    with pytest.raises(InputError, match="inference.patch_size: unknown key"):
        load_exported(tmp_path, inference={"patch_size": 4})
    with pytest.raises(ValueError, match="inference.protocol"):
        InferConfig(models=[tmp_path], cohort=tmp_path, inference={"protocol": "nope"})


def test_cli_flags_become_recipe_overrides(tmp_path):
    p = argparse.ArgumentParser()
    add_infer_arguments(p)
    args = p.parse_args(["--model", str(tmp_path), "--cohort", str(tmp_path), "--t-values",
                         "99", "--protocol", "upd", "--overlap", "0.5",
                         "--set", "inference.map.ssim_data_range=255", "--set", "seed=4"])
    cfg = config_from_args(args)
    assert cfg.seed == 4
    assert cfg.inference == {"t_values": (99,), "protocol": "upd", "window": {"overlap": 0.5},
                             "map": {"ssim_data_range": 255}}


def test_synthetic_pair_inputs_and_the_healthy_mask_are_checked(tmp_path):
    from adsys.infer.sources import open_source

    p = argparse.ArgumentParser()
    add_infer_arguments(p)
    args = p.parse_args(["--model", str(tmp_path), "--cohort", str(tmp_path), "--inputs",
                         "variants", "--mask", "healthy"])
    cfg = config_from_args(args)
    assert (cfg.inputs, cfg.mask) == ("variants", "healthy")
    with pytest.raises(ValueError, match="only for synthetic pairs"):
        InferConfig(models=[tmp_path], cohort=tmp_path, mask="healthy")
    # the mask changes post-processing, so it is part of a subject's output identity
    a = InferConfig(models=[tmp_path], cohort=tmp_path, inputs="variants")
    assert a.scoring_digest([]) != a.model_copy(update={"mask": "healthy"}).scoring_digest([])
    with pytest.raises(InputError, match="no synthetic pairs"):
        open_source(tmp_path / "cohort.csv", {}, "variants")


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_records_the_recipe_it_used(smoke_model, smoke_shards, tmp_path):
    from adsys.infer.job import run_inference

    config = InferConfig(models=[smoke_model], cohort=smoke_shards, out=tmp_path,
                         splits=("test",), threshold="none", overlays=False, native=False,
                         inference={"t_values": [99], "protocol": "upd"})
    result = run_inference(config, progress=False)
    assert not result.failed and result.summary["protocol"]["name"] == "upd"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["recipe"]["protocol"] == "upd" and run["recipe"]["map"]["kind"] == "l1"
    used = run["model_configs"][0]["config"]["inference"]
    saved = json.loads((smoke_model / "config.json").read_text())["config"]["inference"]
    assert used["t_values"] == [99] and saved["t_values"] == [249, 499, 749]
