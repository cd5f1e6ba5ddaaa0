"""Cold diffusion's severity map (DISYRE): a corruption severity α ∈ [0, 1] ↔ a step t.

DISYRE trains a restorer f(x_c, t) → x on synthetic anomalies whose severity α (the
interpolation weight of the anomaly) sets the step it is conditioned on: t = argmin_t
|√ᾱ_t − α| on the linear schedule with T = 100, β 1e-3 → 0.2 — which is
:func:`~adsys.diffusion.schedules.linear_betas` at T = 100 (Ho's 1e-4 → 0.02, rescaled by
1000/T), i.e. ``NoiseSchedule("linear", 100)``. √ᾱ falls with t, so **small t is a severe
corruption** (α = 1 → t = 0, α = 0.5 → 36, α = 0.1 → 65, α → 0 → 99): the reverse of the
noise convention, where t = 0 is clean. Inference restores in one step at each t of
:func:`~adsys.diffusion.schedules.trailing_timesteps` (T, 4) = [99, 74, 49, 24], assumed
severities √ᾱ_t ≈ 0.0045, 0.051, 0.27, 0.73.
"""

from __future__ import annotations

import torch

from adsys.diffusion.schedules import NoiseSchedule

__all__ = ["severity_timestep"]


def severity_timestep(schedule: NoiseSchedule, severity: torch.Tensor) -> torch.Tensor:
    """t = argmin_t |√ᾱ_t − α| for each severity α of ``severity`` (any shape, in [0, 1]):
    int64 steps of the same shape (ties: the smaller t). √ᾱ_t is the schedule's float32
    table, as in DISYRE's code; α is compared in float64."""
    sab = schedule.sqrt_alphas_cumprod.to(torch.float64)
    return (sab - severity.to(torch.float64).unsqueeze(-1)).abs().argmin(-1)
