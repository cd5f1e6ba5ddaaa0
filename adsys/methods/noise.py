"""Noise sources for the diffusion methods: Gaussian or AnoDDPM fractal simplex."""

from __future__ import annotations

from typing import Literal

import torch

from adsys.config import StrictModel
from adsys.synth.simplex import simplex_noise


class NoiseConfig(StrictModel):
    """``simplex`` defaults are cDDPM's reference behaviour: 6 octaves, persistence 0.8,
    coarsest wavelength 64 px, un-normalised, one map shared by the whole batch."""

    kind: Literal["simplex", "gaussian"] = "simplex"
    octaves: int = 6
    persistence: float = 0.8
    wavelength: float = 64.0
    per_sample: bool = False
    normalize: bool = False


def draw_noise(
    config: NoiseConfig, shape: torch.Size | tuple[int, ...], generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise of ``shape`` (B, C, *spatial) drawn on the CPU from ``generator``, then moved."""
    if config.kind == "gaussian":
        return torch.randn(tuple(shape), generator=generator).to(device)
    return simplex_noise(
        shape,
        seed=generator,
        octaves=config.octaves,
        persistence=config.persistence,
        wavelength=config.wavelength,
        per_sample=config.per_sample,
        normalize=config.normalize,
        device=device,
    )
