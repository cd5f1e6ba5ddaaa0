"""disyre: its paper's defaults, overfitting one corrupted batch, the training target and
t from the corruption record, and the mean-over-t map through the sliding-window kernel."""

import numpy as np
import pytest
import torch

from adsys.infer.scorer import VolumeScorer
from adsys.methods import build_method, method_config
from adsys.methods.disyre import record_steps
from adsys.scoring import importance_map, window_plan
from adsys.synth.corruption import make_corruption
from adsys.train.config import resolve_config
from tests.helpers import overfit_losses

DAG = {"window": 30, "tissue": "codebook"}


def _tiny(**inference):
    cfg = resolve_config("smoke", None, {"method": "disyre"}).method_config
    cfg = {**cfg, "inference": {**cfg.get("inference", {}), **inference}}  # a copy: no preset
    torch.manual_seed(0)
    method = build_method("disyre", cfg)
    with torch.no_grad():  # off the zero-initialised output conv
        for p in method.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return method.eval()


def _batch(corruption: str = "dag", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 40, 40, generator=g), 9, 1, 0)
    x = (x - x.amin()) / (x.amax() - x.amin())
    mask = torch.ones_like(x)
    options = DAG if corruption == "dag" else {"stages": [
        {"name": "spatial_augmentation", "options": {"mirror": 1.0}},
        {"name": "dag", "options": DAG}]}
    res = make_corruption(corruption, options)(x, mask, torch.Generator().manual_seed(seed))
    batch = {"image": x, "mask": mask, "corrupted": res.corrupted,
             "anomaly_mask": res.anomaly_mask, "corruption": {"params": res.params}}
    if res.target is not None:
        batch["target"] = res.target
    return batch


def test_paper_defaults():
    cfg = method_config("disyre")
    assert cfg.unet.model_channels * np.array(cfg.unet.channel_mult) == pytest.approx(
        [32, 64, 96, 128, 256, 256])
    assert cfg.unet.num_res_blocks == 2 and cfg.unet.attention_resolutions == (16,)
    assert cfg.data.mode == "patches" and cfg.data.patch_size == (128, 128) and cfg.data.dims == 2
    stages = [s["name"] for s in cfg.data.corruption.options["stages"]]
    assert stages == ["spatial_augmentation", "dag"] and cfg.data.val_corruption.name == "dag"
    rec = cfg.inference
    assert rec.t_values == (99, 74, 49, 24) and rec.members == "steps"
    assert rec.protocol == "disyre" and rec.map.kind == "l1"
    w = rec.window
    assert (w.roi, w.overlap, w.overlap_mode, w.sigma_scale, w.foreground_weight) == (
        (128, 128), 0.25, "step", 0.125, True)
    paper = resolve_config("paper", None, {"method": "disyre"})
    assert (paper.optimizer, paper.betas, paper.weight_decay, paper.lr) == (
        "adamw", (0.95, 0.999), 1e-6, 1e-4)
    assert (paper.lr_schedule, paper.warmup_steps, paper.grad_clip, paper.precision) == (
        "cosine", 500, 1.0, "bf16")
    with pytest.raises(ValueError, match="members to 'models'"):
        method_config("disyre", {"inference": {"restoration": "multi_step"}})
    with pytest.raises(ValueError, match="t_values"):
        method_config("disyre", {"inference": {"t_values": [100]}})


def test_trains_on_the_records_t_and_the_augmented_target():
    batch = _batch("chain")
    assert "target" in batch and not torch.equal(batch["target"], batch["image"])
    steps = record_steps(batch["corruption"]["params"])
    assert steps == [p["stages"][1]["t"] for p in batch["corruption"]["params"]]
    method = _tiny()
    seen = {}
    method.unet.register_forward_hook(lambda m, args, out: seen.update(t=args[1]))
    loss = method.training_loss(batch, torch.Generator())
    assert seen["t"].tolist() == steps
    want = torch.nn.functional.mse_loss(method._predict(batch["corrupted"], seen["t"]),
                                        batch["target"])
    torch.testing.assert_close(loss, want)
    with pytest.raises(ValueError, match="end with 'dag'"):
        record_steps([{"stages": [{"seed": 1}]}])


def test_overfits_one_batch():
    torch.manual_seed(0)
    method = build_method("disyre", resolve_config("smoke", None, {"method": "disyre"})
                          .method_config)
    first, last = overfit_losses(method, _batch(), 40, draws=None)
    assert last < 0.5 * first, (first, last)


def test_mean_over_t_through_the_kernel_equals_a_loop_over_t_and_windows():
    method = _tiny(window={"roi": [32, 32], "overlap": 0.25, "overlap_mode": "step",
                           "sw_batch_size": 7, "foreground_weight": True})
    g = torch.Generator().manual_seed(2)
    vol = torch.rand(40, 44, 3, generator=g) * (torch.rand(40, 44, 3, generator=g) > 0.3)
    _, raw = VolumeScorer([method], seed=0, device=torch.device("cpu"))(vol.numpy(), "s")

    ts, roi = method.config.inference.t_values, (32, 32)
    plan = window_plan((40, 44), roi, 0.25, overlap_mode="step")
    gauss = importance_map(roi)
    want = np.zeros((40, 44, 3), np.float32)
    for z in range(3):
        x = torch.nn.functional.pad(vol[..., z], (0, plan.padded[1] - 44, 0, plan.padded[0] - 40))
        acc, norm = torch.zeros(plan.padded), torch.zeros(plan.padded)
        for i in plan.grid.starts[0]:
            for j in plan.grid.starts[1]:
                w = x[i : i + 32, j : j + 32]
                fg = (w > 0).float().mean()
                res = sum((w - method.restore_step(w[None, None], t, torch.Generator())[0, 0])
                          .abs() for t in ts) / len(ts)
                acc[i : i + 32, j : j + 32] += gauss * fg * res
                norm[i : i + 32, j : j + 32] += gauss
        want[..., z] = (acc / norm)[:40, :44].numpy()
    np.testing.assert_allclose(raw, want, atol=1e-5)


def test_multi_step_restoration_is_an_option():
    method = _tiny(members="models", restoration="multi_step")
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    a = method.restore(x, torch.Generator())
    assert torch.equal(a, method.restore(x, torch.Generator()))
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    single = _tiny(members="models").restore(x, torch.Generator())
    assert not torch.allclose(a, single)
