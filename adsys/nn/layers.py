"""Dimension-agnostic building blocks shared by the UNet and the encoders."""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.AvgPool2d`` or ``nn.AvgPool3d``."""
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](*args, **kwargs)


def batch_norm_nd(dims: int, channels: int) -> nn.Module:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as ADM does under fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int, groups: int = 32) -> nn.Module:
    """GroupNorm(32) — or fewer groups when ``channels`` is small (tiny test models)."""
    return GroupNorm32(math.gcd(groups, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters: residual branches and the output conv start as identity / zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of timesteps (B,), [cos, sin] order as in ADM."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
