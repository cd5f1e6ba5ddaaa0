"""Learned-variance diffusion (improved DDPM): KL, discretised decoder likelihood, VLB in bits,
the hybrid loss's gradient split and the ancestral sampler, checked against float64 closed
forms computed here from β and ᾱ."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from adsys.diffusion import (
    NoiseSchedule,
    ddpm_sample,
    discretized_gaussian_log_likelihood,
    eps_from_x0,
    hybrid_loss,
    learned_ddpm_sample,
    normal_kl,
    p_mean_variance,
    q_sample,
    vlb_term,
    x0_from_eps,
)

SHAPE = (4, 2, 3, 3, 3)  # (B, C, X, Y, Z)
T_MIX = torch.tensor([1, 10, 500, 999])


def _closed_form(T: int = 1000) -> dict[str, torch.Tensor]:
    """The linear schedule's β, α, ᾱ, ᾱ_prev and β̃ in float64, from scratch."""
    betas = torch.linspace(1e-4, 2e-2, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return {"beta": betas, "alpha": 1 - betas, "abar": abar, "abar_prev": abar_prev,
            "beta_tilde": betas * (1 - abar_prev) / (1 - abar)}  # fmt: skip


def _b(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return v[t].reshape(-1, 1, 1, 1, 1)


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(SHAPE, generator=g) * 2 - 1
    noise = torch.randn(SHAPE, generator=g)
    return x0, noise, g


def _kl64(m1, lv1, m2, lv2):
    return 0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def test_normal_kl_matches_closed_form_and_torch():
    # N(0, 1) vs N(1, e): 0.5·(−1 + 1 − 0 + 1/e + 1/e) = 1/e
    kl = normal_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0))
    assert kl.item() == pytest.approx(1 / math.e, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4))
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)
    torch.testing.assert_close(normal_kl(m1, lv1, m1, lv1), torch.zeros(50, dtype=torch.float64))


@pytest.mark.parametrize(
    ("mean", "log_scale"), [(0.1, math.log(0.002)), (-0.95, math.log(0.3)), (1.2, math.log(2.0))]
)
def test_discretized_likelihood_is_a_distribution_over_the_256_bins(mean, log_scale):
    centres = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(
        centres, torch.full_like(centres, mean), torch.full_like(centres, log_scale)
    )
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)  # edge bins take the tails


def test_discretized_likelihood_matches_the_gaussian_bin_mass():
    """Within the tanh approximation of Φ (≤ 2e-4 from erf) of the exact bin mass."""
    x = torch.tensor([-1.0, -0.2, 0.0, 0.6, 1.0], dtype=torch.float64)
    means = torch.tensor([-0.99, -0.21, 0.0, 0.6, 0.98], dtype=torch.float64)
    scale = torch.tensor([0.01, 0.01, 0.002, 0.05, 0.02], dtype=torch.float64)
    cdf = Normal(means, scale).cdf
    exact = torch.where(x < -0.999, cdf(x + 1 / 255),
                        torch.where(x > 0.999, 1 - cdf(x - 1 / 255),
                                    cdf(x + 1 / 255) - cdf(x - 1 / 255)))  # fmt: skip
    got = discretized_gaussian_log_likelihood(x, means, scale.log()).exp()
    torch.testing.assert_close(got, exact, atol=4e-4, rtol=0)


def test_variance_interpolates_log_beta_tilde_to_log_beta():
    s, cf = NoiseSchedule("linear", 1000), _closed_form()
    x_t = torch.randn(SHAPE)
    t = torch.tensor([0, 1, 500, 999])
    for v, expected in [
        (-1.0, cf["beta_tilde"][t].clamp(min=cf["beta_tilde"][1])),  # β̃_0 → β̃_1
        (1.0, cf["beta"][t]),
        (0.0, (cf["beta"][t] * cf["beta_tilde"][t].clamp(min=cf["beta_tilde"][1])).sqrt()),
    ]:
        out = torch.cat([torch.zeros(SHAPE), torch.full(SHAPE, v)], dim=1)
        _, log_var, _ = p_mean_variance(s, out, x_t, t)
        expected = expected.log().float().reshape(-1, 1, 1, 1, 1).expand(SHAPE)
        torch.testing.assert_close(log_var, expected)


