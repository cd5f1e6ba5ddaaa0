"""Preprocessing configuration: :class:`PreprocessConfig`, the steps and normalisation
recipe that turn a raw volume into a model input (recorded next to every output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from adsys.config import StrictModel

Normalization = Literal["percentile", "quantile", "max"]


class PreprocessConfig(StrictModel):
    """How a raw volume becomes a model input.

    Order of steps: optional N4 → (optional subject→template affine + resampling to
    ``spacing``, one interpolation) → brain mask → crop/pad to ``shape`` around the brain →
    intensity normalisation → background set to 0.

    Brain mask without a mask file: ``image > background + mask_threshold`` on the source
    grid, resampled like a mask file (nearest). ``mask_background`` is the background level
    in the image's units, or ``border`` (default): the most frequent value on the volume's
    faces, i.e. the constant skull stripping leaves outside the brain (0, an offset, -1024 in
    CT units). Scans with a noisy background need a mask file.

    Normalisation recipes (``normalization``):
      * ``percentile`` — the ``percentiles`` (default 1st, 99th) of intensities *inside the
        brain mask* map to 0 and 1, clipped to [0, 1] (cDDPM / pDDPM; default).
      * ``quantile`` — negatives clipped to 0, then the ``quantiles`` (default 0, 0.98) of the
        *whole volume, background included* map to 0 and 1, clipped (DISYRE).
      * ``max`` — negatives clipped to 0, divided by the volume maximum (UPD / ICDM).
    """

    spacing: float | tuple[float, float, float] = 1.0
    shape: tuple[int, int, int] | None = (160, 192, 160)
    template: Path | None = None
    interpolation: Literal["bspline", "linear"] = "bspline"
    mask_threshold: float = 0.0
    mask_background: float | Literal["border"] = "border"
    normalization: Normalization = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    quantiles: tuple[float, float] = (0.0, 0.98)
    n4: bool = False

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: float | tuple[float, float, float]) -> float | tuple[float, ...]:
        values = (v,) if isinstance(v, int | float) else v
        if any(s <= 0 for s in values):
            raise ValueError(f"spacing must be > 0 mm, got {v}")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and any(s < 1 for s in v):
            raise ValueError(f"shape must be positive voxel counts, got {v}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> PreprocessConfig:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}"
            )
        lo, hi = self.quantiles
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"quantiles must satisfy 0 <= lo < hi <= 1, got {self.quantiles}")
        return self

    @property
    def spacing3(self) -> tuple[float, float, float]:
        s = self.spacing
        return (float(s),) * 3 if isinstance(s, int | float) else tuple(float(v) for v in s)
