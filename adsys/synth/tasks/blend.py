"""Poisson blending with mixed gradients (tasks 0 and 1 of Baugh et al. 2024): a transformed
patch of a source image is blended into the anomaly's shape (implementations.md §3.3).

**Solver** (:func:`poisson_blend`, 2D or 3D, float64). Pérez et al.'s discrete Poisson equation
on a box, as OpenCV's ``seamlessClone`` and the public code's ``pietorch.blend_dst_numpy`` pose
it: at every interior voxel p of the box

    Σ_a [f(p + e_a) − 2 f(p) + f(p − e_a)] = Σ_a [v_a(p) − v_a(p − e_a)],

with f = the target on the box's border voxels (Dirichlet). v_a(p) is the guidance on the edge
(p, p + e_a): on edges that touch the mask (either end inside), the **mixed gradient** — the
source's difference where its magnitude exceeds the target's, else the target's — and the
target's difference elsewhere. So f − target is harmonic away from the mask and vanishes on the
border; it is solved exactly by the type-I discrete sine transform, which diagonalises the
Dirichlet Laplacian (eigenvalues Σ_a −4 sin²(π k_a / (2(m_a + 1))), k_a = 1..m_a).

**Source patch** (:func:`draw_transform`, :func:`draw_source_corner`, :func:`source_patch`),
the code's backward map from the anomaly's grid (size n) into the source: M = s·R, R a rotation
by U(−π/4, π/4) per axis pair, s = 1 + Exp(0.1) or its reciprocal (½ each), capped at
min_a 0.8·(source size)_a / (region size)_a, the region being the bounding box of R·[0, n]^D
rounded out to voxels (so the scaled region spans at most 0.8 of the source, plus the voxel
rounding). The source region of M is centred on a source foreground voxel at which it fits in the
source (none: the caller draws another source). The patch is the source sampled at M·o + offset
with cubic splines (``scipy.ndimage.affine_transform``, order 3; ``nearest`` beyond the image),
clipped to the source's range. (The code resamples a crop of just the region, with zeros
beyond it, which can darken the patch's rim; sampling the whole source avoids that.)

**Blend** (:func:`blend_patch`): the solver runs on the anomaly's grid grown by one voxel per
side (clipped to the image), so the shape's voxels are interior; the blended box is clipped to
the current image's range. It changes voxels outside the shape a little, which is why the task
adds every voxel whose value changed by more than 0.001 to the anomaly mask.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import fft, ndimage

from adsys.synth.tasks.shapes import rotation

__all__ = [
    "MASK_THRESHOLD",
    "blend_patch",
    "draw_source_corner",
    "draw_transform",
    "mixed_guidance",
    "poisson_blend",
    "source_patch",
]

MASK_THRESHOLD = 0.001
"""A voxel whose value the blending changed by more than this joins the anomaly mask."""


def _along(axis: int, part: slice) -> tuple[slice, ...]:
    """Index ``part`` along ``axis``, everything along the axes before it."""
    return (slice(None),) * axis + (part,)


def mixed_guidance(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The guidance v_a on the edges (p, p + e_a) of a box, one array per axis a (the box's
    shape, one shorter along a): mixed gradients on edges touching ``mask``, the target's
    differences elsewhere (module doc). ``target``, ``source``, ``mask``: the box's shape."""
    guidance = []
    for a in range(target.ndim):
        t, s = np.diff(target, axis=a), np.diff(source, axis=a)
        touches = mask[_along(a, slice(None, -1))] | mask[_along(a, slice(1, None))]
        guidance.append(np.where(touches & (np.abs(s) > np.abs(t)), s, t))
    return guidance


def _divergence(guidance: list[np.ndarray]) -> np.ndarray:
    """Σ_a v_a(p) − v_a(p − e_a) at the box's interior voxels."""
    ndim = len(guidance)
    inner = slice(1, -1)
    return sum(
        v[tuple(slice(1, None) if b == a else inner for b in range(ndim))]
        - v[tuple(slice(None, -1) if b == a else inner for b in range(ndim))]
        for a, v in enumerate(guidance)
    )