def _true_posterior(cf, x0, x_t, t):
    """μ̃ = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t and log β̃_t, float64."""
    x0, x_t = x0.double(), x_t.double()
    coef_x0 = cf["abar_prev"].sqrt() * cf["beta"] / (1 - cf["abar"])
    coef_xt = cf["alpha"].sqrt() * (1 - cf["abar_prev"]) / (1 - cf["abar"])
    mean = _b(coef_x0, t) * x0 + _b(coef_xt, t) * x_t
    return mean, _b(cf["beta_tilde"].log(), t)


def _eps_mean(cf, x_t, t, eps):
    """Ho et al. eq. 11: μ = (x_t − β_t/√(1−ᾱ_t)·ε)/√α_t, float64."""
    return (x_t.double() - _b(cf["beta"] / (1 - cf["abar"]).sqrt(), t) * eps.double()) / _b(
        cf["alpha"].sqrt(), t
    )


def _bits(kl: torch.Tensor) -> torch.Tensor:
    return kl.mean(dim=(1, 2, 3, 4)) / math.log(2)


def test_vlb_is_zero_when_the_model_is_the_true_posterior_and_known_for_v_plus_one():
    s, cf = NoiseSchedule("linear", 1000), _closed_form()
    x0, noise, _ = _case()
    x_t = q_sample(s, x0, T_MIX, noise)
    minus = vlb_term(s, torch.cat([noise, -torch.ones(SHAPE)], 1), x0, x_t, T_MIX)
    torch.testing.assert_close(minus, torch.zeros(4), atol=1e-6, rtol=0)
    plus = vlb_term(s, torch.cat([noise, torch.ones(SHAPE)], 1), x0, x_t, T_MIX)
    ratio = cf["beta"][T_MIX] / cf["beta_tilde"][T_MIX]
    expected = 0.5 * (-1 + ratio.log() + 1 / ratio) / math.log(2)
    assert expected.min() > 0 and expected[0] > 0.1  # a case that tells the two apart
    torch.testing.assert_close(plus, expected.float(), atol=1e-6, rtol=1e-4)


def test_vlb_with_a_mean_offset_is_the_gaussian_kl_in_bits():
    s, cf = NoiseSchedule("linear", 1000), _closed_form()
    x0, noise, g = _case(1)
    x_t = q_sample(s, x0, T_MIX, noise)
    eps = noise + 0.5 * torch.randn(SHAPE, generator=g)
    v = torch.rand(SHAPE, generator=g) * 2 - 1
    got = vlb_term(s, torch.cat([eps, v], 1), x0, x_t, T_MIX)
    true_mean, true_lv = _true_posterior(cf, x0, x_t, T_MIX)
    frac = (v.double() + 1) / 2
    model_lv = frac * _b(cf["beta"].log(), T_MIX) + (1 - frac) * true_lv  # t ≥ 1: β̃ unclipped
    expected = _bits(_kl64(true_mean, true_lv, _eps_mean(cf, x_t, T_MIX, eps), model_lv))
    assert expected.min() > 1e-3
    torch.testing.assert_close(got, expected.float(), atol=1e-6, rtol=1e-4)


def test_vlb_at_t0_is_the_decoder_nll_in_bits():
    s, cf = NoiseSchedule("linear", 1000), _closed_form()
    x0, noise, g = _case(2)
    x0 = (x0 * 127.5 + 127.5).round() / 127.5 - 1  # on the 256 bin centres, edges included
    x0[0, 0, 0, 0, :2] = torch.tensor([-1.0, 1.0])
    t = torch.zeros(4, dtype=torch.long)
    x_t = q_sample(s, x0, t, noise)
    eps = noise + 0.3 * torch.randn(SHAPE, generator=g)
    v = torch.rand(SHAPE, generator=g) * 2 - 1
    got = vlb_term(s, torch.cat([eps, v], 1), x0, x_t, t)
    mean = _eps_mean(cf, x_t, t, eps)  # at t = 0 the posterior mean is the x0 prediction
    frac = (v.double() + 1) / 2
    log_var = frac * cf["beta"][0].log() + (1 - frac) * cf["beta_tilde"][1].log()
    nll = -discretized_gaussian_log_likelihood(x0.double(), mean, 0.5 * log_var)
    torch.testing.assert_close(got, _bits(nll).float(), atol=1e-5, rtol=1e-4)
    # not the t > 0 branch: the KL to the clipped posterior is another number
    kl = _bits(_kl64(x0.double(), cf["beta_tilde"][1].log(), mean, log_var))
    assert (got.double() - kl).abs().min() > 0.1


