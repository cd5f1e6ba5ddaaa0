"""The classic baselines: the floor of every table (the first row of cDDPM's).

Nothing is trained. Each baseline's map is a fixed function of the input, at most with
voxel-wise statistics of the training subjects, which training computes in one pass over the
training split of the shards (:meth:`Method.fit`, called instead of the optimisation loop for
a method that is not ``trainable``). They run through the same inference job, post-processing
and protocols as the diffusion methods (map kind ``method``: the map is the method's own):

* ``threshold`` — the image itself: hyper-intense voxels score high;
* ``threshold-hypo`` — 1 − the image: hypo-intense voxels score high (the background scores 1
  here; every protocol's post-processing masks it out);
* ``deviation`` — |x − μ| with μ the voxel-wise mean of the training subjects' volumes
  (``form: abs``), or the z-score |x − μ| / max(σ, ``min_std``) with σ their voxel-wise
  standard deviation (numpy's, ddof 0; ``form: z``). The volumes are compared voxel by voxel,
  so they must lie on the training grid: the same preprocessing (registration, spacing, shape)
  and whole volumes as the window (the default).

Maps of ``threshold`` / ``threshold-hypo`` / ``deviation`` (abs) lie in [0, 1]; a z-score is
unbounded, so its pooled histograms span [0, ``Z_SCORE_MAX``] (higher scores count as clipped;
the per-volume metrics are exact).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator

from adsys.methods import register
from adsys.methods.base import DataSpec, InferenceRecipe, Method, MethodConfig
from adsys.scoring.config import MapConfig

__all__ = ["Deviation", "DeviationConfig", "Threshold", "ThresholdConfig", "ThresholdHypo",
           "Z_SCORE_MAX"]

Z_SCORE_MAX = 10.0  # top of the pooled histograms of z-score maps

_RECIPE = InferenceRecipe(map=MapConfig(kind="method"))
_PRESETS: dict[str, dict[str, Any]] = {"smoke": {}, "demo": {}, "paper": {}}  # nothing to tune


class ThresholdConfig(MethodConfig):
    """Whole volumes, the map is the method's own (module doc)."""

    method: str = "threshold"
    data: DataSpec = DataSpec(dims=3, mode="volumes")
    inference: InferenceRecipe = _RECIPE


class _Baseline(Method):
    """A method with nothing to optimise: training is :meth:`fit` (reads nothing by
    default)."""

    trainable: ClassVar[bool] = False
    presets = _PRESETS


@register("threshold")
class Threshold(_Baseline):
    """The map is the image (B, 1, X, Y, Z) itself."""

    config_cls = ThresholdConfig

    def anomaly_map(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images.clone()


class ThresholdHypoConfig(ThresholdConfig):
    method: str = "threshold-hypo"


@register("threshold-hypo")
class ThresholdHypo(_Baseline):
    """The map is 1 − the image."""

    config_cls = ThresholdHypoConfig

    def anomaly_map(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return 1.0 - images


class DeviationConfig(ThresholdConfig):
    """``form`` ``abs`` | ``z`` and the z-score's ``min_std`` (intensity units); ``grid``: the
    training volumes' shape, recorded by :meth:`Deviation.fit` (it sizes the statistics)."""

    method: str = "deviation"
    form: Literal["abs", "z"] = "abs"
    min_std: float = 0.01
    grid: tuple[int, int, int] | None = None

    @model_validator(mode="after")
    def _z_range(self) -> DeviationConfig:
        if self.min_std <= 0:
            raise ValueError(f"min_std must be > 0, got {self.min_std}")
        if self.form == "z" and self.inference.map.score_max is None:
            self.inference = self.inference.model_copy(update={
                "map": self.inference.map.model_copy(update={"score_max": Z_SCORE_MAX})})
        return self


@register("deviation")
class Deviation(_Baseline):
    """Voxel-wise mean and std of the training volumes (buffers ``mean``, ``std``: (X, Y, Z),
    float32) and the distance of a volume to them (module doc)."""

    config_cls = DeviationConfig

    def __init__(self, config: DeviationConfig) -> None:
        super().__init__(config)
        shape = tuple(config.grid) if config.grid is not None else (0, 0, 0)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.zeros(shape))

    @torch.no_grad()
    def fit(self, batches: Iterable[dict[str, Any]]) -> int:
        """Mean and std (ddof 0) over every volume of ``batches`` (``image``: (B, 1, X, Y, Z)),
        accumulated in float64; records their grid in the config. Returns the volume count."""
        total = squares = None
        n = 0
        for batch in batches:
            x = batch["image"].to(torch.float64)[:, 0]
            if total is None:
                total = torch.zeros(x.shape[1:], dtype=torch.float64)
                squares = torch.zeros_like(total)
            elif x.shape[1:] != total.shape:
                raise ValueError(f"training volumes of shapes {tuple(total.shape)} and "
                                 f"{tuple(x.shape[1:])}: deviation needs one grid (preprocess "
                                 "the cohort to one shape)")
            total += x.sum(0)
            squares += (x * x).sum(0)
            n += x.shape[0]
        if total is None:
            raise ValueError("deviation: the training split holds no volume")
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        self.mean = mean.float()
        self.std = var.sqrt().float()
        self.config = self.config.model_copy(update={"grid": tuple(mean.shape)})
        return n

    def anomaly_map(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.config.grid is None:
            raise ValueError("deviation has no statistics yet: train it (adsys train --method "
                             "deviation) and use its export")
        if tuple(images.shape[2:]) != tuple(self.mean.shape):
            raise ValueError(
                f"deviation compares voxel by voxel with the training mean of shape "
                f"{tuple(self.mean.shape)}, got a volume of {tuple(images.shape[2:])}: "
                "preprocess the cohort like the training shards and keep whole-volume windows")
        diff = (images - self.mean.to(images.dtype)).abs()
        if self.config.form == "z":
            return diff / self.std.to(images.dtype).clamp_min(self.config.min_std)
        return diff
