"""The latent methods' pipeline on real Ray: ``aekl`` trains, then ``conddiff`` (encoding on
the fly) and ``cldm`` (from a latent shard set written once with the export) train on its
frozen export with 2 workers and ZeRO-2, and all three infer end to end — their part of the
registry's contract test (:mod:`tests.methods.test_contract`)."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from adsys.infer.config import InferConfig
from adsys.infer.job import run_inference
from adsys.methods import method_config
from adsys.shards.latents import encode_shard_set
from adsys.train.config import resolve_config
from adsys.train.job import run_training
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _train_and_infer(shards, tmp_path, name: str, steps: int, train_shards=None,
                     infer: dict | None = None, **overrides) -> dict:
    """Train ``name``'s smoke preset through the real jobs (on ``train_shards``, default
    ``shards``), then infer on ``shards`` with its export (``infer``: InferConfig keys), and
    check what the contract test checks; returns the export's state."""
    cfg = resolve_config("smoke", None, {"method": name, "shards": train_shards or shards,
                                         "name": name, "storage_path": tmp_path,
                                         "max_steps": steps, **overrides})
    result = run_training(cfg)
    assert result.error is None, result.error
    export = tmp_path / name / "export"
    record = json.loads((export / "config.json").read_text())
    assert record["method"] == name and record["steps"] == steps
    assert record["config"]["inference"] == cfg.method_spec().inference.model_dump(mode="json")
    out = tmp_path / f"infer-{name}"
    inferred = run_inference(InferConfig(models=[export], cohort=shards, out=out,
                                         threshold="none", **(infer or {})), progress=False)
    if infer:  # the synthetic pairs: val 1 subject x 2 variants, test 2 x 1
        assert sorted(inferred.processed) == ["sub-0003_fluid-0", "sub-0003_fluid-1",
                                              "sub-0004_fluid-0", "sub-0005_fluid-0"]
    else:
        assert not inferred.failed and len(inferred.processed) == 3  # 1 val + 2 test subjects
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == record["config"]["inference"]
    assert inferred.summary["protocol"]["name"] == run["recipe"]["protocol"] == "conddiff"
    assert inferred.summary["per_volume"]["ap"]["n"] == 2
    return load_file(str(export / "model.safetensors"))


def test_aekl_then_conddiff_and_cldm_with_two_workers_zero2(smoke_shards, tmp_path):  # noqa: F811
    ae_state = _train_and_infer(smoke_shards, tmp_path, "aekl", steps=3)
    ae = tmp_path / "aekl" / "export"
    latents = encode_shard_set(smoke_shards, ae, tmp_path / "latents", progress=False,
                               pad_multiple=method_config("cldm", {"unet": {
                                   "channel_mult": [1, 2]}}).pad_multiple)  # smoke's: 16
    for name, data in (("conddiff", None), ("cldm", latents.out)):
        # conddiff is evaluated on the synthetic pairs with the healthy-reference mask
        infer = {"inputs": "variants", "mask": "healthy"} if name == "conddiff" else None
        state = _train_and_infer(
            smoke_shards, tmp_path, name, steps=2, num_workers=2, zero_stage=2,
            train_shards=data, infer=infer,
            method_config={"autoencoder_path": os.path.relpath(ae),  # relative to this cwd
                           "latents_from_shards": data is not None})
        run = tmp_path / name
        assert json.loads((run / "export" / "config.json").read_text())["train"][
            "zero_stage"] == 2
        ckpt = sorted(run.glob("checkpoint_0*"))[-1]
        assert len(list(ckpt.rglob("zero_pp_rank_*_optim_states.pt"))) == 2  # both ranks
        for key, value in ae_state.items():  # the frozen autoencoder, unchanged by training
            if key.startswith("autoencoder."):
                assert torch.equal(state[key], value), key
        assert float(state["latent_scale"]) == pytest.approx(1 / float(ae_state["latent_std"]))
