"""``aekl``: the 3D KL autoencoder that latent methods diffuse in (CondDiff's stage 1).

MONAI's ``AutoencoderKL`` (:mod:`adsys.nn.autoencoder`; CondDiff ``aekl_ad_3d.yaml``: 1 → 3
latent channels, channels (64, 128, 128, 128), 2 res blocks, no attention, 8× down) trained
on whole healthy volumes in [0, 1]. Loss: L1 reconstruction + β·KL (β 1e-8) and, from
``adversarial_start`` training steps on, a least-squares PatchGAN term (weight 1e-3) — the
critic's own loss (× the same weight, as MONAI's recipe) is added to the same scalar, its
inputs detached, while the generator's term sees the critic frozen, so one optimizer trains
both. CondDiff's perceptual term (weight 0.002) is optional, since its pretrained network
cannot be downloaded here: ``perceptual.weights`` names a local copy of MedicalNet's
ResNet-10 weights (:mod:`adsys.nn.perceptual`), loaded when training starts (a training
run needs the file, an exported model does not hold it).

Volumes are zero-padded (evenly on both sides) to a multiple of ``pad_multiple`` (at least
the 8× of the encoder; the latent method that uses this autoencoder pads to its own
multiple) and cropped back after decoding. The **latent scale**: every training step
updates a running estimate of the latents' standard deviation (``latent_std``, a buffer
saved with the model, momentum ``latent_std_momentum``); a latent method scales latents by
1/``latent_std`` unless it is given a fixed scale (the code's 0.18215).

As an anomaly detector on its own ``aekl`` reconstructs the volume through the posterior
mean (map |x − x̂|, protocol ``conddiff``): the plain-autoencoder baseline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import model_validator

from adsys.config import StrictModel
from adsys.methods import register
from adsys.methods.base import DataSpec, InferenceRecipe, Method, MethodConfig
from adsys.nn.autoencoder import (
    AutoencoderConfig,
    DiscriminatorConfig,
    build_autoencoder,
    build_discriminator,
    decode_cropped,
    encode_padded,
    kl_divergence,
    pad_to_multiple,
)

__all__ = ["AEKL", "AEKLConfig", "AE_PRESETS", "PerceptualConfig"]

# the autoencoder of each preset; a latent method's preset of the same name uses the same
AE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"channels": [8, 16, 16, 16], "num_res_blocks": 1, "norm_num_groups": 8},
    "demo": {"channels": [8, 16, 32, 32], "num_res_blocks": 1, "norm_num_groups": 8},
}


class PerceptualConfig(StrictModel):
    """The optional perceptual term: MedicalNet ResNet-10 weights (a local file) × weight."""

    weights: str
    weight: float = 0.002


class AEKLConfig(MethodConfig):
    """The autoencoder, its critic and the loss weights (module doc)."""

    method: str = "aekl"
    data: DataSpec = DataSpec(dims=3, mode="volumes")
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    kl_weight: float = 1e-8
    adversarial_weight: float = 1e-3
    adversarial_start: int = 0
    perceptual: PerceptualConfig | None = None
    latent_std_momentum: float = 0.01
    pad_multiple: int = 8
    inference: InferenceRecipe = InferenceRecipe(protocol="conddiff")

    @model_validator(mode="after")
    def _consistent(self) -> AEKLConfig:
        if self.data.dims != 3 or self.autoencoder.dims != 3:
            raise ValueError("aekl is a 3D autoencoder: data.dims and autoencoder.dims are 3")
        if self.pad_multiple % self.autoencoder.factor:
            raise ValueError(f"pad_multiple ({self.pad_multiple}) must be a multiple of the "
                             f"encoder's downsampling factor {self.autoencoder.factor}")
        return self


@register("aekl")
class AEKL(Method):
    config_cls = AEKLConfig
    presets = {
        "smoke": {"batch_size": 1, "method_config": {"autoencoder": AE_PRESETS["smoke"],
                                                     "discriminator": {"channels": 8}}},
        # CPU minutes: an 8-channel autoencoder (the same 8x downsampling) trained on 64³
        # patches of the demo volumes (2.1 s per step of 2 patches on 2 cores, critic
        # included), 300 steps, the critic joining after 100
        "demo": {"batch_size": 2, "max_steps": 300, "lr": 5e-4, "ema_decay": 0.0,
                 "val_every": 50, "export": "best_val",
                 "method_config": {"autoencoder": AE_PRESETS["demo"],
                                   "data": {"mode": "patches", "patch_size": [64, 64, 64]},
                                   "discriminator": {"channels": 8}, "adversarial_start": 100}},
        # CondDiff aekl_ad_3d.yaml (implementations.md §5.4): lr 5e-5, 25 epochs, early stop
        # after 5 validations without improvement; the batch size is not given (MONAI's 3D
        # recipe uses 2) and the critic starts after about a fifth of training (MONAI: 5 of
        # 25 epochs)
        "paper": {"batch_size": 2, "lr": 5e-5, "max_steps": 100_000, "ema_decay": 0.0,
                  "val_every": 1000, "patience": 5, "export": "best_val",
                  "method_config": {"adversarial_start": 20_000}},
    }  # fmt: skip

    config: AEKLConfig

    def __init__(self, config: AEKLConfig) -> None:
        super().__init__(config)
        self.autoencoder = build_autoencoder(config.autoencoder)
        self.discriminator = build_discriminator(config.discriminator, dims=3)
        self.register_buffer("latent_std", torch.ones(()))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self._perceptual: list[torch.nn.Module] = []  # a list: not a submodule, not exported

    def load_pretrained(self) -> None:
        """Load the perceptual network's weights (when the config names them)."""
        if self.config.perceptual is not None:
            from adsys.nn.perceptual import load_medicalnet

            self._perceptual[:] = [load_medicalnet(self.config.perceptual.weights)]

    def encode(self, images: torch.Tensor, multiple: int | None = None):
        """Posterior-mean latents (B, C_z, *spatial / 8) of ``images`` (B, 1, *spatial) in
        [0, 1], padded to ``multiple`` (default ``pad_multiple``); returns (latents, the
        region to crop decoded volumes to)."""
        return encode_padded(self.autoencoder, images, multiple or self.config.pad_multiple)

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)[-1]

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        x, _ = pad_to_multiple(batch["image"], self.config.pad_multiple)
        mu, sigma = self.autoencoder.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + sigma * eps
        rec = self.autoencoder.decode(z)
        loss = F.l1_loss(rec, x) + self.config.kl_weight * kl_divergence(mu, sigma)
        if self.config.perceptual is not None:
            if not self._perceptual:
                raise RuntimeError("perceptual.weights is set: call load_pretrained() first")
            from adsys.nn.perceptual import perceptual_distance

            net = self._perceptual[0].to(x.device)
            loss = loss + self.config.perceptual.weight * perceptual_distance(net, rec, x)
        if self.training:
            with torch.no_grad():
                m = 1.0 if self.steps_seen == 0 else self.config.latent_std_momentum
                self.latent_std.lerp_(z.float().std(), m)
                self.steps_seen += 1
        if self.steps_seen > self.config.adversarial_start:
            w = self.config.adversarial_weight
            fake, real = self._critic(rec.detach()), self._critic(x)
            critic = 0.5 * (((fake**2).mean()) + ((real - 1) ** 2).mean())
            for p in self.discriminator.parameters():  # the generator's term: critic frozen
                p.requires_grad_(False)
            try:
                generator_term = ((self._critic(rec) - 1) ** 2).mean()
            finally:
                for p in self.discriminator.parameters():
                    p.requires_grad_(True)
            loss = loss + w * (generator_term + critic)
        return loss

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Decode(posterior mean of encode(x)), in [0, 1]."""
        latents, region = self.encode(images)
        return decode_cropped(self.autoencoder, latents, region).clamp(0, 1)
