"""The KL autoencoder of latent diffusion (CondDiff's stage 1) and its PatchGAN critic.

Both are MONAI's networks (``monai.networks.nets.AutoencoderKL`` / ``PatchDiscriminator``,
the implementations CondDiff's code trains); this module holds their configs, their
construction and the padding that makes a volume fit the encoder. Defaults are CondDiff's
``aekl_ad_3d.yaml``: 3D, 1 → 3 latent channels, channels (64, 128, 128, 128), 2 res blocks
per level, no attention, so a volume is downsampled ``2^(levels − 1)`` = 8× per axis
(160³ → 3 × 20³).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from adsys.config import StrictModel

__all__ = ["AutoencoderConfig", "DiscriminatorConfig", "build_autoencoder",
           "build_discriminator", "crop_from", "decode_cropped", "encode_padded",
           "kl_divergence", "pad_to_multiple"]


class AutoencoderConfig(StrictModel):
    """``AutoencoderKL`` arguments. ``gradient_checkpointing`` recomputes the encoder's and
    decoder's activations in the backward pass (MONAI's ``use_checkpoint``)."""

    dims: int = 3
    channels: tuple[int, ...] = (64, 128, 128, 128)
    num_res_blocks: int = 2
    latent_channels: int = 3
    norm_num_groups: int = 32
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _groups_divide(self) -> AutoencoderConfig:
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"norm_num_groups ({self.norm_num_groups}) must divide every "
                             f"channel count {self.channels}")
        return self

    @property
    def factor(self) -> int:
        """The downsampling factor per axis, ``2^(levels − 1)``."""
        return 2 ** (len(self.channels) - 1)


class DiscriminatorConfig(StrictModel):
    """``PatchDiscriminator`` arguments (PatchGAN, ``num_layers`` strided 4³ convolutions)."""

    channels: int = 32
    num_layers: int = 3


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    """MONAI's ``AutoencoderKL``: ``encode(x) → (μ, σ)``, ``decode(z)``; no attention."""
    from monai.networks.nets import AutoencoderKL

    levels = len(config.channels)
    return AutoencoderKL(
        spatial_dims=config.dims, in_channels=1, out_channels=1,
        num_res_blocks=config.num_res_blocks, channels=config.channels,
        attention_levels=(False,) * levels, latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups, with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False, use_checkpoint=config.gradient_checkpointing,
    )  # fmt: skip


def build_discriminator(config: DiscriminatorConfig, dims: int) -> nn.Module:
    """MONAI's ``PatchDiscriminator`` on one-channel images: (B, 1, *spatial) → patch logits
    (the last of its outputs)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=dims, channels=config.channels, in_channels=1,
                              out_channels=1, num_layers_d=config.num_layers)


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over each item's latent, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


def pad_to_multiple(
    x: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes of ``x`` (B, C, *spatial) to multiples of ``multiple``,
    split evenly before and after (background is 0 after preprocessing); returns the padded
    tensor and the region of the original in it (:func:`crop_from`)."""
    spatial = x.shape[2:]
    pads, region = [], []
    for n in spatial:
        total = math.ceil(n / multiple) * multiple - n
        before = total // 2
        pads.append((before, total - before))
        region.append(slice(before, before + n))
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad: last axis first
    return F.pad(x, flat), tuple(region)


def crop_from(x: torch.Tensor, region: tuple[slice, ...]) -> torch.Tensor:
    """The ``region`` of :func:`pad_to_multiple` cut back out of ``x`` (B, C, *spatial)."""
    return x[(slice(None), slice(None), *region)]


@torch.no_grad()
def encode_padded(
    autoencoder: nn.Module, images: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Posterior-mean latents of ``images`` (B, 1, *spatial) padded to ``multiple``, and the
    region of the volume in the padded grid (for :func:`decode_cropped`)."""
    padded, region = pad_to_multiple(images, multiple)
    mu, _ = autoencoder.encode(padded)
    return mu, region


@torch.no_grad()
def decode_cropped(
    autoencoder: nn.Module, latents: torch.Tensor, region: tuple[slice, ...]
) -> torch.Tensor:
    """Volumes (B, 1, *spatial) decoded from ``latents`` and cropped to ``region``."""
    return crop_from(autoencoder.decode(latents), region)
