import math

import pytest
import torch

from adsys.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    eps_from_x0,
    q_sample,
    reconstruct_ensemble,
    reconstruct_x0,
    x0_from_eps,
)


def test_cosine_schedule_matches_closed_form():
    s = NoiseSchedule("cosine", 1000)

    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in [0, 1, 249, 499, 749, 990]:
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5, abs=1e-7)
    assert s.betas.max().item() == pytest.approx(0.999)  # clipped at the end
    assert torch.all(s.betas > 0)


def test_linear_schedule_matches_closed_form():
    s = NoiseSchedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(2e-2)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    expected = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(s.alphas_cumprod, expected.float())
    # rescaled for other T: same end-point noise range
    s100 = NoiseSchedule("linear", 100)
    assert s100.betas[-1].item() == pytest.approx(0.2)


def test_q_sample_and_conversions_round_trip():
    s = NoiseSchedule()
    x0, n = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    xt = q_sample(s, x0, t, n)
    a = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(xt, a.sqrt() * x0 + (1 - a).sqrt() * n)
    torch.testing.assert_close(x0_from_eps(s, xt, t, n)[:3], x0[:3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_from_x0(s, xt, t, x0), n, atol=1e-3, rtol=1e-3)


def _oracle(s, target, prediction):
    """A perfect model for a dataset holding one image ``target``."""

    def fn(x_t, t):
        x0 = target.expand_as(x_t)
        return x0 if prediction == "x0" else eps_from_x0(s, x_t, t, x0)

    return fn


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_samplers_reach_the_data_with_a_perfect_model(prediction):
    s = NoiseSchedule("cosine", 200)
    target = torch.rand(1, 1, 6, 6)
    g = torch.Generator().manual_seed(0)

    def noise(shape):
        return torch.randn(shape, generator=g)

    fn = _oracle(s, target, prediction)
    x_T = noise((2, 1, 6, 6))
    torch.testing.assert_close(
        ddim_sample(fn, s, x_T, steps=20, prediction=prediction),
        target.expand(2, -1, -1, -1),
        atol=1e-3,
        rtol=1e-3,
    )
    torch.testing.assert_close(
        ddpm_sample(fn, s, x_T, noise, prediction=prediction),
        target.expand(2, -1, -1, -1),
        atol=1e-3,
        rtol=1e-3,
    )
    out = ddim_sample(fn, s, x_T, steps=10, noise_fn=noise, prediction=prediction, eta=1.0)
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1), atol=1e-3, rtol=1e-3)


def test_one_step_reconstruction_and_ensemble_mean():
    s = NoiseSchedule()
    x0 = torch.rand(2, 1, 8, 8)
    calls = []

    def fn(x_t, t):  # returns x_t itself: the recon is the noised input
        calls.append(int(t[0]))
        return x_t

    n = torch.randn_like(x0)
    r = reconstruct_x0(fn, s, x0, 500, n)
    torch.testing.assert_close(r, q_sample(s, x0, torch.tensor([500, 500]), n))
    noises = iter([torch.randn_like(x0) for _ in range(3)])
    held = []

    def noise_fn(shape):
        held.append(next(noises))
        return held[-1]

    calls.clear()
    ens = reconstruct_ensemble(fn, s, x0, [250, 500, 750], noise_fn)
    assert calls == [250, 500, 750]
    expected = (
        sum(
            q_sample(s, x0, torch.tensor([t, t]), nz)
            for t, nz in zip([250, 500, 750], held, strict=True)
        )
        / 3
    )
    torch.testing.assert_close(ens, expected)


def test_leading_timesteps_are_diffusers_ddpm_set_timesteps():
    from adsys.diffusion import leading_timesteps

    ts = leading_timesteps(1000, 50)  # Baugh et al.: set_timesteps(50) -> 980, 960, ..., 0
    assert ts[:3] == [980, 960, 940] and ts[-1] == 0 and len(ts) == 50
    assert leading_timesteps(10, 3) == [6, 3, 0]
    with pytest.raises(ValueError):
        leading_timesteps(10, 11)


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_strided_ancestral_sampling_reaches_the_data_and_clips_x0(prediction):
    from adsys.diffusion import leading_timesteps

    s = NoiseSchedule("linear", 1000)
    target = torch.rand(1, 1, 6, 6) * 0.5
    g = torch.Generator().manual_seed(1)

    def noise(shape):
        return torch.randn(shape, generator=g)

    x_T = noise((2, 1, 6, 6))
    out = ddpm_sample(_oracle(s, target, prediction), s, x_T, noise, prediction=prediction,
                      timesteps=leading_timesteps(1000, 50), clip_x0=1.0)
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1), atol=1e-3, rtol=1e-3)
    # an x0 far outside [-1, 1] is clipped at every step, so the chain ends inside it
    wild = ddpm_sample(_oracle(s, target + 5, prediction), s, x_T, noise,
                       prediction=prediction, timesteps=leading_timesteps(1000, 50),
                       clip_x0=1.0)
    assert wild.abs().max() <= 1.0 + 1e-4 and (wild > 0.99).float().mean() > 0.99
    with pytest.raises(ValueError, match="descending"):
        ddpm_sample(_oracle(s, target, prediction), s, x_T, noise, timesteps=[0, 20])


def test_consecutive_timesteps_are_the_per_step_sampler():
    """Every step as ``timesteps`` gives Ho et al.'s chain (β_t from ᾱ_t/ᾱ_{t−1})."""
    s = NoiseSchedule("cosine", 50)
    calls = []

    def fn(x_t, t):
        calls.append(int(t[0]))
        return 0.3 * x_t

    outs = []
    for ts in (None, list(range(49, -1, -1))):
        g = torch.Generator().manual_seed(2)
        outs.append(ddpm_sample(fn, s, torch.ones(1, 1, 4, 4),
                                lambda shape, g=g: torch.randn(shape, generator=g),
                                timesteps=ts))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert calls[:50] == list(range(49, -1, -1))
