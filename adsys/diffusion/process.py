"""Forward process with any noise source, and conversions between x0 and ε predictions."""

from __future__ import annotations

import torch

from adsys.diffusion.schedules import NoiseSchedule


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·n for any noise n (Gaussian, simplex, ...); t (B,) in [0, T)."""
    return (
        schedule.at("sqrt_alphas_cumprod", t, x0.ndim) * x0
        + schedule.at("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise
    )


def x0_from_eps(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    return (x_t - schedule.at("sqrt_one_minus_alphas_cumprod", t, x_t.ndim) * eps) / schedule.at(
        "sqrt_alphas_cumprod", t, x_t.ndim
    )


def eps_from_x0(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    return (x_t - schedule.at("sqrt_alphas_cumprod", t, x_t.ndim) * x0) / schedule.at(
        "sqrt_one_minus_alphas_cumprod", t, x_t.ndim
    )
