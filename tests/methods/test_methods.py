import pytest
import torch

from adsys.methods import build_method
from adsys.methods.cddpm import CDDPMConfig

TINY_UNET = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=16)
TINY = {
    "ddpm": {"unet": TINY_UNET},
    "cddpm": {"unet": TINY_UNET, "encoder": {"depth": 18, "width": 8, "out_dim": 32}},
}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth blobs in [0, 1], like brain slices
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 40, 40, generator=g), 9, 1, 0)
    return (x - x.amin()) / (x.amax() - x.amin())


@pytest.mark.parametrize("name", ["ddpm", "cddpm"])
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    cfg = {**TINY[name], "augment": False} if name == "cddpm" else TINY[name]
    method = build_method(name, cfg)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    batch = {"image": _batch()}
    losses = []
    for step in range(120):
        g = torch.Generator().manual_seed(step % 4)  # a fixed set of (t, noise) draws
        loss = method.training_loss(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("name", ["ddpm", "cddpm"])
def test_restore_is_seeded_and_in_range(name):
    method = build_method(name, TINY[name]).eval()
    x = _batch(1)
    a = method.restore(x, torch.Generator().manual_seed(3))
    b = method.restore(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_reference_defaults():
    ddpm = build_method("ddpm").config
    assert (ddpm.schedule, ddpm.timesteps, ddpm.prediction) == ("cosine", 1000, "x0")
    assert ddpm.noise.kind == "simplex" and not ddpm.noise.per_sample
    assert ddpm.restore_steps() == (500,)
    cfg = CDDPMConfig()
    assert cfg.restore_steps() == (250, 500, 750)
    assert cfg.encoder.depth == 50 and cfg.unet_config().cond_dim == 512
    assert CDDPMConfig(encoder={"out_dim": 128}).unet_config().cond_dim == 128  # paper's d
    with pytest.raises(ValueError, match="cond_dim"):
        CDDPMConfig(unet={"cond_dim": 64})
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope")


def test_cddpm_augmentation_is_seeded_and_only_in_training():
    method = build_method("cddpm", TINY["cddpm"])
    x = _batch(2)
    a = method.augment(x, torch.Generator().manual_seed(5))
    b = method.augment(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    outs = [method.augment(x, torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.allclose(o, x) for o in outs)
    method.eval()
    assert torch.equal(method.augment(x, torch.Generator().manual_seed(5)), x)
