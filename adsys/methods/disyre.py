"""``disyre``: DISYRE v2, ensembled cold-diffusion restorations (Naval Marimont et al. 2024).

**Training.** A restorer P_θ(x_c, t) → x̂ trained on 2D patches (128×128 crops of axial
slices cut to their brain's bounding box, :class:`~adsys.methods.base.DataSpec` mode
``patches``), each corrupted in the loader's workers by the public code's augmentation
(``spatial_augmentation``: elastic, rotation, scaling, mirror, brightness, gamma, inverted
gamma, noise, blur) followed by one synthetic anomaly (``dag``, disentangled anomaly
generation; its tissue centroids come from the shards' statistics) — one ``chain``
corruption whose record replays both. t is the anomaly's severity step from the DAG record
(√ᾱ_t ≈ severity on the linear schedule with T = 100: **small t is severe**, the reverse of
noise diffusion); there is no noise (cold diffusion). Loss: MSE between x̂ and the augmented
healthy patch over the whole patch. Images stay in [0, 1]. Validation batches get the DAG
alone (no augmentation).

**Network.** The diffusers ``UNet2DModel`` of the code: widths (32, 64, 96, 128, 256, 256)
(``model_channels`` 32 × ``channel_mult``), 2 res blocks per level, head dim 8, attention at
the second-lowest resolution (the code's one ``AttnDownBlock2D``/``AttnUpBlock2D``, 1/16 of
the patch) and in the middle block, which runs at the lowest.

**Inference** ("mean-single-step", the paper's). For each t of ``t_values`` = the trailing
spacing of 4 steps, [99, 74, 49, 24] (:func:`adsys.diffusion.schedules.trailing_timesteps`):
x̂_t = P_θ(x, t) on the original input, map = mean over t of |x − x̂_t|. Sliding 128-px
windows at a 32-px step (``overlap_mode: step``, 0.25), Gaussian blending σ = 16 px, each
window's residual × its foreground fraction; the recipe's ``members: steps`` makes every
(model, t) pair one member of the sliding-window ensemble, so all windows × all t run as
one call of the fused kernel. Protocol ``disyre`` (background zeroed, 10 000 voxels per
volume, pooled AP and 200-threshold MaxDSC). ``inference.restoration: multi_step`` is the
code's iterative restoration (DISYRE v1 style, used there for pictures only; with
``members: models``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from adsys.diffusion import NoiseSchedule, trailing_timesteps
from adsys.methods import register
from adsys.methods.base import CorruptionSpec, DataSpec, InferenceRecipe, Method, MethodConfig
from adsys.methods.ddpm import check_unet_and_steps
from adsys.nn import UNet, UNetConfig
from adsys.scoring.config import WindowConfig

__all__ = ["DISYRE", "DISYREConfig", "DISYRERecipe", "record_steps"]

T_COLD = 100  # the severity schedule's steps: linear β 1e-3 → 0.2


def _corruption(window: int, augment: bool = True) -> CorruptionSpec:
    """The training corruption: augmentation, then a DAG anomaly in a ``window`` px window
    (``augment=False``: the DAG alone, for validation)."""
    dag = {"name": "dag", "options": {"window": window, "timesteps": T_COLD}}
    if not augment:
        return CorruptionSpec(**dag)
    return CorruptionSpec(name="chain", options={
        "stages": [{"name": "spatial_augmentation"}, dag]})  # fmt: skip


def _data(patch: int, window: int) -> dict[str, Any]:
    """Data-spec overrides: ``patch``² patches, DAG window ``window`` px."""
    return {"patch_size": [patch, patch],
            "corruption": _corruption(window).model_dump(),
            "val_corruption": _corruption(window, augment=False).model_dump()}


class DISYRERecipe(InferenceRecipe):
    """:class:`InferenceRecipe` + ``restoration``: ``mean_single_step`` (the paper's; with
    ``members: steps`` the scorer averages the residuals of :meth:`DISYRE.restore_step`) or
    ``multi_step`` (:meth:`DISYRE.restore` iterates; ``members: models``)."""

    restoration: Literal["mean_single_step", "multi_step"] = "mean_single_step"

    @model_validator(mode="after")
    def _multi_step_is_one_member(self) -> DISYRERecipe:
        if self.restoration == "multi_step" and self.members != "models":
            raise ValueError("restoration 'multi_step' is one reconstruction per model: set "
                             "inference.members to 'models'")
        return self


class DISYREConfig(MethodConfig):
    """``unet`` (its ``dims`` follows ``data.dims``) and ``timesteps`` (T of the severity
    schedule; the DAG's ``timesteps`` must match)."""

    method: str = "disyre"
    unet: UNetConfig = UNetConfig(
        model_channels=32, channel_mult=(1, 2, 3, 4, 8, 8), num_res_blocks=2,
        attention_resolutions=(16,), num_head_channels=8,
    )  # fmt: skip
    timesteps: int = T_COLD
    data: DataSpec = DataSpec(
        dims=2, mode="patches", patch_size=(128, 128), fields=("image", "mask"),
        corruption=_corruption(64), val_corruption=_corruption(64, augment=False),
    )  # fmt: skip
    inference: DISYRERecipe = DISYRERecipe(
        t_values=tuple(trailing_timesteps(T_COLD, 4)), members="steps", protocol="disyre",
        window=WindowConfig(roi=(128, 128), overlap=0.25, overlap_mode="step",
                            sigma_scale=0.125, sw_batch_size=320, foreground_weight=True),
    )  # fmt: skip

    @model_validator(mode="after")
    def _consistent(self) -> DISYREConfig:
        check_unet_and_steps(self)
        return self

    def unet_config(self) -> UNetConfig:
        return self.unet.model_copy(update={"dims": self.data.dims})


def record_steps(params: list[dict[str, Any]]) -> list[int]:
    """Each item's severity step t from its corruption record: the last stage (of a
    ``chain``) or the record itself that holds a ``t`` (the DAG's)."""
    steps = []
    for p in params:
        found = [s["t"] for s in p.get("stages", [p]) if "t" in s]
        if not found:
            raise ValueError("disyre trains on batches whose corruption records a severity "
                             "step t (data.corruption must end with 'dag')")
        steps.append(int(found[-1]))
    return steps


@register("disyre")
class DISYRE(Method):
    config_cls = DISYREConfig
    presets = {
        # 32-px patches on the smoke shards' 44×52 slices (4 mm), DAG window 30 (its minimum),
        # inference on 32-px windows at a half-window step with 2 of the 4 steps
        "smoke": {"method_config": {
            "unet": {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "num_head_channels": 32},
            "data": _data(32, 30),
            "inference": {"t_values": [99, 49], "window": {"roi": [32, 32], "overlap": 0.5}}}},
        # CPU minutes on the demo's 96×112 slices (2 mm): 64-px patches (a quarter of the
        # paper's area, less context per window) with DAG windows of 40 px (anomalies up to
        # 20 px instead of 44), a 4-level UNet with 1 res block, windows of 64 at a half-window
        # step (16 px at 0.25 would run 4× the windows); AdamW + cosine as the paper
        "demo": {"optimizer": "adamw", "betas": [0.95, 0.999], "weight_decay": 1e-6,
                 "lr_schedule": "cosine", "warmup_steps": 20, "method_config": {
            "unet": {"model_channels": 32, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 1,
                     "attention_resolutions": [8], "num_head_channels": 32},
            "data": _data(64, 40),
            "inference": {"window": {"roi": [64, 64], "overlap": 0.5}}}},
        # the code's dag01 experiment (implementations.md §4.4): 8 volumes × 12 slices = 96
        # patches per step, AdamW 1e-4 (0.95, 0.999), wd 1e-6, cosine with 500 warm-up steps,
        # 100k steps, grad clip 1, bf16, no EMA; the data it assumes: 1 mm axial slices
        # (a shard spec with spacing 1), intensities by the `quantile` normalisation
        "paper": {"batch_size": 96, "lr": 1e-4, "max_steps": 100_000, "optimizer": "adamw",
                  "betas": [0.95, 0.999], "weight_decay": 1e-6, "lr_schedule": "cosine",
                  "warmup_steps": 500, "grad_clip": 1.0, "precision": "bf16", "ema_decay": 0.0,
                  "val_every": 10_000, "checkpoint_every": 20_000},
    }  # fmt: skip

    config: DISYREConfig

    def __init__(self, config: DISYREConfig) -> None:
        super().__init__(config)
        self.unet = UNet(config.unet_config())
        self.schedule = NoiseSchedule("linear", config.timesteps)

    def _predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """P_θ(x, t): the restoration of ``x`` (B, 1, *spatial) at steps ``t`` (B,)."""
        return self.unet(x, t)

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """MSE between P_θ(x_c, t) and the healthy patch; t from each item's DAG record."""
        x_c = batch["corrupted"]
        t = torch.tensor(record_steps(batch["corruption"]["params"]), device=x_c.device)
        target = batch.get("target", batch["image"])
        return F.mse_loss(self._predict(x_c, t), target)

    @torch.no_grad()
    def restore_step(
        self, images: torch.Tensor, t: int, generator: torch.Generator
    ) -> torch.Tensor:
        """x̂_t = P_θ(x, t) on the input itself, clamped to [0, 1] (draws nothing)."""
        steps = torch.full((images.shape[0],), t, device=images.device, dtype=torch.int64)
        return self._predict(images, steps).clamp(0, 1)

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``mean_single_step``: the mean of :meth:`restore_step` over ``t_values``.
        ``multi_step``: cold diffusion's improved sampling (Bansal et al., Alg. 2) with the
        degradation D(x̂, a) = x̂ + a·(x − x̂) toward the input x: from the most severe step
        (smallest t), x ← x_k − D(x̂_k, a_k) + D(x̂_k, a_{k+1}), a_k = √ᾱ at the k-th t and
        0 after the last, x̂_k = P_θ(x_k, t_k)."""
        recipe = self.config.inference
        ts = sorted(recipe.t_values)
        if recipe.restoration == "mean_single_step":
            return sum(self.restore_step(images, t, generator) for t in ts) / len(ts)
        severities = [float(self.schedule.sqrt_alphas_cumprod[t]) for t in ts] + [0.0]
        x = images
        for k, t in enumerate(ts):
            x_hat = self.restore_step(x, t, generator)
            x = x + (severities[k] - severities[k + 1]) * (x_hat - images)
        return x.clamp(0, 1)

