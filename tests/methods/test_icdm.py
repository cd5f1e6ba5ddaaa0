import pytest
import torch

from adsys.diffusion import leading_timesteps
from adsys.methods import build_method, method_config
from adsys.methods.icdm import min_snr_weight
from adsys.synth.tasks.folds import fold_tasks
from tests.helpers import overfit_losses


def _method(**over):
    cfg = method_config("icdm", {"unet": {"model_channels": 16, "channel_mult": [1, 2],
                                          "num_res_blocks": 1, "attention_resolutions": [],
                                          "num_head_channels": 16}, **over})
    torch.manual_seed(0)
    return build_method("icdm", cfg)


def _capture(method):
    """Record the UNet's (input, t) of every call; the UNet then predicts zeros."""
    calls = []

    def fake(x, t, cond=None):
        calls.append((x.clone(), t.clone()))
        return torch.zeros_like(x[:, :1])

    method.unet.forward = fake
    return calls


def test_fold_picks_training_and_held_out_validation_tasks():
    for fold in (0, 4, 9):
        data = method_config("icdm", {"fold": fold}).data
        train, val = fold_tasks(fold)
        assert data.corruption.name == data.val_corruption.name == "icdm_tasks"
        assert data.corruption.options["tasks"] == list(train)
        assert data.val_corruption.options["tasks"] == list(val)
        assert not set(train) & set(val) and len(train) == 3
    with pytest.raises(ValueError, match="fold"):
        method_config("icdm", {"fold": 10})
    with pytest.raises(ValueError, match="unet.dims"):
        method_config("icdm", {"unet": {"dims": 3}})


def test_min_snr_weight_caps_the_snr_at_gamma():
    m = _method()
    t = torch.tensor([0, 200, 500, 999])
    abar = m.schedule.alphas_cumprod[t]
    snr = abar / (1 - abar)
    w = min_snr_weight(m.schedule, t, 1.0)
    torch.testing.assert_close(w, torch.where(snr > 1, 1 / snr, torch.ones_like(snr)))
    assert w[0] < 0.01 and w[-1] == 1  # low noise: down-weighted; high noise: weight 1


@pytest.mark.parametrize("gamma", [1.0, None])
def test_loss_is_the_min_snr_weighted_eps_mse_conditioned_on_the_corrupted_slice(gamma):
    m = _method(min_snr_gamma=gamma, offset_noise=0.0)
    calls = _capture(m)
    clean = torch.rand(6, 1, 16, 16)
    corrupted = torch.rand(6, 1, 16, 16)
    loss = m.training_loss({"image": clean, "corrupted": corrupted},
                           torch.Generator().manual_seed(3))
    (x, t), = calls
    assert x.shape[1] == 2 and torch.equal(x[:, 1:], corrupted)  # the condition, as given
    abar = m.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = (x[:, :1] - abar.sqrt() * clean) / (1 - abar).sqrt()  # the noise x_t was made with
    per_sample = eps.pow(2).flatten(1).mean(1)  # the UNet predicted 0
    w = min_snr_weight(m.schedule, t, gamma) if gamma else torch.ones(6)
    torch.testing.assert_close(loss, (w * per_sample).mean(), rtol=1e-4, atol=1e-5)


def test_offset_noise_shifts_each_samples_noise_by_one_draw():
    means = {}
    for offset in (0.0, 0.1):
        m = _method(offset_noise=offset)
        calls = _capture(m)
        clean = torch.zeros(256, 1, 32, 32)
        m.training_loss({"image": clean, "corrupted": clean}, torch.Generator().manual_seed(4))
        (x, t), = calls
        abar = m.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        means[offset] = (x[:, :1] / (1 - abar).sqrt()).mean((1, 2, 3)).std()
    assert means[0.0] < 0.05  # ≈ 1/32: the spatial mean of white noise
    assert 0.08 < means[0.1] < 0.13  # ≈ sqrt(0.1² + 1/32²): one offset per sample


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_restore_generates_from_noise_over_leading_steps_conditioned_on_the_input(sampler):
    m = _method(inference={"sampler": sampler, "steps": 5})
    calls = _capture(m)
    images = torch.rand(3, 1, 16, 16)
    out = m.restore(images, torch.Generator().manual_seed(5))
    assert [int(t[0]) for _, t in calls] == leading_timesteps(1000, 5) == [800, 600, 400, 200, 0]
    assert all(torch.equal(x[:, 1:], images) for x, _ in calls)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    again = m.restore(images, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)


def test_restore_with_a_real_network_is_seeded():
    m = _method(inference={"sampler": "ddpm", "steps": 3}).eval()
    images = torch.rand(2, 1, 16, 16)
    a = m.restore(images, torch.Generator().manual_seed(1))
    b = m.restore(images, torch.Generator().manual_seed(1))
    c = m.restore(images, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_overfits_one_batch():
    """A fixed (clean, corrupted) batch and a fixed set of (t, noise) draws: the min-SNR
    ε loss falls below half its start."""
    from adsys.train.config import resolve_config

    torch.manual_seed(0)
    method = build_method("icdm", resolve_config("smoke", None, {"method": "icdm"})
                          .method_config)
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 40, 40, generator=g), 9, 1, 0)
    clean = (clean - clean.amin()) / (clean.amax() - clean.amin())
    batch = {"image": clean, "corrupted": (clean + 0.3 * (clean > 0.6)).clamp(0, 1)}
    first, last = overfit_losses(method, batch, 120)
    assert last < 0.5 * first, (first, last)
