"""Anomaly shapes of the ICDM tasks (Baugh et al. 2024, with the MTML 2023 shape code): their
sizes, deformed hyper-rectangles / hyper-ellipses, rasters, placement on the foreground and
analytic ray–edge distances (implementations.md §3.3, "shared anomaly-shape machinery").

* **Foreground** (:func:`foreground`): the brain mask; ``image > image.min()`` where the mask is
  empty (the public code's sample mask); the whole image where that is empty too.
* **Sizes** (:func:`side_bounds`, :func:`sample_shape`): the reference size is the bounding box
  of the foreground's connected region (full connectivity) with the largest bounding box (the
  code's ``max(regions, key=area_bbox)``). Per axis lb = ⌈0.06·size⌉, ub = max(⌈0.8·size⌉,
  lb + 1); a side is ``int(clip((0.03 + Gamma(k=2, θ=0.1))·n, lb, ub))``, n the image's size
  on that axis.
* **Shape** (:class:`Shape`): a hyper-rectangle or hyper-ellipse (½ each) with those sides,
  centred at the origin, mapped by A = s·R·S. S shears each dimension d onto another random
  dimension by N(0, 0.2); R rotates each axis pair (``itertools.combinations`` order) by
  U(−π/2, π/2); s = min(1, ub / bbox) scales the shape down uniformly when the transformed
  corners' bounding box exceeds ub on some axis (also for ellipses, as in the code).

  *Deviation*: the code writes all D shear factors into one matrix I + Σ f_d e_d e_oᵀ, whose
  determinant is 1 − f₀f₁ in 2D (not area-preserving, singular when f₀f₁ = 1). Here S is the
  product of the D elementary shears (I + f_d e_d e_oᵀ, d = 0, 1, …), a true shear: det S = 1,
  so a shape's area is s^D times its aligned area.
* **Raster** (:meth:`Shape.raster`): a grid of ⌈bbox⌉ voxels per axis centred on the shape;
  a voxel is inside when its inverse-mapped centre A⁻¹p lies in the aligned shape
  (|q_a| ≤ side_a/2, or Σ (2q_a/side_a)² ≤ 1). A shape thinner than a voxel keeps its centre
  voxel, so a raster is never empty.
* **Placement** (:func:`place`): a foreground region with probability ∝ its bounding-box
  volume, then a uniform grid corner whose raster meets that box; accepted when
  overlap(raster, foreground) ≥ q·|raster| with q = 0.5, halved after every 1000 failures;
  after 5000 failures :class:`PlacementError`. (The public loop halves q before its first try,
  so it effectively starts at 0.25; this follows the stated rule.)
* **Ray–edge distance** (:meth:`Shape.edge_distance`): for rays from a point inside, the
  distance to the shape's edge, solved in the aligned frame (a quadratic for the ellipse, the
  nearest slab exit for the rectangle): the radial deformations' D.

Records: :meth:`Shape.record` is JSON-ready (kind, sides, shear, angles in radians, scale);
:meth:`Shape.from_record` rebuilds the same shape, bit for bit.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, signal

from adsys.errors import AdsysError

__all__ = [
    "KINDS",
    "Box",
    "Placement",
    "PlacementError",
    "Shape",
    "foreground",
    "place",
    "regions",
    "rotation",
    "sample_shape",
    "side_bounds",
]

KINDS = ("rectangle", "ellipse")
MIN_PROP, MAX_PROP = 0.06, 0.8  # side bounds, fractions of the reference size
TRIES_PER_LEVEL, LEVELS = 1000, 5  # placement: q halves every 1000 failures, 5000 in all

Box = tuple[tuple[int, ...], tuple[int, ...]]
"""A bounding box: (lo, hi) voxel indices per axis, hi excluded."""


class PlacementError(AdsysError, ValueError):
    """No anomaly position overlaps the foreground enough; the message says what was tried."""


def rotation(angles: list[float] | tuple[float, ...], dims: int) -> np.ndarray:
    """(D, D) product of plane rotations by ``angles`` (radians), one per axis pair in
    ``itertools.combinations(range(D), 2)`` order, each applied after the previous."""
    rot = np.eye(dims)
    for angle, (a, b) in zip(angles, itertools.combinations(range(dims), 2), strict=True):
        c, s = math.cos(angle), math.sin(angle)
        step = np.eye(dims)
        step[a, a] = step[b, b] = c
        step[a, b], step[b, a] = -s, s
        rot = step @ rot
    return rot


def _shear(shear: tuple[tuple[int, float], ...]) -> np.ndarray:
    """(D, D) product of elementary shears: dimension d moves by factor × dimension other."""
    dims = len(shear)
    out = np.eye(dims)
    for d, (other, factor) in enumerate(shear):
        step = np.eye(dims)
        step[d, other] = factor
        out = step @ out
    return out


@dataclass(frozen=True)
class Shape:
    """A deformed hyper-rectangle or hyper-ellipse (module doc).

    ``sides`` are the aligned side lengths (voxels); ``shear[d] = (other, factor)``;
    ``angles`` one per axis pair (radians); ``scale`` the uniform shrink factor (≤ 1).
    """

    kind: str
    sides: tuple[int, ...]
    shear: tuple[tuple[int, float], ...]
    angles: tuple[float, ...]
    scale: float

    @property
    def dims(self) -> int:
        return len(self.sides)

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """A (D, D): aligned frame → grid frame (both centred on the shape)."""
        return self.scale * rotation(self.angles, self.dims) @ _shear(self.shear)

    @functools.cached_property
    def inverse(self) -> np.ndarray:
        """A⁻¹ (D, D): grid frame → aligned frame."""
        return np.linalg.inv(self.matrix)

    @property
    def grid(self) -> tuple[int, ...]:
        """The raster's shape: ⌈bounding box of the mapped corners⌉ per axis, ≥ 1."""
        return _grid(self.matrix, self.sides)

    @property
    def centre(self) -> np.ndarray:
        """The shape's centre in grid index coordinates, (D,) float64."""
        return (np.array(self.grid) - 1) / 2

    def aligned(self, points: np.ndarray) -> np.ndarray:
        """``points`` (D, N), grid index coordinates, in the aligned frame: (D, N)."""
        return self.inverse @ (points - self.centre[:, None])

    def raster(self) -> np.ndarray:
        """The voxels inside the shape: bool array of shape :attr:`grid` (module doc)."""
        grid = self.grid
        q = self.aligned(np.indices(grid, dtype=np.float64).reshape(self.dims, -1))
        half = np.array(self.sides, dtype=np.float64)[:, None] / 2
        if self.kind == "ellipse":
            inside = ((q / half) ** 2).sum(0) <= 1
        else:
            inside = (np.abs(q) <= half).all(0)
        inside = inside.reshape(grid)
        if not inside.any():
            inside[tuple((n - 1) // 2 for n in grid)] = True
        return inside

    def edge_distance(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Distances from ``origin`` (D,), a point inside the shape in grid index coordinates,
        along unit ``directions`` (D, N) to the shape's edge: (N,) voxels."""
        o = self.aligned(np.asarray(origin, dtype=np.float64)[:, None])
        w = self.inverse @ directions
        half = np.array(self.sides, dtype=np.float64)[:, None] / 2
        if self.kind == "ellipse":  # |o + t·w|² in units of the half axes = 1, t > 0
            a = ((w / half) ** 2).sum(0)
            b = 2 * (o * w / half**2).sum(0)
            c = np.minimum(((o / half) ** 2).sum(0), 1.0) - 1  # ≤ 0: the origin is inside
            return (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
        with np.errstate(divide="ignore", invalid="ignore"):  # nearest slab exit; w_a = 0: none
            exits = np.where(w != 0, (np.copysign(half, w) - o) / w, np.inf)
        return np.maximum(exits.min(0), 0.0)

    def record(self) -> dict[str, Any]:
        """JSON-ready parameters; :meth:`from_record` inverts it."""
        return {
            "kind": self.kind,
            "sides": list(self.sides),
            "shear": [[o, f] for o, f in self.shear],
            "angles": list(self.angles),
            "scale": self.scale,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Shape:
        return cls(
            rec["kind"],
            tuple(int(s) for s in rec["sides"]),
            tuple((int(o), float(f)) for o, f in rec["shear"]),
            tuple(float(a) for a in rec["angles"]),
            float(rec["scale"]),
        )


def _extent(matrix: np.ndarray, sides: tuple[int, ...]) -> np.ndarray:
    """Bounding-box size (D,) of the corners ±side/2 mapped by ``matrix``."""
    return np.abs(matrix) @ np.array(sides, dtype=np.float64)


def _grid(matrix: np.ndarray, sides: tuple[int, ...]) -> tuple[int, ...]:
    extent = np.round(_extent(matrix, sides), 9)  # 10.000000001 from rounding → 10 voxels
    return tuple(max(1, int(math.ceil(e))) for e in extent)


def foreground(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Where anomalies belong (module doc): bool array of ``image``'s shape."""
    fg = mask > 0
    if not fg.any():
        fg = image > image.min()
    return fg if fg.any() else np.ones(image.shape, dtype=bool)


def regions(fg: np.ndarray) -> list[Box]:
    """Bounding boxes of ``fg``'s connected regions (full connectivity), in label order."""
    labels, _ = ndimage.label(fg, ndimage.generate_binary_structure(fg.ndim, fg.ndim))
    return [
        (tuple(s.start for s in box), tuple(s.stop for s in box))
        for box in ndimage.find_objects(labels)
    ]


def side_bounds(boxes: list[Box], image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(lb, ub) side bounds per axis (module doc) from the regions' bounding boxes; ub never
    exceeds the image."""
    sizes = [np.subtract(hi, lo) for lo, hi in boxes]
    size = max(sizes, key=math.prod)
    lb = np.ceil(MIN_PROP * size).astype(int)
    ub = np.maximum(np.ceil(MAX_PROP * size).astype(int), lb + 1)
    return lb, np.minimum(ub, image_shape)


def sample_shape(
    rng: np.random.Generator, lb: np.ndarray, ub: np.ndarray, image_shape: tuple[int, ...]
) -> Shape:
    """Draw a shape (module doc) with sides in [lb, ub] for an image of ``image_shape``."""
    dims = len(image_shape)
    sides = tuple(
        int(np.clip((0.03 + rng.gamma(2, 0.1)) * n, lo, hi))
        for n, lo, hi in zip(image_shape, lb, ub, strict=True)
    )
    kind = KINDS[int(rng.integers(2))]
    shear = tuple(
        (int(rng.choice([o for o in range(dims) if o != d])), float(rng.normal(0, 0.2)))
        for d in range(dims)
    )
    angles = tuple(float(rng.uniform(-np.pi / 2, np.pi / 2)) for _ in range(dims * (dims - 1) // 2))
    unscaled = Shape(kind, sides, shear, angles, 1.0)
    scale = float(min(1.0, np.min(ub / _extent(unscaled.matrix, sides))))
    return Shape(kind, sides, shear, angles, scale)


@dataclass(frozen=True)
class Placement:
    """Where a raster goes: its grid ``corner`` in the image, the overlap fraction ``required``
    when it was accepted and the ``failures`` before it."""

    corner: tuple[int, ...]
    required: float
    failures: int


def place(
    rng: np.random.Generator, raster: np.ndarray, fg: np.ndarray, boxes: list[Box]
) -> Placement:
    """Draw a corner for ``raster`` in an image with foreground ``fg`` and its regions'
    ``boxes`` (module doc). Candidates are drawn 1000 at a time (one requirement level);
    the first acceptable one wins. Raises :class:`PlacementError` after 5000 failures."""
    grid = np.array(raster.shape)
    area = int(raster.sum())
    # overlap[c] = |raster ∩ fg[c : c + grid]| for every corner c (exact after rounding)
    flipped = np.flip(raster).astype(np.float64)
    overlap = np.rint(signal.fftconvolve(fg.astype(np.float64), flipped, mode="valid"))
    lo = np.array([np.maximum(0, np.subtract(b[0], grid) + 1) for b in boxes])
    hi = np.array([np.minimum(np.subtract(fg.shape, grid), np.subtract(b[1], 1)) for b in boxes])
    volume = np.array([math.prod(np.subtract(b[1], b[0])) for b in boxes], dtype=np.float64)
    for level in range(LEVELS):
        chosen = rng.choice(len(boxes), size=TRIES_PER_LEVEL, p=volume / volume.sum())
        corners = rng.integers(lo[chosen], hi[chosen], endpoint=True)
        ok = overlap[tuple(corners.T)] * 2 ** (level + 1) >= area  # ≥ 0.5 / 2^level · area
        if ok.any():
            first = int(ok.argmax())
            return Placement(
                tuple(int(c) for c in corners[first]),
                0.5 / 2**level,
                level * TRIES_PER_LEVEL + first,
            )
    raise PlacementError(
        f"no position of a {area}-voxel anomaly (grid {tuple(raster.shape)}) overlaps the "
        f"foreground ({int(fg.sum())} voxels) by at least {0.5 / 2 ** (LEVELS - 1)} of its "
        f"area in {LEVELS * TRIES_PER_LEVEL} tries (required overlap 0.5, halved every "
        f"{TRIES_PER_LEVEL} failures). The foreground is too small or too scattered for "
        "anomalies sized by its largest region: check the brain mask (a few stray voxels?) "
        "or give the item a mask that covers its brain"
    )
