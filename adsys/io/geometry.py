"""Voxel grids and resampling between them.

A :class:`Grid` is a voxel shape plus its 4×4 voxel→world affine (RAS+, millimetres). Every
geometric step of adsys (registration with a given affine, resampling to a spacing, crop/pad,
and the way back to a subject's native grid) is a resampling from one grid to another, so all
of them go through :func:`resample`, which interpolates once with ``scipy.ndimage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

Affine = np.ndarray  # (4, 4) float64, voxel -> world (mm)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (x, y, z) and ``affine`` (4×4 voxel→world, mm)."""

    shape: tuple[int, int, int]
    affine: Affine

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64).reshape(4, 4))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis, in mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def same_as(self, other: Grid, atol: float = 1e-4) -> bool:
        """True when both grids have the same shape and (within ``atol`` mm) the same affine."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def world_corners(self) -> np.ndarray:
        """World coordinates (8, 3) of the centres of the eight corner voxels."""
        idx = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij"))
        ijk = np.concatenate([idx.reshape(3, -1), np.ones((1, 8))])
        return (self.affine @ ijk)[:3].T

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Grid:
        return cls(tuple(obj["shape"]), np.asarray(obj["affine"], dtype=np.float64))


def resample(
    data: np.ndarray,
    src: Grid,
    dst: Grid,
    *,
    world: Affine | None = None,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``data`` (on ``src``) at the voxel centres of ``dst``.

    ``world`` (4×4) maps ``src`` world coordinates to ``dst`` world coordinates (e.g. a
    subject→template registration); identity when omitted. ``order`` is the spline order
    (0 nearest, 1 linear, 3 cubic B-spline); points outside ``src`` get ``cval``. Returns an
    array of ``dst.shape`` with ``data``'s dtype for order 0 and float32 otherwise.
    """
    if data.shape != src.shape:
        raise ValueError(f"data shape {data.shape} does not match its grid {src.shape}")
    world = np.eye(4) if world is None else np.asarray(world, dtype=np.float64)
    if np.allclose(world, np.eye(4)) and src.same_as(dst, atol=1e-6):
        return data.copy() if order == 0 else data.astype(np.float32, copy=True)
    # dst voxel -> dst world -> src world -> src voxel
    m = np.linalg.inv(src.affine) @ np.linalg.inv(world) @ dst.affine
    out_dtype = data.dtype if order == 0 else np.float32
    src_data = data if order == 0 else data.astype(np.float32, copy=False)
    return ndimage.affine_transform(
        src_data,
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=dst.shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=order > 1,
        output=out_dtype,
    )


def bounding_grid(corners_world: np.ndarray, spacing: tuple[float, float, float]) -> Grid:
    """The RAS-aligned grid of the given ``spacing`` (mm) that covers the world points (N, 3)."""
    lo = corners_world.min(axis=0)
    hi = corners_world.max(axis=0)
    sp = np.asarray(spacing, dtype=np.float64)
    shape = np.floor((hi - lo) / sp + 1e-6).astype(int) + 1
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = lo
    return Grid(tuple(shape), affine)


def translate(affine: Affine, offset_voxels: np.ndarray) -> Affine:
    """The affine of a grid whose voxel 0 sits at voxel ``offset_voxels`` of ``affine``'s grid."""
    t = np.eye(4)
    t[:3, 3] = offset_voxels
    return affine @ t
