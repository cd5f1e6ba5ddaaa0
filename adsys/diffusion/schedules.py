"""Noise schedules: β_t and the derived ᾱ_t, computed in float64 then stored as float32;
inference timestep spacings."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2); (T,) float64."""

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=torch.float64)


def linear_betas(T: int, start: float = 1e-4, end: float = 2e-2) -> torch.Tensor:
    """Ho et al.'s linear schedule, rescaled by 1000/T so any T spans the same noise range."""
    scale = 1000 / T
    return torch.linspace(scale * start, scale * end, T, dtype=torch.float64)


class NoiseSchedule(nn.Module):
    """β, ᾱ and the square roots used by the forward process and the samplers (buffers, (T,))."""

    def __init__(self, kind: Literal["cosine", "linear"] = "cosine", T: int = 1000) -> None:
        super().__init__()
        betas = cosine_betas(T) if kind == "cosine" else linear_betas(T)
        abar = torch.cumprod(1 - betas, 0)
        self.kind, self.T = kind, T
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]]),
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def at(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``name``[t] reshaped to (B, 1, ..., 1) with ``ndim`` dims in total, for broadcasting."""
        return getattr(self, name).to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


def trailing_timesteps(T: int, n: int) -> list[int]:
    """``n`` of the ``T`` steps, descending, in the "trailing" spacing of diffusers (Lin et al.
    2024, Table 2): ``round(arange(T, 0, −T/n)) − 1``, so the first is always T − 1 (numpy's
    round, half to even, as diffusers). DISYRE v2 infers at T = 100, n = 4: [99, 74, 49, 24]."""
    if not 1 <= n <= T:
        raise ValueError(f"need 1 <= n <= T for {T} steps, got n={n}")
    return (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1).tolist()


def leading_timesteps(T: int, n: int) -> list[int]:
    """``n`` of the ``T`` steps, descending, in the "leading" spacing of diffusers
    (``DDPMScheduler.set_timesteps`` default): ``arange(0, n) · (T // n)`` reversed, so the
    last is always 0. T = 1000, n = 50 (Baugh et al.'s sampler): [980, 960, …, 20, 0]."""
    if not 1 <= n <= T:
        raise ValueError(f"need 1 <= n <= T for {T} steps, got n={n}")
    return [k * (T // n) for k in range(n - 1, -1, -1)]
