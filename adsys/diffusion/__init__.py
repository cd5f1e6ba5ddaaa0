"""Diffusion core: schedules, the forward process with any noise, samplers, the cold
severity map."""

from adsys.diffusion.cold import severity_timestep
from adsys.diffusion.process import eps_from_x0, q_sample, x0_from_eps
from adsys.diffusion.samplers import ddim_sample, ddpm_sample, reconstruct_ensemble, reconstruct_x0
from adsys.diffusion.schedules import (
    NoiseSchedule,
    cosine_betas,
    leading_timesteps,
    linear_betas,
    trailing_timesteps,
)

__all__ = [
    "NoiseSchedule",
    "cosine_betas",
    "ddim_sample",
    "ddpm_sample",
    "eps_from_x0",
    "leading_timesteps",
    "linear_betas",
    "q_sample",
    "reconstruct_ensemble",
    "reconstruct_x0",
    "severity_timestep",
    "trailing_timesteps",
    "x0_from_eps",
]