def _dirichlet_solve(rhs: np.ndarray) -> np.ndarray:
    """u with Δu = ``rhs`` on a box of interior voxels and u = 0 beyond it (DST-I)."""
    eig = sum(
        (-4 * np.sin(np.pi * np.arange(1, m + 1) / (2 * (m + 1))) ** 2).reshape(
            [-1 if b == a else 1 for b in range(rhs.ndim)]
        )
        for a, m in enumerate(rhs.shape)
    )
    return fft.idstn(fft.dstn(rhs, type=1) / eig, type=1)


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` blended into ``target`` inside ``mask`` with mixed gradients: the solution
    of the discrete Poisson equation on the box (module doc), float64 of the box's shape;
    its border voxels are ``target``'s. All three arrays share one 2D or 3D shape."""
    target = np.asarray(target, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    out = target.copy()
    if min(target.shape) < 3:
        return out  # no interior voxel
    guidance = mixed_guidance(target, source, np.asarray(mask, dtype=bool))
    change = [v - np.diff(target, axis=a) for a, v in enumerate(guidance)]  # 0 off the mask
    out[(slice(1, -1),) * target.ndim] += _dirichlet_solve(_divergence(change))
    return out


def _region(matrix: np.ndarray, grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The source region of the backward map ``matrix`` from a grid of size ``grid``: the
    floor of its lowest corner (D,) and its size (D,) ints (the corners [0, n]^D mapped)."""
    corners = np.array(list(itertools.product(*[(0, n) for n in grid])), dtype=np.float64).T
    mapped = matrix @ corners
    low = np.floor(mapped.min(1))
    return low, (np.ceil(mapped.max(1)) - low).astype(int)


def _matrix(angles: list[float], scale: float, dims: int) -> np.ndarray:
    """The backward map M = s·R (D, D)."""
    return scale * rotation(angles, dims)


def draw_transform(
    rng: np.random.Generator, grid: tuple[int, ...], source_shape: tuple[int, ...]
) -> dict[str, Any]:
    """Draw the patch transform (module doc) for an anomaly grid ``grid`` and a source of
    ``source_shape``: ``{"angles": radians per axis pair, "scale": s}``."""
    dims = len(grid)
    angles = [float(rng.uniform(-np.pi / 4, np.pi / 4)) for _ in range(dims * (dims - 1) // 2)]
    _, size = _region(_matrix(angles, 1.0, dims), grid)
    cap = float(np.min(0.8 * np.array(source_shape) / size))
    change = 1 + rng.exponential(0.1)
    scale = change if rng.random() < 0.5 else 1 / change
    return {"angles": angles, "scale": float(min(scale, cap))}


def draw_source_corner(
    rng: np.random.Generator,
    transform: dict[str, Any],
    grid: tuple[int, ...],
    source_fg: np.ndarray,
) -> list[int] | None:
    """The source region's corner: centred on a uniform foreground voxel of the source at
    which the region fits; ``None`` when there is none."""
    _, size = _region(_matrix(transform["angles"], transform["scale"], len(grid)), grid)
    # centres c = corner + size // 2 with 0 ≤ corner ≤ n − size: index the window of them
    window = source_fg[
        tuple(
            slice(h, max(n - s + h + 1, 0))
            for h, n, s in zip(size // 2, source_fg.shape, size, strict=True)
        )
    ]
    valid = np.flatnonzero(window)
    if not len(valid):
        return None
    return [int(c) for c in np.unravel_index(valid[rng.integers(len(valid))], window.shape)]


def source_patch(
    source: np.ndarray,
    rec: dict[str, Any],
    grid: tuple[int, ...],
    origin: np.ndarray,
    shape: tuple[int, ...],
) -> np.ndarray:
    """The transformed source (module doc) on a box of ``shape`` whose first voxel lies at
    ``origin`` (D,) in the anomaly grid's coordinates, clipped to ``source``'s range."""
    matrix = _matrix(rec["angles"], rec["scale"], len(grid))
    low, _ = _region(matrix, grid)
    offset = matrix @ origin - low + np.array(rec["source_corner"])
    patch = ndimage.affine_transform(
        source, matrix, offset=offset, output_shape=shape, order=3, mode="nearest"
    )
    return np.clip(patch, source.min(), source.max())


def blend_patch(
    image: np.ndarray,
    raster: np.ndarray,
    corner: tuple[int, ...],
    source: np.ndarray,
    rec: dict[str, Any],
) -> None:
    """Blend the patch of ``source`` that ``rec`` describes into ``image`` (float64, changed
    in place) inside ``raster`` placed at ``corner`` (module doc)."""
    grid = raster.shape
    lo = np.maximum(np.array(corner) - 1, 0)
    hi = np.minimum(np.array(corner) + grid + 1, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = np.zeros(tuple(hi - lo), dtype=bool)
    mask[tuple(slice(c - a, c - a + n) for c, a, n in zip(corner, lo, grid, strict=True))] = raster
    patch = source_patch(source, rec, grid, (lo - corner).astype(np.float64), mask.shape)
    blended = poisson_blend(image[box], patch, mask)
    image[box] = np.clip(blended, image.min(), image.max())
