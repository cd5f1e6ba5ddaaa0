"""Diffusion core: schedules, the forward process with any noise, samplers, the cold
severity map, learned-variance (improved DDPM) losses and sampler."""

from adsys.diffusion.cold import severity_timestep
from adsys.diffusion.learned import (
    PosteriorCoefficients,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    learned_ddpm_sample,
    normal_kl,
    p_mean_variance,
    posterior_coefficients,
    q_posterior,
    vlb_term,
)
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
    "PosteriorCoefficients",
    "cosine_betas",
    "ddim_sample",
    "ddpm_sample",
    "discretized_gaussian_log_likelihood",
    "eps_from_x0",
    "hybrid_loss",
    "leading_timesteps",
    "learned_ddpm_sample",
    "linear_betas",
    "normal_kl",
    "p_mean_variance",
    "posterior_coefficients",
    "q_posterior",
    "q_sample",
    "reconstruct_ensemble",
    "reconstruct_x0",
    "severity_timestep",
    "trailing_timesteps",
    "vlb_term",
    "x0_from_eps",
]
