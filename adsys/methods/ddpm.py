"""``ddpm``: the AnoDDPM-style baseline as cDDPM's code runs it.

Axial slices; cosine schedule, T = 1000, the network predicts x0, L1 loss, simplex noise
(one map per batch), inputs mapped from [0, 1] to [−1, 1]. Restoration: noise the input to
step 499 (the code's ``test_timesteps: 500``, 1-based) and predict x0 in one step; several
``inference.t_values`` give the mean of the one-step reconstructions. Map |x − x̂|, protocol
``behrendt``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from adsys.diffusion import NoiseSchedule, q_sample, reconstruct_ensemble
from adsys.methods import register
from adsys.methods.base import InferenceRecipe, Method, MethodConfig
from adsys.methods.noise import NoiseConfig, draw_noise
from adsys.nn import UNet, UNetConfig

__all__ = ["DDPM", "DDPMConfig", "check_unet_and_steps", "check_unet_dims", "to_image_range",
           "to_model_range"]

_SMOKE_UNET = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
               "num_head_channels": 16}
_DEMO_UNET = {"model_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
              "num_head_channels": 32}


class DDPMConfig(MethodConfig):
    """``unet`` (its ``dims`` follows ``data.dims``), schedule, prediction target, noise."""

    method: str = "ddpm"
    unet: UNetConfig = UNetConfig()
    schedule: Literal["cosine", "linear"] = "cosine"
    timesteps: int = 1000
    prediction: Literal["x0", "eps"] = "x0"
    noise: NoiseConfig = NoiseConfig()
    inference: InferenceRecipe = InferenceRecipe(t_values=(499,))

    @model_validator(mode="after")
    def _consistent(self) -> DDPMConfig:
        check_unet_and_steps(self)
        return self

    def unet_config(self) -> UNetConfig:
        """The UNet this method builds (conditioned methods add their ``cond_dim``)."""
        return self.unet.model_copy(update={"dims": self.data.dims})


def check_unet_dims(config: Any) -> None:
    """Raise unless ``config.unet.dims`` (when set) equals ``config.data.dims`` — for any
    method config with a UNet."""
    if "dims" in config.unet.model_fields_set and config.unet.dims != config.data.dims:
        raise ValueError(f"unet.dims ({config.unet.dims}) must equal data.dims "
                         f"({config.data.dims}); leave it unset and it follows the data")


def check_unet_and_steps(config: Any) -> None:
    """:func:`check_unet_dims`, and every ``config.inference.t_values`` step lies in
    [0, ``config.timesteps``) — for any method config with a UNet and a step count."""
    check_unet_dims(config)
    ts = config.inference.t_values
    if not ts or not all(0 <= t < config.timesteps for t in ts):
        raise ValueError(f"inference.t_values {ts} must be steps in [0, {config.timesteps})")


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities → [−1, 1] (the diffusion models' range)."""
    return 2 * x - 1


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


@register("ddpm")
class DDPM(Method):
    """Trains on ``batch["corrupted"]`` when the data spec corrupts batches (augmentation),
    else on ``batch["image"]``."""

    config_cls = DDPMConfig
    presets = {
        "smoke": {"method_config": {"unet": _SMOKE_UNET}},
        "demo": {"method_config": {"unet": _DEMO_UNET, "data": {"min_brain_fraction": 0.05}}},
        # cDDPM's code, experiment cDDPM/DDPM (implementations.md §1.6): Adam 1e-4, batch 32,
        # 1200 epochs of 12 steps (387 IXI volumes, one slice each), fp32, seed 3141, no EMA,
        # validation every epoch and the checkpoint of the lowest validation loss
        "paper": {"batch_size": 32, "lr": 1e-4, "max_steps": 14_400, "seed": 3141,
                  "ema_decay": 0.0, "precision": "fp32", "val_every": 12, "export": "best_val"},
    }

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__(config)
        self.unet = UNet(config.unet_config())
        self.schedule = NoiseSchedule(config.schedule, config.timesteps)

    def condition(self, x: torch.Tensor) -> torch.Tensor | None:
        """The conditioning vector for clean inputs ``x`` ([−1, 1]); none for plain DDPM."""
        return None

    def _target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 if self.config.prediction == "x0" else noise

    def _noise(self, shape: torch.Size, generator: torch.Generator, like: torch.Tensor):
        return draw_noise(self.config.noise, shape, generator, like.device).to(like.dtype)

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """L1 between the prediction and its target at t ~ U{0, …, T−1}."""
        x0 = to_model_range(batch.get("corrupted", batch["image"]))
        t = torch.randint(0, self.config.timesteps, (x0.shape[0],), generator=generator)
        t = t.to(x0.device)
        noise = self._noise(x0.shape, generator, x0)
        pred = self.unet(q_sample(self.schedule, x0, t, noise), t, self.condition(x0))
        return F.l1_loss(pred, self._target(x0, noise))

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean of one-step x0 reconstructions at ``inference.t_values`` (fresh noise per t)."""
        x0 = to_model_range(images)
        cond = self.condition(x0)
        rec = reconstruct_ensemble(
            lambda x_t, t: self.unet(x_t, t, cond), self.schedule, x0,
            self.config.inference.t_values, lambda shape: self._noise(shape, generator, x0),
            self.config.prediction,
        )  # fmt: skip
        return to_image_range(rec).clamp(0, 1)
