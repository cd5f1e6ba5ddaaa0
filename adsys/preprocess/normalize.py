"""Intensity normalisation with the three published recipes (see ``PreprocessConfig``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from adsys.preprocess.config import Normalization


def normalize_intensity(
    image: np.ndarray,
    mask: np.ndarray,
    recipe: Normalization = "percentile",
    *,
    percentiles: tuple[float, float] = (1.0, 99.0),
    quantiles: tuple[float, float] = (0.0, 0.98),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Map ``image`` (x, y, z) to [0, 1] and zero the background (``mask`` False).

    Returns the float32 result and a record ``{"recipe", "lo", "hi"}`` of the intensities
    that were mapped to 0 and 1. Raises ``ValueError`` when the image is constant over the
    voxels the recipe looks at (nothing to normalise).
    """
    mask = mask.astype(bool)
    img = image.astype(np.float32, copy=True)
    if recipe == "percentile":
        lo, hi = np.percentile(img[mask], percentiles)
    elif recipe == "quantile":
        np.maximum(img, 0, out=img)
        lo, hi = np.quantile(img, quantiles)
    elif recipe == "max":
        np.maximum(img, 0, out=img)
        lo, hi = 0.0, float(img.max())
    else:
        raise ValueError(f"unknown normalisation recipe {recipe!r}")
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        raise ValueError(f"image intensities are constant ({lo}) where recipe {recipe!r} looks")
    img -= lo
    img *= 1.0 / (hi - lo)
    np.clip(img, 0.0, 1.0, out=img)
    img[~mask] = 0.0
    return img, {"recipe": recipe, "lo": lo, "hi": hi}
