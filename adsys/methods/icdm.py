"""``icdm``: image-conditioned diffusion trained on five synthetic tasks (Baugh et al. 2024).

The model learns to restore a healthy slice from a synthetically corrupted one: the condition
is the corrupted slice, concatenated with x_t as a second input channel; the target is the
clean slice. The corruptions are the five self-supervised tasks of
:mod:`adsys.synth.tasks` (0/1 Poisson blending from the same / a foreign dataset, 2/3 sink /
source radial deformations, 4 smooth intensity change; 20 % identity pairs). A **fold**
trains on three of the five tasks — ``combinations(range(5), 3)[fold]``, 10 folds — and
validates on the other two, so each model is validated on anomalies it never saw; the
paper's model is the ensemble of the 10 fold models (``--folds all``).

As the code (implementations.md §3.4–3.5): ε prediction, linear β 1e-4 → 0.02, T = 1000;
min-SNR-γ (γ = 1) weighted MSE, offset noise 0.1 (one N(0, 1) per sample and channel);
images stay in [0, 1] (``center``: false) while x0 is clipped to [−1, 1] when sampling.
Inference generates from pure noise, conditioned on the test slice: 50 DDPM ancestral steps
in diffusers' "leading" spacing (980, 960, …, 0) with its ``fixed_small`` variance;
``inference.sampler: ddim`` with fewer ``steps`` is the speed option. Map 1 − SSIM (window
11, σ 1.5, ``data_range`` 1; 255 is UPD's), background zeroed and voxels pooled by the
``upd`` protocol; several fold models average their maps (``ensemble: residual_mean``).

Network: the code's diffusers ``UNet2DModel`` — (128, 256, 256, 512) channels, 2 res blocks,
attention at the three lower levels and the middle, head dim 8 — as our UNet; its time
embedding enters each block as FiLM (scale and shift) where diffusers adds it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator

from adsys.config import StrictModel
from adsys.diffusion import NoiseSchedule, ddim_sample, ddpm_sample, leading_timesteps, q_sample
from adsys.methods import register
from adsys.methods.base import DataSpec, InferenceRecipe, Method, MethodConfig
from adsys.methods.ddpm import check_unet_dims, to_image_range, to_model_range
from adsys.nn import UNet, UNetConfig
from adsys.scoring.config import MapConfig
from adsys.synth.tasks.folds import NUM_FOLDS, fold_tasks

__all__ = ["ICDM", "ICDMConfig", "ICDMRecipe", "TaskOptions", "min_snr_weight"]


class TaskOptions(StrictModel):
    """Options of the synthetic tasks (:mod:`adsys.synth.tasks`, corruption ``icdm_tasks``)
    shared by training and validation; the fold picks the tasks."""

    identity_p: float = 0.2
    intensity: Literal["perlin", "uniform"] = "perlin"
    foreign_source: str | None = None


class ICDMRecipe(InferenceRecipe):
    """:class:`InferenceRecipe` + the sampler: ``ddpm`` (ancestral, the paper's) or ``ddim``
    (deterministic, the speed option) over ``steps`` leading-spaced steps."""

    sampler: Literal["ddpm", "ddim"] = "ddpm"
    steps: int = 50

    @model_validator(mode="after")
    def _steps(self) -> ICDMRecipe:
        if self.steps < 1:
            raise ValueError(f"inference.steps must be >= 1, got {self.steps}")
        return self


class ICDMConfig(MethodConfig):
    """``fold`` (0–9) picks the training tasks (module doc) and sets ``data.corruption`` /
    ``data.val_corruption`` (``tasks``: the tasks' shared options); ``unet`` (2 input channels:
    x_t ‖ condition; ``dims`` follows ``data.dims``); ``min_snr_gamma`` (``None``: plain
    MSE); ``offset_noise``; ``center``: map [0, 1] to [−1, 1] (the code does not);
    ``clip_x0``: the sampler's x0 clamp (``None``: none)."""

    method: str = "icdm"
    fold: int = 0
    tasks: TaskOptions = TaskOptions()
    unet: UNetConfig = UNetConfig(
        model_channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
        attention_resolutions=(2, 4, 8), num_head_channels=8,
    )  # fmt: skip
    timesteps: int = 1000
    min_snr_gamma: float | None = 1.0
    offset_noise: float = 0.1
    center: bool = False
    clip_x0: float | None = 1.0
    data: DataSpec = DataSpec(dims=2, mode="slices", fields=("image", "mask"))
    inference: ICDMRecipe = ICDMRecipe(map=MapConfig(kind="ssim"), protocol="upd")

    @model_validator(mode="before")
    @classmethod
    def _fold_tasks(cls, values: Any) -> Any:
        """The data's corruptions follow the fold: its 3 training tasks for training
        batches, the 2 held-out tasks for validation batches (set here, before validation,
        so a config read back from JSON derives the same ones)."""
        if not isinstance(values, dict):
            return values
        train, val = fold_tasks(values.get("fold", 0))  # ValueError naming a bad fold
        options = TaskOptions.model_validate(values.get("tasks") or {}).model_dump()
        data = values.get("data", cls.model_fields["data"].default)
        data = data.model_dump() if isinstance(data, DataSpec) else dict(data)
        for key, tasks in (("corruption", train), ("val_corruption", val)):
            data[key] = {"name": "icdm_tasks", "options": {"tasks": tasks, **options}}
        return {**values, "data": data}

    @model_validator(mode="after")
    def _unet_dims(self) -> ICDMConfig:
        check_unet_dims(self)
        return self

    def unet_config(self) -> UNetConfig:
        return self.unet.model_copy(update={"dims": self.data.dims, "in_channels": 2})


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weight for ε prediction (Hang et al. 2023): min(SNR_t, γ) / SNR_t,
    SNR_t = ᾱ_t / (1 − ᾱ_t); (B,)."""
    abar = schedule.alphas_cumprod.to(t.device)[t]
    snr = abar / (1 - abar)
    return snr.clamp(max=gamma) / snr


_SMOKE_UNET = {"model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
               "attention_resolutions": [], "num_head_channels": 16}
_DEMO_UNET = {"model_channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
              "attention_resolutions": [], "num_head_channels": 16}


@register("icdm")
class ICDM(Method):
    config_cls = ICDMConfig
    num_folds: ClassVar[int] = NUM_FOLDS
    presets = {
        # slices under 5 % brain rarely hold an anomaly (records say "unplaced"): left out here;
        # paper keeps every non-empty slice, as the code
        "smoke": {"method_config": {"unet": _SMOKE_UNET, "data": {"min_brain_fraction": 0.05},
                                    "inference": {"sampler": "ddim", "steps": 3}}},
        # CPU minutes: a 16-channel 3-level UNet with 1 res block and attention only in the
        # middle, 150 steps per fold (≈ 6 CPU-minutes: 2.5 CPU-s per step of 16 slices),
        # and a 3-step DDIM chain instead of 50 ancestral steps
        # (measured: 0.35x cddpm's demo inference per fold model, so 2 folds infer the demo
        # cohort in ≈ 0.7x cddpm's CPU time); ``--folds 0,9`` trains 2 of the 10 folds
        # (their held-out task pairs, {3, 4} and {0, 1}, cover four of the five tasks)
        "demo": {"batch_size": 16, "max_steps": 150, "lr": 1e-4, "optimizer": "adamw",
                 "weight_decay": 1e-2, "ema_decay": 0.99, "val_every": 25,
                 "val_smoothing": 0.9, "export": "best_val",
                 "method_config": {"unet": _DEMO_UNET, "data": {"min_brain_fraction": 0.05},
                                   "inference": {"sampler": "ddim", "steps": 3}}},
        # the code's omega_config_big_split (implementations.md §3.4): batch 16, AdamW 1e-4
        # (0.9, 0.999) wd 1e-2, constant lr, grad clip 1, fp16, EMA, up to 500k steps;
        # validation every 500 steps on the held-out tasks, smoothed (α 0.9), best
        # checkpoint exported, stop after 50k steps (100 validations) without improvement
        "paper": {"batch_size": 16, "lr": 1e-4, "max_steps": 500_000, "optimizer": "adamw",
                  "betas": [0.9, 0.999], "weight_decay": 1e-2, "grad_clip": 1.0,
                  "precision": "fp16", "ema_decay": 0.9999, "val_every": 500,
                  "val_smoothing": 0.9, "patience": 100, "export": "best_val",
                  "checkpoint_every": 1000},
    }  # fmt: skip

    config: ICDMConfig

    def __init__(self, config: ICDMConfig) -> None:
        super().__init__(config)
        self.unet = UNet(config.unet_config())
        self.schedule = NoiseSchedule("linear", config.timesteps)

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return to_model_range(x) if self.config.center else x

    def _to_image(self, x: torch.Tensor) -> torch.Tensor:
        return to_image_range(x) if self.config.center else x

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂(x_t ‖ condition, t)."""
        return self.unet(torch.cat([x_t, cond], dim=1), t)

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Min-SNR-weighted MSE between ε̂ and the (offset) noise that made x_t from the clean
        slice, conditioned on its corrupted version; t ~ U{0, …, T−1}."""
        x0 = self._to_model(batch["image"])
        cond = self._to_model(batch["corrupted"])
        n = x0.shape[0]
        t = torch.randint(0, self.config.timesteps, (n,), generator=generator).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator)
        if self.config.offset_noise:
            eps = eps + self.config.offset_noise * torch.randn(
                (*x0.shape[:2], *[1] * (x0.ndim - 2)), generator=generator)
        eps = eps.to(device=x0.device, dtype=x0.dtype)
        pred = self._eps(q_sample(self.schedule, x0, t, eps), t, cond)
        mse = (pred.float() - eps.float()).pow(2).flatten(1).mean(1)
        if self.config.min_snr_gamma is not None:
            mse = mse * min_snr_weight(self.schedule, t, self.config.min_snr_gamma)
        return mse.mean()

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Generate the healthy version of ``images`` (B, 1, *spatial) from pure noise,
        conditioned on them: ``inference.steps`` leading-spaced steps of the sampler."""
        recipe, cfg = self.config.inference, self.config
        cond = self._to_model(images)

        def noise(shape: torch.Size) -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(images.device, images.dtype)

        timesteps = leading_timesteps(cfg.timesteps, recipe.steps)
        fn = lambda x_t, t: self._eps(x_t, t, cond)  # noqa: E731
        if recipe.sampler == "ddpm":
            x0 = ddpm_sample(fn, self.schedule, noise(images.shape), noise, "eps",
                             timesteps=timesteps, clip_x0=cfg.clip_x0)
        else:
            x0 = ddim_sample(fn, self.schedule, noise(images.shape), recipe.steps,
                             prediction="eps", timesteps=timesteps, clip_x0=cfg.clip_x0)
        return self._to_image(x0).clamp(0, 1)