def test_hybrid_loss_splits_gradients_mse_to_eps_and_vlb_to_v():
    s = NoiseSchedule("linear", 1000)
    x0, noise, g = _case(3)
    x_t = q_sample(s, x0, T_MIX, noise)
    eps = (noise + 0.5 * torch.randn(SHAPE, generator=g)).requires_grad_()
    v = (torch.rand(SHAPE, generator=g) * 2 - 1).requires_grad_()
    loss = hybrid_loss(s, torch.cat([eps, v], 1), x0, x_t, T_MIX, noise)
    assert loss.shape == (4,)
    loss.sum().backward()
    n = eps[0].numel()
    torch.testing.assert_close(eps.grad, 2 * (eps - noise).detach() / n)
    # v's gradient is the VLB's; the VLB alone would also pull on ε (the detach matters)
    eps2, v2 = eps.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    vlb = vlb_term(s, torch.cat([eps2, v2], 1), x0, x_t, T_MIX)
    vlb.sum().backward()
    torch.testing.assert_close(v.grad, v2.grad)
    assert v.grad.abs().max() > 0 and eps2.grad.abs().max() > 1e-3
    mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(loss, mse + vlb, atol=1e-6, rtol=1e-6)


def test_channel_split_and_per_sample_independence_in_5d():
    s = NoiseSchedule("linear", 1000)
    x0, noise, g = _case(4)
    x_t = q_sample(s, x0, T_MIX, noise)
    out = torch.randn(4, 4, 3, 3, 3, generator=g)
    loss = hybrid_loss(s, out, x0, x_t, T_MIX, noise)
    one = hybrid_loss(s, out[2:3], x0[2:3], x_t[2:3], T_MIX[2:3], noise[2:3])
    torch.testing.assert_close(loss[2:3], one)
    mean, log_var, x0_hat = p_mean_variance(s, out, x_t, T_MIX)
    assert mean.shape == log_var.shape == x0_hat.shape == SHAPE
    torch.testing.assert_close(x0_hat, x0_from_eps(s, x_t, T_MIX, out[:, :2]))  # ε first
    with pytest.raises(ValueError, match="2x the channels"):
        p_mean_variance(s, out[:, :3], x_t, T_MIX)


def _seeded(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=g)


@pytest.mark.parametrize("t_start", [249, None])
def test_sampler_with_a_perfect_model_reaches_the_point_mass(t_start):
    s = NoiseSchedule("linear", 1000)
    target = torch.rand(1, 2, 3, 3, 3) * 2 - 1
    calls = []

    def perfect(x_t, t):
        calls.append(t.tolist())
        eps = eps_from_x0(s, x_t, t, target.expand_as(x_t))
        return torch.cat([eps, -torch.ones_like(x_t)], 1)

    out = learned_ddpm_sample(perfect, s, _seeded(0)((2, 2, 3, 3, 3)), _seeded(1), t_start)
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1, -1), atol=1e-4, rtol=1e-4)
    start = 999 if t_start is None else t_start
    assert calls == [[i, i] for i in range(start, -1, -1)]


def test_sampler_is_reproducible_and_with_v_minus_one_is_ddpm_fixed_small():
    s = NoiseSchedule("linear", 1000)
    draws = []

    def counted(seed):
        fn = _seeded(seed)

        def noise(shape):
            draws.append(seed)
            return fn(shape)

        return noise

    def model(v):
        return lambda x_t, t: torch.cat([0.3 * x_t, torch.full_like(x_t, v)], 1)

    x_T = _seeded(0)((2, 2, 3, 3, 3))
    a = learned_ddpm_sample(model(0.4), s, x_T, counted(1), 99)
    assert draws == [1] * 99  # one draw per step, none at t = 0
    again = learned_ddpm_sample(model(0.4), s, x_T, counted(1), 99)
    torch.testing.assert_close(again, a, atol=0, rtol=0)
    assert (learned_ddpm_sample(model(0.4), s, x_T, counted(2), 99) - a).abs().max() > 1e-3
    # v = −1 is Ho et al.'s σ² = β̃_t: the fixed-variance sampler with the same noise
    ref = ddpm_sample(lambda x_t, t: 0.3 * x_t, s, x_T, _seeded(1), prediction="eps", t_start=99)
    got = learned_ddpm_sample(model(-1.0), s, x_T, _seeded(1), 99)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert (learned_ddpm_sample(model(1.0), s, x_T, _seeded(1), 99) - ref).abs().max() > 1e-2
    with pytest.raises(ValueError, match="t_start"):
        learned_ddpm_sample(model(0.0), s, x_T, _seeded(1), 1000)
