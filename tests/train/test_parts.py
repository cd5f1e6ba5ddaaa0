import argparse

import pytest
import torch

from adsys.errors import InputError
from adsys.seeding import derive_seed
from adsys.train.cli import add_train_arguments, config_from_args
from adsys.train.config import TrainConfig, resolve_config
from adsys.train.data import data_workers
from adsys.train.ema import EMA
from adsys.train.engine import deepspeed_config


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


def test_config_layers_merge_key_by_key():
    cfg = resolve_config("smoke", {"lr": 5e-4, "method_config": {"inference": {"t_values": [99]}}},
                         {"max_steps": 9})
    assert cfg.max_steps == 9 and cfg.lr == 5e-4 and cfg.batch_size == 4
    spec = cfg.method_spec()
    assert spec.inference.t_values == (99,) and spec.unet.model_channels == 32  # preset kept
    assert spec.inference.protocol == "behrendt"  # the method's recipe, merged into
    with pytest.raises(ValueError):
        TrainConfig(zero_stage=3)
    with pytest.raises(ValueError):
        TrainConfig(max_steps=0)


def test_zero_stage_auto_resolves_per_world_size_and_is_recorded():
    assert TrainConfig().zero_stage == 0  # one rank: nothing to partition, all-reduce skipped
    assert TrainConfig(num_workers=4).zero_stage == 1  # optimizer states partitioned
    assert TrainConfig(num_workers=4, zero_stage=2).zero_stage == 2  # a given stage is kept
    assert TrainConfig(zero_stage=1).zero_stage == 1
    cfg = resolve_config("smoke", {"num_workers": 2}, None)
    assert cfg.model_dump(mode="json")["zero_stage"] == 1  # what checkpoints and export record
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")).zero_stage == 1
    with pytest.raises(ValueError):
        TrainConfig(zero_stage="max")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    for flag, workers, stage in (("auto", "2", 1), ("0", "2", 0), ("2", "1", 2)):
        args = parser.parse_args(["--preset", "smoke", "--zero-stage", flag,
                                  "--num-workers", workers])
        assert config_from_args(args).zero_stage == stage


def test_demo_preset_follows_the_method():
    ddpm = resolve_config("demo", None, {"method": "ddpm"})
    assert ddpm.method == "ddpm" and "encoder" not in ddpm.method_config
    assert ddpm.method_spec().data.min_brain_fraction == 0.05
    cddpm = resolve_config("demo", None, None)  # the default method
    assert cddpm.method == "cddpm" and cddpm.method_spec().encoder.out_dim == 128


def test_editing_a_resolved_config_never_changes_the_preset():
    from adsys.methods import method_class

    first = resolve_config("smoke", None, {"method": "ddpm"})
    first.method_config["unet"]["model_channels"] = 999
    assert method_class("ddpm").presets["smoke"]["method_config"]["unet"]["model_channels"] != 999
    assert resolve_config("smoke", None, {"method": "ddpm"}) != first


def test_a_wrong_key_fails_in_one_line_naming_the_key_and_the_method(tmp_path):
    with pytest.raises(InputError) as err:
        resolve_config("demo", {"method": "ddpm", "method_config": {"encoder": {"depth": 18}}},
                       source=tmp_path / "train.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "method 'ddpm'" in msg and "method_config.encoder" in msg
    assert str(tmp_path / "train.yaml") in msg
    with pytest.raises(InputError, match="unknown method 'dpm'; known: aekl, cddpm, cldm"):
        resolve_config("smoke", None, {"method": "dpm"})
    with pytest.raises(InputError, match="lrr: unknown key"):
        resolve_config("smoke", None, {"lrr": 1})


def test_deepspeed_config_and_seeds():
    cfg = TrainConfig(zero_stage=2, batch_size=8, grad_clip=0.5)
    ds = deepspeed_config(cfg, on_gpu=False)
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_clipping"] == 0.5
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]  # CPU: fp32
    assert deepspeed_config(cfg, True)["bf16"]["enabled"]  # auto = bf16 on GPU
    fp16 = deepspeed_config(TrainConfig(precision="fp16"), True)
    assert fp16["fp16"]["enabled"] and not fp16["bf16"]["enabled"]
    assert not deepspeed_config(TrainConfig(precision="fp16"), False)["fp16"]["enabled"]
    assert "optimizer" not in ds  # client torch Adam: no fused_adam JIT build
    assert derive_seed("train", 1, 0) == derive_seed("train", 1, 0) != derive_seed("train", 1, 1)


def test_data_workers_auto_leaves_a_core_for_the_rank():
    assert data_workers(3) == 3 and data_workers(0) == 0
    import os

    cpus = len(os.sched_getaffinity(0))
    expected = 0 if cpus < 2 else max(1, cpus - 1)
    assert data_workers("auto") == expected
    assert data_workers("auto", local_world=cpus) == (0 if cpus < 2 else 1)  # at least one


def test_optimizer_and_lr_schedule_keys_reach_deepspeed():
    from adsys.train.engine import make_optimizer

    plain = TrainConfig(method="ddpm")
    assert "scheduler" not in deepspeed_config(plain, on_gpu=False)  # defaults unchanged
    assert isinstance(make_optimizer(torch.nn.Linear(2, 1), plain), torch.optim.Adam)
    cfg = TrainConfig(method="ddpm", optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6,
                      lr_schedule="cosine", warmup_steps=500, max_steps=100_000)
    assert deepspeed_config(cfg, on_gpu=False)["scheduler"] == {
        "type": "WarmupCosineLR", "params": {
            "total_num_steps": 100_000, "warmup_num_steps": 500, "warmup_type": "linear",
            "warmup_min_ratio": 0.0, "cos_min_ratio": 0.0}}
    opt = make_optimizer(torch.nn.Linear(2, 1), cfg)
    group = opt.param_groups[0]
    assert type(opt) is torch.optim.AdamW
    assert (group["betas"], group["weight_decay"], group["lr"]) == ((0.95, 0.999), 1e-6, 1e-4)
    with pytest.raises(ValueError, match="warmup_steps needs lr_schedule 'cosine'"):
        TrainConfig(method="ddpm", warmup_steps=10)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(method="ddpm", betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="must be below max_steps"):
        TrainConfig(method="ddpm", lr_schedule="cosine", warmup_steps=10, max_steps=10)


def test_resume_refuses_another_model_or_zero_stage_and_allows_schedule_changes(tmp_path):
    from adsys.train.checkpoint import CONFIG_FILE, check_resume

    cfg = resolve_config("smoke", {"storage_path": tmp_path, "name": "run"}, None)
    check_resume(cfg)  # no checkpoint yet: a new run
    saved = cfg.run_dir / "checkpoint_000010" / CONFIG_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text(cfg.model_dump_json())
    check_resume(cfg.model_copy(update={"max_steps": cfg.max_steps * 2}))
    for change, named in (({"zero_stage": 1}, "zero_stage: 0 -> 1"),
                          ({"method": "ddpm"}, "method: 'cddpm' -> 'ddpm'")):
        with pytest.raises(InputError, match=named.replace("'", ".")):
            check_resume(cfg.model_copy(update=change))
