"""``cddpm``: the conditioned DDPM of Behrendt et al. (2025).

``ddpm`` plus a ResNet encoder of the clean input whose vector (d = 512 as the public code;
the paper's 128 via ``encoder.out_dim``) is embedded and concatenated to the time embedding,
feeding FiLM in every ResBlock; the encoder trains jointly. Training batches get torchio
intensity augmentation (RandomGamma p 0.5, RandomBiasField 0.25, RandomBlur 0.25,
RandomGhosting 0.5) as the data spec's online corruption, made in the loader's workers;
validation batches stay clean. Restoration: the mean of one-step x0 at steps 249, 499 and 749
(the code's t = 250, 500, 750, 1-based), with a fresh simplex map per t and the encoder
vector of the (clean) input.
"""

from __future__ import annotations

import torch
from pydantic import model_validator

from adsys.config import deep_merge
from adsys.methods import register
from adsys.methods.base import CorruptionSpec, DataSpec, InferenceRecipe
from adsys.methods.ddpm import DDPM, DDPMConfig
from adsys.nn import ResNetEncoder, ResNetEncoderConfig, UNetConfig

__all__ = ["CDDPM", "CDDPMConfig"]


class CDDPMConfig(DDPMConfig):
    """:class:`DDPMConfig` + ``encoder``; ``unet.cond_dim`` follows ``encoder.out_dim``."""

    method: str = "cddpm"
    encoder: ResNetEncoderConfig = ResNetEncoderConfig(out_dim=512)
    data: DataSpec = DataSpec(
        fields=("image", "mask"), corruption=CorruptionSpec(name="intensity_augmentation")
    )
    inference: InferenceRecipe = InferenceRecipe(t_values=(249, 499, 749))

    @model_validator(mode="after")
    def _cond_dim(self) -> CDDPMConfig:
        if self.unet.cond_dim not in (None, self.encoder.out_dim):
            raise ValueError(
                f"unet.cond_dim ({self.unet.cond_dim}) must equal encoder.out_dim "
                f"({self.encoder.out_dim}); leave it unset and it follows the encoder"
            )
        return self

    def unet_config(self) -> UNetConfig:
        return super().unet_config().model_copy(update={"cond_dim": self.encoder.out_dim})

    def encoder_config(self) -> ResNetEncoderConfig:
        """The encoder this method builds (its ``dims`` follows ``data.dims``)."""
        return self.encoder.model_copy(update={"dims": self.data.dims})


@register("cddpm")
class CDDPM(DDPM):
    config_cls = CDDPMConfig
    presets = {
        "smoke": deep_merge(DDPM.presets["smoke"], {
            "method_config": {"encoder": {"depth": 18, "width": 8, "out_dim": 32}},
        }),
        "demo": deep_merge(DDPM.presets["demo"], {
            "method_config": {"encoder": {"depth": 18, "width": 16, "out_dim": 128}},
        }),
        # experiment cDDPM/DDPM_cond_spark_2D: as ddpm's, but fp16 (the trainer's default);
        # the encoder is trained from scratch (SparK pretraining is not part of adsys)
        "paper": deep_merge(DDPM.presets["paper"], {"precision": "fp16"}),
    }  # fmt: skip

    def __init__(self, config: CDDPMConfig) -> None:
        super().__init__(config)
        self.encoder = ResNetEncoder(config.encoder_config())

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
