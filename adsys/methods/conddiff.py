"""``conddiff``: fluid-conditioned 3D latent diffusion (Lawry Aguila et al. 2025), and its
baseline ``cldm``.

The model learns p(healthy latent | pseudo-pathological latent): a training pair is a healthy
volume and one of its precomputed fluid variants from the shards (``data.fields`` image +
variant, the same subject), and with probability ``identity_p`` (0.2, the code's
``healthy_proportion``) the healthy volume is its own condition. Both are encoded by a frozen
``aekl`` autoencoder (``autoencoder_path``: its export folder, loaded when training starts; the
exported model then holds its weights) to posterior-mean latents scaled by ``latent_scale``
(default 1 / the autoencoder's running latent std; the code's 0.18215 as an option).
With ``latents_from_shards`` the training shards are a latent shard set instead
(:mod:`adsys.shards.latents`, ``adsys shards encode``): the pairs' latents were encoded once,
and a step runs no encoder.

Diffusion (implementations.md §5.4): linear β 1e-4 → 0.02, T = 1000, ε prediction with
learned variance (LEARNED_RANGE) and the hybrid loss MSE(ε) + VLB with the mean detached
(:mod:`adsys.diffusion.learned`). Network: a 3D UNet on the latent, channels (128, 256, 256),
1 res block per level, attention at the last level (and the middle), 512-d time embedding.
The condition enters through ``conditioning``:

* ``encoder`` (``conddiff``) — a semantic encoder (half UNet, :class:`~adsys.nn.encoders.
  SemanticEncoder`) of the condition latent → a 1280-d vector, applied as a second FiLM in
  every ResBlock after the time FiLM;
* ``concat`` (``cldm``, the paper's baseline) — the condition latent concatenated to z_t as
  input channels; everything else is the same.

Inference: encode the test volume, noise it to t = ``inference.t_values[0]`` (249: the
code's ``sampling_T`` 250), run every ancestral step down to 0 with the learned variance,
conditioned on the volume's own latent, decode, and min–max normalise the reconstruction.
Map: the shift-tolerant residual (±2 voxels, edge padding; ``map.shift_padding: circular``
is the code's roll), protocol ``conddiff`` (map / max, 3D erosion of the input's brain mask,
median 5). Volumes are zero-padded evenly to a multiple of the autoencoder's factor × the
latent UNet's (8 × 4 = 32: 96×112×96 → 96×128×96 → 12×16×12 latents) and cropped back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import field_validator, model_validator
from safetensors.torch import load_file

from adsys.diffusion import NoiseSchedule, q_sample
from adsys.diffusion.learned import hybrid_loss, learned_ddpm_sample
from adsys.errors import InputError
from adsys.methods import register
from adsys.methods.aekl import AE_PRESETS
from adsys.methods.base import DataSpec, InferenceRecipe, Method, MethodConfig
from adsys.methods.ddpm import check_unet_and_steps
from adsys.nn import UNet, UNetConfig
from adsys.nn.autoencoder import (
    AutoencoderConfig,
    build_autoencoder,
    decode_cropped,
    encode_padded,
)
from adsys.nn.encoders import SemanticEncoder, SemanticEncoderConfig
from adsys.scoring.config import MapConfig
from adsys.shards.latents import unfold

__all__ = ["CLDM", "CLDMConfig", "CondDiff", "CondDiffConfig"]

log = logging.getLogger(__name__)

_SMOKE = {
    "autoencoder": AE_PRESETS["smoke"],
    "unet": {"model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
             "attention_resolutions": [2], "num_head_channels": 16},
    "semantic": {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                 "out_channels": 8, "pool_depth": 4},
    "inference": {"t_values": [24]},
}
_DEMO = {
    "autoencoder": AE_PRESETS["demo"],
    "unet": {"model_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
             "attention_resolutions": [4], "num_head_channels": 32},
    "semantic": {"model_channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
                 "out_channels": 32, "pool_depth": 12},
}


class CondDiffConfig(MethodConfig):
    """The frozen autoencoder (``autoencoder_path``: an ``aekl`` export folder;
    ``autoencoder``: its architecture, the same as that run's), the latent UNet and semantic
    encoder, the pairs and the diffusion (module doc). The UNet's dims, channels and
    conditioning follow the rest."""

    method: str = "conddiff"
    data: DataSpec = DataSpec(dims=3, mode="volumes", fields=("image", "variant"))
    autoencoder_path: str | None = None
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    latent_scale: float | None = None
    unet: UNetConfig = UNetConfig(dims=3, model_channels=128, channel_mult=(1, 2, 2),
                                  num_res_blocks=1, attention_resolutions=(4,),
                                  num_head_channels=256)
    semantic: SemanticEncoderConfig = SemanticEncoderConfig()
    conditioning: Literal["encoder", "concat"] = "encoder"
    identity_p: float = 0.2
    latents_from_shards: bool = False
    timesteps: int = 1000
    inference: InferenceRecipe = InferenceRecipe(
        map=MapConfig(kind="shift"), t_values=(249,), protocol="conddiff"
    )

    @field_validator("autoencoder_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        """Made absolute on the driver, so training workers find it whatever their cwd."""
        return None if v is None else str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _consistent(self) -> CondDiffConfig:
        check_unet_and_steps(self)
        if len(self.inference.t_values) != 1:
            raise ValueError(f"inference.t_values {self.inference.t_values}: conddiff runs one "
                             "chain, from a single start step (e.g. [249])")
        if "variant" not in self.data.fields or self.data.mode != "volumes":
            raise ValueError("conddiff trains on volume pairs: data.mode 'volumes' with "
                             "data.fields image and variant")
        if not 0 <= self.identity_p <= 1:
            raise ValueError(f"identity_p must lie in [0, 1], got {self.identity_p}")
        return self

    def unet_config(self) -> UNetConfig:
        """The latent UNet: 2× latent channels out (ε and the variance interpolation), the
        condition latent as extra input channels (``concat``) or as the FiLM vector."""
        c = self.autoencoder.latent_channels
        concat = self.conditioning == "concat"
        return self.unet.model_copy(update={
            "dims": 3, "in_channels": 2 * c if concat else c, "out_channels": 2 * c,
            "cond_dim": None if concat else self.semantic_config().out_dim,
            "cond_mode": "film"})  # fmt: skip

    def semantic_config(self) -> SemanticEncoderConfig:
        return self.semantic.model_copy(update={"in_channels": self.autoencoder.latent_channels})

    @property
    def pad_multiple(self) -> int:
        """Volumes are padded to this: the autoencoder's factor × the latent UNet's."""
        return self.autoencoder.factor * 2 ** (len(self.unet.channel_mult) - 1)


class CLDMConfig(CondDiffConfig):
    """``cldm``: :class:`CondDiffConfig` with the condition latent concatenated instead."""

    method: str = "cldm"
    conditioning: Literal["encoder", "concat"] = "concat"


@register("conddiff")
class CondDiff(Method):
    config_cls = CondDiffConfig
    presets = {
        "smoke": {"batch_size": 1, "method_config": _SMOKE},
        # CPU minutes: the demo aekl's autoencoder (train it first: its preset has the same
        # architecture), a 32-channel latent UNet on 12x16x12 latents, 300 steps of batch 2
        # (2.2 s per step on 2 cores, the encoding included), and the paper's 250-step chain
        # (24 s per volume); lr 5e-4 for so short a run
        "demo": {"batch_size": 2, "max_steps": 300, "lr": 5e-4, "optimizer": "adamw",
                 "grad_clip": 0.1, "ema_decay": 0.99, "val_every": 100,
                 "method_config": _DEMO},
        # CondDiff's code (implementations.md §5.4): AdamW 1e-4, wd 0, constant lr, grad clip
        # 0.1, batch 8 (2 GPUs), EMA 0.9999, early stop on val loss (patience 20 epochs;
        # here validations), seed 3407, bf16 on GPU
        "paper": {"batch_size": 8, "lr": 1e-4, "optimizer": "adamw", "weight_decay": 0.0,
                  "grad_clip": 0.1, "ema_decay": 0.9999, "max_steps": 500_000, "seed": 3407,
                  "val_every": 1000, "patience": 20, "export": "best_val",
                  "precision": "bf16"},
    }  # fmt: skip

    config: CondDiffConfig

    def __init__(self, config: CondDiffConfig) -> None:
        super().__init__(config)
        self.autoencoder = build_autoencoder(config.autoencoder).requires_grad_(False)
        self.unet = UNet(config.unet_config())
        self.semantic = (
            SemanticEncoder(config.semantic_config()) if config.conditioning == "encoder"
            else None
        )  # fmt: skip
        self.schedule = NoiseSchedule("linear", config.timesteps)
        self.register_buffer("latent_scale", torch.tensor(float(config.latent_scale or 1.0)))

    def load_pretrained(self) -> None:
        """Load the ``autoencoder_path`` export's weights (refusing another architecture) and, with
        no fixed ``latent_scale``, set the scale to 1 / its latent std."""
        if self.config.autoencoder_path is None:
            log.warning("%s: no autoencoder given; training with an untrained one",
                        self.config.method)
            return
        folder = Path(self.config.autoencoder_path)
        from adsys.methods.export import WEIGHTS, read_record

        record = read_record(folder)
        trained = AutoencoderConfig.model_validate(record["config"].get("autoencoder", {}))
        if record["method"] != "aekl" or trained != self.config.autoencoder:
            raise InputError(folder, f"not an aekl export with this method's autoencoder "
                             f"{self.config.autoencoder}"
                             f" (it is {record['method']!r}, {trained})",
                             "train the autoencoder with --method aekl and the same preset, or "
                             "set method_config.autoencoder to its architecture")
        state = load_file(str(folder / WEIGHTS))
        self.autoencoder.load_state_dict(
            {k.removeprefix("autoencoder."): v for k, v in state.items()
             if k.startswith("autoencoder.")})  # fmt: skip
        if self.config.latent_scale is None:
            self.latent_scale.fill_(1.0 / float(state["latent_std"]))
        log.info("%s: autoencoder %s, latent scale %.4f (%s)", self.config.method, folder,
                 float(self.latent_scale),
                 "fixed" if self.config.latent_scale else "1 / its training latents' std")

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]]:
        """Scaled posterior-mean latents of ``images`` (B, 1, *spatial) in [0, 1], and the
        region of the volume in its padded grid."""
        mu, region = encode_padded(self.autoencoder, images, self.config.pad_multiple)
        return mu * self.latent_scale, region

    def pairs(
        self, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(healthy volumes, their conditions, identity flags (B,) bool): the condition is the
        batch's fluid variant, or with probability ``identity_p`` the healthy volume."""
        healthy, variant = batch["image"], batch["variant"]
        identity = torch.rand(healthy.shape[0], generator=generator) < self.config.identity_p
        keep = identity.to(healthy.device).view(-1, *([1] * (healthy.ndim - 1)))
        return healthy, torch.where(keep, healthy, variant), identity

    def _denoiser(self, condition: torch.Tensor):
        """``model_fn(z_t, t)`` conditioned on the condition latent (B, C, *latent)."""
        if self.semantic is None:
            return lambda z_t, t: self.unet(torch.cat([z_t, condition], dim=1), t)
        vector = self.semantic(condition)
        return lambda z_t, t: self.unet(z_t, t, vector)

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """The hybrid loss (MSE(ε) + VLB, mean detached) at t ~ U{0, …, T−1}."""
        healthy, condition, _ = self.pairs(batch, generator)
        pair = torch.cat([healthy, condition])
        if self.config.latents_from_shards:  # folded posterior means (adsys.shards.latents)
            z = unfold(pair[:, 0], self.config.autoencoder.latent_channels) * self.latent_scale
        else:
            z, _ = self.latents(pair)
        z0, zc = z.chunk(2)
        t = torch.randint(0, self.config.timesteps, (z0.shape[0],), generator=generator)
        t = t.to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0)
        z_t = q_sample(self.schedule, z0, t, noise)
        out = self._denoiser(zc)(z_t, t)
        return hybrid_loss(self.schedule, out, z0, z_t, t, noise).mean()

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Encode, noise to ``t_values[0]``, the learned-variance ancestral chain to 0
        conditioned on the input's latent, decode; min–max normalised per volume."""
        z, region = self.latents(images)
        t0 = self.config.inference.t_values[0]

        def noise(shape: torch.Size) -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(z)

        t = torch.full((z.shape[0],), t0, dtype=torch.long, device=z.device)
        z_t = q_sample(self.schedule, z, t, noise(z.shape))
        z0 = learned_ddpm_sample(self._denoiser(z), self.schedule, z_t, noise, t_start=t0)
        rec = decode_cropped(self.autoencoder, z0 / self.latent_scale, region)
        lo = rec.flatten(1).amin(1).view(-1, *([1] * (rec.ndim - 1)))
        hi = rec.flatten(1).amax(1).view(-1, *([1] * (rec.ndim - 1)))
        return ((rec - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


@register("cldm")
class CLDM(CondDiff):
    """``cldm``: CondDiff with channel-concatenation conditioning (the paper's baseline)."""

    config_cls = CLDMConfig
