"""Small irregular brains and fluid fields shared by the synth and kernel tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from adsys.kernels.advdiff import AdvDiffFields
from adsys.synth.flow import make_fields


def irregular_mask(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 blob: an ellipsoid cut by smoothed noise, with holes and a ragged surface."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    ellipsoid = sum(g**2 for g in grid) <= 0.9
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    mask = ellipsoid & (noise > np.quantile(noise, 0.2))
    mask &= rng.random(shape) > 0.03  # isolated holes
    return mask.astype(np.uint8)


def smooth_field(shape, seed: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    f = (f - f.min()) / (f.max() - f.min())
    return (lo + (hi - lo) * f).astype(np.float32)


def paper_fields(mask: np.ndarray, seed: int = 0, d_max: float = 1.0) -> AdvDiffFields:
    """Divergence-free, boundary-tangential fields with advection and diffusion on."""
    return make_fields(
        mask, res=2, speed=60.0, d_max=d_max, width=2.0, seeds=[seed, seed + 1, seed + 2, seed + 3]
    )


def random_fields(mask: np.ndarray, seed: int = 0) -> AdvDiffFields:
    """Arbitrary (not divergence-free) fields: exercises every branch of a stage."""
    g = torch.Generator().manual_seed(seed)
    shape = mask.shape
    return AdvDiffFields(
        *(torch.randn(shape, generator=g) for _ in range(3)),
        d=torch.rand(shape, generator=g),
        mask=torch.from_numpy(mask),
    )
