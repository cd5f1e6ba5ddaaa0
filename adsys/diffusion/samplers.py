"""Reconstruction and sampling: one-step x0 at t, its ensemble over t, DDPM and DDIM chains.

A ``model_fn(x_t, t) -> prediction`` returns either x0 or ε (``prediction``); everything here
works with any tensor rank (2D or 3D images) and any noise source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from adsys.diffusion.process import eps_from_x0, q_sample, x0_from_eps
from adsys.diffusion.schedules import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Size], torch.Tensor]
Prediction = Literal["x0", "eps"]


def _split(
    schedule: NoiseSchedule,
    pred: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    prediction: Prediction,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, ε) from a model output of either kind."""
    if prediction == "x0":
        return pred, eps_from_x0(schedule, x_t, t, pred)
    return x0_from_eps(schedule, x_t, t, pred), pred


@torch.no_grad()
def reconstruct_x0(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: int,
    noise: torch.Tensor,
    prediction: Prediction = "x0",
) -> torch.Tensor:
    """Noise ``x0`` to step ``t`` with ``noise`` and predict x0 in a single forward pass."""
    tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
    x_t = q_sample(schedule, x0, tt, noise)
    return _split(schedule, model_fn(x_t, tt), x_t, tt, prediction)[0]


@torch.no_grad()
def reconstruct_ensemble(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    ts: Sequence[int],
    noise_fn: NoiseFn,
    prediction: Prediction = "x0",
) -> torch.Tensor:
    """Mean of one-step x0 reconstructions over ``ts``, fresh noise for each t (cDDPM)."""
    acc = torch.zeros_like(x0)
    for t in ts:
        acc += reconstruct_x0(model_fn, schedule, x0, t, noise_fn(x0.shape), prediction)
    return acc / len(ts)


@torch.no_grad()
def ddpm_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    noise_fn: NoiseFn,
    prediction: Prediction = "x0",
    t_start: int | None = None,
    timesteps: Sequence[int] | None = None,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Ancestral sampling from ``x_T`` down to x0, over every step from ``t_start`` (default
    T−1) or over ``timesteps`` (descending, e.g. :func:`leading_timesteps`).

    From t to the next step s (or to x0 after the last): α = ᾱ_t/ᾱ_s, β = 1 − α, posterior
    mean μ̃ = (√ᾱ_s β x0 + √α (1−ᾱ_s) x_t)/(1−ᾱ_t), variance β (1−ᾱ_s)/(1−ᾱ_t) (diffusers'
    ``fixed_small``); with consecutive steps this is Ho et al.'s sampler. ``clip_x0``: clamp
    the predicted x0 to [−c, c] (diffusers' ``clip_sample``).
    """
    if timesteps is None:
        start = schedule.T - 1 if t_start is None else t_start
        timesteps = range(start, -1, -1)
    steps = [int(i) for i in timesteps]
    if any(b >= a for a, b in zip(steps, steps[1:], strict=False)) or not steps:
        raise ValueError(f"timesteps must be non-empty and strictly descending, got {steps}")
    abar_all = schedule.alphas_cumprod
    x = x_T
    for k, i in enumerate(steps):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x0, _ = _split(schedule, model_fn(x, t), x, t, prediction)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        abar = abar_all[i].item()
        abar_prev = abar_all[steps[k + 1]].item() if k + 1 < len(steps) else 1.0
        beta = 1 - abar / abar_prev
        mean = ((abar_prev**0.5) * beta * x0 + ((1 - beta) ** 0.5) * (1 - abar_prev) * x) / (
            1 - abar
        )
        if k + 1 == len(steps):
            return mean
        var = beta * (1 - abar_prev) / (1 - abar)
        x = mean + var**0.5 * noise_fn(x.shape)
    return x


@torch.no_grad()
def ddim_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    steps: int,
    noise_fn: NoiseFn | None = None,
    prediction: Prediction = "x0",
    eta: float = 0.0,
    t_start: int | None = None,
    timesteps: Sequence[int] | None = None,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """DDIM over ``steps`` evenly spaced timesteps from ``t_start`` (default T−1) to 0, or over
    ``timesteps`` (descending; ``steps`` is then ignored), returning the last x0 prediction.

    ``eta`` = 0 is deterministic; ``noise_fn`` is needed only when ``eta`` > 0. ``clip_x0`` as
    in :func:`ddpm_sample`.
    """
    if timesteps is None:
        start = schedule.T - 1 if t_start is None else t_start
        timesteps = torch.linspace(start, 0, steps).round().long().tolist()
    times = [int(i) for i in timesteps]
    x = x_T
    for k, i in enumerate(times):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x0, eps = _split(schedule, model_fn(x, t), x, t, prediction)
        if clip_x0 is not None:  # ε consistent with the clipped x0, as diffusers
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = eps_from_x0(schedule, x, t, x0)
        if k == len(times) - 1:
            return x0
        abar = schedule.alphas_cumprod[i].item()
        abar_next = schedule.alphas_cumprod[times[k + 1]].item()
        sigma = eta * ((1 - abar_next) / (1 - abar) * (1 - abar / abar_next)) ** 0.5
        x = abar_next**0.5 * x0 + (1 - abar_next - sigma**2) ** 0.5 * eps
        if sigma > 0:
            if noise_fn is None:
                raise ValueError("ddim_sample with eta > 0 needs a noise_fn")
            x = x + sigma * noise_fn(x.shape)
    return x
