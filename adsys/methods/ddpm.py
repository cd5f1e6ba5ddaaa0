"""``ddpm``: the AnoDDPM-style baseline as cDDPM's code runs it.

Cosine schedule, T = 1000, the network predicts x0, L1 loss, simplex noise (one map per batch),
inputs mapped from [0, 1] to [−1, 1]. Restoration: noise the input to ``t_test`` = 500 and
predict x0 in one step (``t_ensemble`` gives the mean over several t instead).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from adsys.config import StrictModel
from adsys.diffusion import NoiseSchedule, q_sample, reconstruct_ensemble
from adsys.methods.noise import NoiseConfig, draw_noise
from adsys.nn import UNet, UNetConfig


class DDPMConfig(StrictModel):
    method: Literal["ddpm"] = "ddpm"
    unet: UNetConfig = UNetConfig()
    schedule: Literal["cosine", "linear"] = "cosine"
    timesteps: int = 1000
    prediction: Literal["x0", "eps"] = "x0"
    noise: NoiseConfig = NoiseConfig()
    t_test: int = 500
    t_ensemble: tuple[int, ...] | None = None

    def restore_steps(self) -> tuple[int, ...]:
        return self.t_ensemble or (self.t_test,)

    def unet_config(self) -> UNetConfig:
        """The UNet this method builds (conditioned methods add their ``cond_dim``)."""
        return self.unet


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities → [−1, 1] (the diffusion models' range)."""
    return 2 * x - 1


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


class DDPM(nn.Module):
    """``training_loss(batch, generator)`` and ``restore(images, generator)``.

    ``batch["image"]`` and ``images`` are (B, 1, *spatial) in [0, 1]; ``restore`` returns the
    reconstruction in [0, 1] (clamped).
    """

    config_cls = DDPMConfig

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet_config())
        self.schedule = NoiseSchedule(config.schedule, config.timesteps)

    def condition(self, x: torch.Tensor) -> torch.Tensor | None:
        """The conditioning vector for clean inputs ``x`` ([−1, 1]); none for plain DDPM."""
        return None

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training-time augmentation of clean inputs in [0, 1]; identity for plain DDPM."""
        return images

    def _target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 if self.config.prediction == "x0" else noise

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """L1 between the prediction and its target at t ~ U{0, …, T−1}."""
        images = self.augment(batch["image"], generator)
        x0 = to_model_range(images)
        t = torch.randint(0, self.config.timesteps, (x0.shape[0],), generator=generator)
        t = t.to(x0.device)
        noise = draw_noise(self.config.noise, x0.shape, generator, x0.device).to(x0.dtype)
        pred = self.unet(q_sample(self.schedule, x0, t, noise), t, self.condition(x0))
        return F.l1_loss(pred, self._target(x0, noise))

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """The training loss (so DeepSpeed's engine, which calls ``forward``, can wrap us)."""
        return self.training_loss(batch, generator)

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x0 = to_model_range(images)
        cond = self.condition(x0)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x_t, t, cond)

        def noise_fn(shape: torch.Size) -> torch.Tensor:
            return draw_noise(self.config.noise, shape, generator, x0.device).to(x0.dtype)

        rec = reconstruct_ensemble(
            model_fn, self.schedule, x0, self.config.restore_steps(), noise_fn,
            self.config.prediction,
        )
        return to_image_range(rec).clamp(0, 1)


def build(config: DDPMConfig | dict[str, Any] | None = None) -> DDPM:
    return DDPM(DDPMConfig.model_validate(config or {}))
