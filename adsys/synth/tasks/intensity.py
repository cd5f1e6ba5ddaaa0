"""Smooth intensity change (task 4 of Baugh et al. 2024: the code's ``SmoothNoiseAdditionTask``;
implementations.md §3.3 and §7 item 18).

Inside the anomaly's shape the image changes by ramp · m · noise, then is clipped to its range:

* **magnitude** m = (s/2 + Gamma(k=3, θ=s)) · (±1, ½ each); s = 0.1 (ICDM);
* **noise** (variant ``perlin``, ICDM): fractal Perlin noise over the anomaly's grid box,
  rescaled to [0, 1] (:func:`fractal_perlin`). With M = mean(grid)/3 the most intervals, the
  first layer has c₁ = 1 + Exp(mean (M − 1)/4.5) intervals; layers = min(⌊log₂(M/c₁)⌋ + 1,
  1 + Poisson(1)), at least 1; each next layer has the previous one's intervals × 2·N(1, 0.1)
  (while under M); a layer's intervals per axis are its count × N(1, 0.1); layer i weighs 2^−i.
  Each layer is :class:`adsys.synth.perlin.PerlinLattice` noise (unit gradients, smootherstep)
  on ⌈intervals⌉ lattice cells, evaluated at voxel i of n at i·intervals/n (the code's grid),
  with its gradients drawn from a recorded seed.
  Variant ``uniform`` (MTML 2023's ``SmoothIntensityChangeTask``): noise = 1, and its scale
  s = 0.2 is the natural default there;
* **ramp** = min(EDT / w, 1), EDT the distance of a shape voxel to the nearest voxel outside
  the shape, w = min(min(image shape)·(0.02 + Gamma(3, 0.01)), max EDT). The code takes the
  EDT on the bare grid box, so a shape touching its box's side has no zero there; here the
  box is padded with one outside voxel, so the ramp always starts at the shape's edge.

Records: ``magnitude`` m (signed), ``ramp`` the fraction 0.02 + Gamma(3, 0.01), ``noise``
``{"intervals": per layer, D floats, "seeds": per layer, int}`` or ``None`` (uniform).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from adsys.synth.perlin import PerlinLattice

__all__ = ["draw_intensity", "fractal_perlin", "intensity_patch"]

Variant = Literal["perlin", "uniform"]


def fractal_perlin(
    shape: tuple[int, ...], intervals: list[list[float]], seeds: list[int]
) -> np.ndarray:
    """Fractal Perlin noise of ``shape`` (2D/3D) in [0, 1], float64: layer i has
    ``intervals[i]`` (per axis) lattice intervals over the box, amplitude 2^−i and gradients
    drawn from ``seeds[i]`` (module doc). Constant noise (a one-voxel box) is 1."""
    total = np.zeros(shape)
    for i, (layer, seed) in enumerate(zip(intervals, seeds, strict=True)):
        res = [max(1, math.ceil(r)) for r in layer]
        lattice = PerlinLattice.sample(res, dim=len(shape), seed=seed, dtype=torch.float64)
        axes = [
            torch.arange(n, dtype=torch.float64) * (r / n)
            for n, r in zip(shape, layer, strict=True)
        ]
        total += 2.0**-i * lattice(*axes).numpy()
    low, high = total.min(), total.max()
    return (total - low) / (high - low) if high > low else np.ones(shape)


def draw_intensity(
    rng: np.random.Generator, grid: tuple[int, ...], scale: float, variant: Variant
) -> dict[str, Any]:
    """Draw an intensity change over an anomaly grid of shape ``grid``: its record."""
    sign = 1 if rng.random() < 0.5 else -1
    rec: dict[str, Any] = {
        "magnitude": float(scale / 2 + rng.gamma(3, scale)) * sign,
        "ramp": float(0.02 + rng.gamma(3, 0.01)),
        "noise": None,
    }
    if variant == "perlin":
        most = float(np.mean(grid)) / 3
        first = 1 + rng.exponential(max(most - 1, 0.0) / 4.5)
        layers = max(1, min(math.floor(math.log2(most / first)) + 1, 1 + int(rng.poisson(1))))
        cores = [first]
        while len(cores) < layers and cores[-1] < most:
            cores.append(cores[-1] * 2 * rng.normal(1, 0.1))
        rec["noise"] = {
            "intervals": [
                [float(c * j) for j in rng.normal(1, 0.1, size=len(grid))] for c in cores
            ],
            "seeds": [int(rng.integers(2**63 - 1)) for _ in cores],
        }
    return rec


def intensity_patch(
    patch: np.ndarray, raster: np.ndarray, rec: dict[str, Any], min_side: int
) -> np.ndarray:
    """``patch`` (the anomaly's grid box, float64) plus ramp · m · noise inside ``raster``
    (module doc; unclipped); ``min_side`` is the image's smallest spatial size."""
    padded = np.pad(raster, 1)
    dist = ndimage.distance_transform_edt(padded)[(slice(1, -1),) * raster.ndim]
    width = min(min_side * rec["ramp"], float(dist.max()))
    ramp = np.minimum(dist / width, 1.0)
    noise = rec["noise"]
    field = (
        1.0 if noise is None else fractal_perlin(raster.shape, noise["intervals"], noise["seeds"])
    )
    return patch + ramp * rec["magnitude"] * field
