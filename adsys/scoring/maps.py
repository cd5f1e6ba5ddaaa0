"""Voxel-wise anomaly maps from an input and its reconstruction.

Tensors are channel-first with a batch axis, ``(B, C, *spatial)``, on any device; images are
in [0, 1] unless stated. ``spatial_dims`` (2 or 3) says over how many trailing axes windows
and shifts act: a volume scored slice by slice is passed as ``(Z, 1, X, Y)`` with
``spatial_dims=2`` (see :func:`adsys.scoring.window.volume_to_slices`).

* :func:`l1_residual` — ``|x − x̂|`` (cDDPM, pDDPM, DISYRE).
* :func:`ssim_map` / :func:`ssim_anomaly_map` — the SSIM index map of Wang et al. (2004)
  with a Gaussian window (11 taps, σ = 1.5), ``K1 = 0.01``, ``K2 = 0.03``, population
  (co)variances; anomaly = ``1 − SSIM``. ``data_range`` defaults to 1.0 (images in [0, 1]);
  ``data_range=255`` reproduces UPD/ICDM, whose ``torchgeometry`` SSIM uses ``max_val=255`` on
  [0, 1] images (C1 = 6.5, C2 = 58.5: a map with a tiny dynamic range; rank metrics are
  still meaningful). ``padding="reflect"`` (default) equals ``skimage.metrics.
  structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  full=True)``; ``padding="zeros"`` is torchgeometry's zero-padded convolution.
* :func:`shift_tolerant_residual` — CondDiff: for every voxel the minimum over all shifts of
  the reconstruction by ``−k … k`` voxels per axis (``(2k+1)^d`` shifts) of ``|x − shift(x̂)|``;
  ``padding="edge"`` (default) repeats border voxels, ``"circular"`` wraps around as
  CondDiff's ``np.roll`` does.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "gaussian_window",
    "l1_residual",
    "shift_tolerant_residual",
    "ssim_anomaly_map",
    "ssim_map",
]

SSIMPadding = Literal["reflect", "zeros"]
ShiftPadding = Literal["edge", "circular"]


def _check_pair(x: torch.Tensor, rec: torch.Tensor, spatial_dims: int) -> None:
    if x.shape != rec.shape:
        raise ValueError(f"input {tuple(x.shape)} and reconstruction {tuple(rec.shape)} differ")
    if spatial_dims not in (2, 3) or x.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected (B, C, *spatial) with {spatial_dims} spatial dims, got {tuple(x.shape)}"
        )


def l1_residual(x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """``|x − x̂|``, same shape as the inputs."""
    if x.shape != rec.shape:
        raise ValueError(f"input {tuple(x.shape)} and reconstruction {tuple(rec.shape)} differ")
    return (x - rec).abs()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1D Gaussian of ``size`` taps (float64), centred."""
    r = (size - 1) / 2.0
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - r) ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def _symmetric_index(n: int, r: int) -> torch.Tensor:
    """Indices of SciPy's ``reflect`` (half-sample symmetric) padding by ``r`` on both sides."""
    return torch.from_numpy(np.pad(np.arange(n), r, mode="symmetric"))


def _blur(t: torch.Tensor, window: torch.Tensor, spatial_dims: int, padding: SSIMPadding):
    """Separable Gaussian filtering of (N, 1, *spatial) ``t`` along each spatial axis."""
    r = (window.numel() - 1) // 2
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    for axis in range(spatial_dims):
        dim = 2 + axis
        shape = [1, 1] + [1] * spatial_dims
        shape[dim] = window.numel()
        kernel = window.to(t).view(shape)
        if padding == "reflect":
            idx = _symmetric_index(t.shape[dim], r).to(t.device)
            t = conv(t.index_select(dim, idx), kernel)
        else:
            pad = [0] * spatial_dims
            pad[axis] = r
            t = conv(t, kernel, padding=tuple(pad))
    return t


def ssim_map(
    x: torch.Tensor,
    rec: torch.Tensor,
    *,
    spatial_dims: int = 2,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: SSIMPadding = "reflect",
) -> torch.Tensor:
    """The SSIM index at every voxel, ``(B, C, *spatial)``, computed per channel.

    See the module doc for the constants and the ``data_range`` / ``padding`` options.
    Computed in float64 for stability, returned in the input dtype.
    """
    _check_pair(x, rec, spatial_dims)
    if padding not in ("reflect", "zeros"):
        raise ValueError(f"unknown SSIM padding {padding!r}; use 'reflect' or 'zeros'")
    shape = x.shape
    a = x.reshape(-1, 1, *shape[2:]).double()
    b = rec.reshape(-1, 1, *shape[2:]).double()
    g = gaussian_window(window, sigma).to(a.device)
    stacked = torch.cat([a, b, a * a, b * b, a * b])
    mu_a, mu_b, aa, bb, ab = _blur(stacked, g, spatial_dims, padding).chunk(5)
    var_a = aa - mu_a * mu_a
    var_b = bb - mu_b * mu_b
    cov = ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return (num / den).reshape(shape).to(x.dtype)


def ssim_anomaly_map(x: torch.Tensor, rec: torch.Tensor, **kwargs) -> torch.Tensor:
    """``1 − SSIM`` (UPD/ICDM's map); keyword arguments as :func:`ssim_map`."""
    return 1.0 - ssim_map(x, rec, **kwargs)


def shift_tolerant_residual(
    x: torch.Tensor,
    rec: torch.Tensor,
    *,
    k: int = 2,
    spatial_dims: int = 3,
    padding: ShiftPadding = "edge",
) -> torch.Tensor:
    """``min over shifts s ∈ {−k..k}^d of |x − x̂(· − s)|`` (CondDiff), ``(B, C, *spatial)``.

    ``padding="edge"`` (default) fills shifted-in voxels with the nearest border voxel;
    ``"circular"`` wraps them around (``np.roll``, CondDiff-compatible).
    """
    _check_pair(x, rec, spatial_dims)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if padding == "edge":
        pad_mode = "replicate"
    elif padding == "circular":
        pad_mode = "circular"
    else:
        raise ValueError(f"unknown shift padding {padding!r}; use 'edge' or 'circular'")
    if k == 0:
        return (x - rec).abs()
    spatial = x.shape[2:]
    if pad_mode == "circular" and any(k > n for n in spatial):
        raise ValueError(f"circular shifts of {k} need every spatial size >= {k}, got {spatial}")
    padded = F.pad(rec, [k] * (2 * spatial_dims), mode=pad_mode)
    out = torch.full_like(x, math.inf)
    diff = torch.empty_like(x)
    for offsets in itertools.product(range(2 * k + 1), repeat=spatial_dims):
        view = padded[(..., *(slice(o, o + n) for o, n in zip(offsets, spatial, strict=True)))]
        torch.sub(x, view, out=diff).abs_()
        torch.minimum(out, diff, out=out)
    return out
