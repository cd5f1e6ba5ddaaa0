import json

import pytest
import torch

from adsys.methods import build_method
from adsys.train.config import PRESETS, TrainConfig
from adsys.train.ema import EMA
from adsys.train.export import export_model, load_exported
from adsys.train.job import resolve_config
from adsys.train.loop import deepspeed_config, rank_seed


def test_ema_follows_the_closed_form():
    lin = torch.nn.Linear(3, 1)
    ema = EMA(lin, decay=0.9)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    torch.testing.assert_close(ema.state_dict()["weight"], start + 0.1)
    fresh = torch.nn.Linear(3, 1)
    fresh.load_state_dict(ema.state_dict())
    torch.testing.assert_close(fresh.weight, start + 0.1)


def test_export_then_load_without_deepspeed_restores_identically(tmp_path):
    cfg = PRESETS["smoke"]["method_config"]
    torch.manual_seed(0)
    method = build_method("cddpm", cfg)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export_model(tmp_path, "cddpm", method.config.model_dump(mode="json"), method.state_dict())
    loaded, meta = load_exported(tmp_path)
    assert meta["method"] == "cddpm"
    assert json.loads((tmp_path / "config.json").read_text())["config"]["encoder"]["out_dim"] == 32
    x = torch.rand(2, 1, 32, 32)
    method.eval()
    torch.testing.assert_close(
        loaded.restore(x, torch.Generator().manual_seed(1)),
        method.restore(x, torch.Generator().manual_seed(1)),
    )


def test_config_layers_and_validation():
    cfg = resolve_config("smoke", {"lr": 5e-4, "method_config": {"t_test": 400}}, {"max_steps": 9})
    assert cfg.max_steps == 9 and cfg.lr == 5e-4 and cfg.batch_size == 4
    assert cfg.method_config["t_test"] == 400 and "unet" in cfg.method_config
    with pytest.raises(ValueError):
        TrainConfig(zero_stage=3)
    with pytest.raises(ValueError):
        TrainConfig(max_steps=0)


def test_deepspeed_config_and_seeds():
    cfg = TrainConfig(zero_stage=2, batch_size=8, grad_clip=0.5)
    ds = deepspeed_config(cfg, on_gpu=False)
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is False and deepspeed_config(cfg, True)["bf16"]["enabled"]
    assert "optimizer" not in ds  # client torch Adam: no fused_adam JIT build
    assert rank_seed(1, "train", 0) == rank_seed(1, "train", 0) != rank_seed(1, "train", 1)
