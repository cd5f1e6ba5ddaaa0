"""Learned-variance diffusion (improved DDPM, Nichol & Dhariwal 2021), as guided-diffusion / DiT
implement it for ``LEARNED_RANGE`` with ε prediction: the posterior q(x_{t−1} | x_t, x0), the
model's Gaussian p(x_{t−1} | x_t), the hybrid loss (MSE(ε) + VLB with the mean detached) and
the ancestral sampler.

A model output has 2·C channels for a C-channel x_t: ε in the first C, v ∈ [−1, 1] (raw, not
squashed) in the last C, interpolating the log variance between log β̃_t (v = −1) and log β_t
(v = +1). Everything works with any tensor rank, (B, C, ...) with t (B,).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from adsys.diffusion.process import x0_from_eps
from adsys.diffusion.samplers import ModelFn, NoiseFn
from adsys.diffusion.schedules import NoiseSchedule


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats (broadcasting)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) by guided-diffusion's tanh approximation (the GELU one), not erf: bit-for-bit
    the likelihood the CondDiff code trains on."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Elementwise log P(x) in nats for x in [−1, 1] quantised to 256 bins (width 2/255) under
    N(means, e^(2·log_scales)); the edge bins (x < −0.999, x > 0.999) take the whole tail, so
    the 256 bin probabilities sum to 1. Same shapes in and out."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
    )


class PosteriorCoefficients(NamedTuple):
    """q(x_{t−1} | x_t, x0) = N(coef_x0·x0 + coef_xt·x_t, exp(log_variance_clipped)); (T,)
    float64 each. The clipped log variance replaces β̃_0 = 0 by β̃_1 (guided-diffusion's
    ``posterior_log_variance_clipped``) so that it is finite at t = 0."""

    coef_x0: torch.Tensor
    coef_xt: torch.Tensor
    log_variance_clipped: torch.Tensor


def posterior_coefficients(schedule: NoiseSchedule) -> PosteriorCoefficients:
    """The posterior's coefficients in float64 from ``schedule.betas``; ᾱ is re-accumulated in
    float64 because 1 − ᾱ_t from the stored float32 ᾱ loses digits near t = 0."""
    betas = schedule.betas.double()
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    variance = betas * (1 - abar_prev) / (1 - abar)
    return PosteriorCoefficients(
        coef_x0=betas * abar_prev.sqrt() / (1 - abar),
        coef_xt=(1 - betas).sqrt() * (1 - abar_prev) / (1 - abar),
        log_variance_clipped=torch.log(torch.cat([variance[1:2], variance[1:]])),
    )


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values``[t] in ``like``'s dtype, reshaped to (B, 1, ..., 1) for broadcasting."""
    return values.to(t.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, clipped log variance) of q(x_{t−1} | x_t, x0); the log variance is (B, 1, ...)."""
    post = posterior_coefficients(schedule)
    mean = _at(post.coef_x0, t, x_t) * x0 + _at(post.coef_xt, t, x_t) * x_t
    return mean, _at(post.log_variance_clipped, t, x_t)


def p_mean_variance(
    schedule: NoiseSchedule, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, log variance, x0 prediction) of p(x_{t−1} | x_t), each shaped as x_t, from a
    (B, 2C, ...) output: x0 from ε (not clipped), mean = posterior mean of (x0, x_t),
    log σ² = frac·log β_t + (1 − frac)·log β̃_t (clipped) with frac = (v + 1)/2."""
    if model_out.shape[1] != 2 * x_t.shape[1]:
        raise ValueError(
            f"a learned-variance output has 2x the channels of x_t ({x_t.shape[1]}), "
            f"got {model_out.shape[1]}"
        )
    eps, v = model_out.chunk(2, dim=1)
    x0 = x0_from_eps(schedule, x_t, t, eps)
    mean, min_log = q_posterior(schedule, x0, x_t, t)
    max_log = _at(schedule.betas.double().log(), t, x_t)
    frac = (v + 1) / 2
    return mean, frac * max_log + (1 - frac) * min_log, x0


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every non-batch dim: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def vlb_term(
    schedule: NoiseSchedule,
    model_out: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """The VLB term L_t in bits per dimension, (B,): KL(q(x_{t−1} | x_t, x0) || p) for t > 0,
    the decoder NLL −log p(x0 | x_1) (discretised, log scale ½·log σ²) for t = 0 (x0 in
    [−1, 1]). Gradients reach every part of ``model_out``; see :func:`hybrid_loss`."""
    true_mean, true_log_var = q_posterior(schedule, x0, x_t, t)
    mean, log_var, _ = p_mean_variance(schedule, model_out, x_t, t)
    kl = _mean_flat(normal_kl(true_mean, true_log_var, mean, log_var))
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var))
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def hybrid_loss(
    schedule: NoiseSchedule,
    model_out: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Per-sample L_hybrid, (B,): mean-over-dims MSE(ε, noise) + :func:`vlb_term` on the output
    with ε detached, so the mean learns from the MSE only and v from the VLB only (Nichol &
    Dhariwal §3.1). ``x_t`` = q_sample(x0, t, noise). No T/1000 rescale of the VLB term:
    guided-diffusion applies it for RESCALED_MSE only, DiT / CondDiff use plain MSE."""
    eps, v = model_out.chunk(2, dim=1)
    mse = _mean_flat((eps - noise) ** 2)
    return mse + vlb_term(schedule, torch.cat([eps.detach(), v], dim=1), x0, x_t, t)


@torch.no_grad()
def learned_ddpm_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    noise_fn: NoiseFn,
    t_start: int | None = None,
) -> torch.Tensor:
    """Ancestral sampling with the learned variance over every step from ``t_start`` (default
    T−1) down to 0: x_{t−1} = mean + exp(½·log σ²)·z, z = ``noise_fn(shape)``; returns the mean
    at t = 0 (no noise drawn there). ``model_fn(x_t, t)`` returns the 2C-channel output; x0 is
    not clipped (DiT's ``clip_denoised=False``)."""
    start = schedule.T - 1 if t_start is None else t_start
    if not 0 <= start < schedule.T:
        raise ValueError(f"t_start must lie in [0, {schedule.T}), got {start}")
    x = x_T
    for i in range(start, -1, -1):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        mean, log_var, _ = p_mean_variance(schedule, model_fn(x, t), x, t)
        x = mean + torch.exp(0.5 * log_var) * noise_fn(x.shape) if i > 0 else mean
    return x
