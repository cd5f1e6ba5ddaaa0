"""Radial "bend" deformations (tasks 2, sink, and 3, source, of Baugh et al. 2024; the MTML
code's ``BendSinkDeformationTask`` / ``BendSourceDeformationTask``, implementations.md §3.3).

Inside an anomaly's shape, every voxel at distance d from a centre c (a uniform voxel of the
shape) takes the value found at distance d' along the same ray, where D is the distance from c
to the shape's edge along that ray (:meth:`~adsys.synth.tasks.shapes.Shape.edge_distance`, the
analytic intersection in the shape's aligned frame):

* sink: d' = D − (D − d)^f / D^(f−1) ≥ d — content is pulled towards c (it shrinks);
* source: d' = d^f / D^(f−1) ≤ d — content is pushed away from c (it grows).

Both map [0, D] onto itself, fix c and the edge, and are the identity for f = 1.

**The factor f** (:func:`draw_deformation`): a = mean distance from c to the shape's inner edge
voxels (the raster minus its erosion); p_max = √(a²/2); the push p ~ U(max(0.1·p_max, 0.5),
min(0.9·p_max, 5)) (0.9·p_max when 0.5 ≥ 0.9·p_max; 0.1·p_max when 5 ≤ 0.1·p_max, as the code
does). With h = √(p²/2):

* sink: f = log(1 − m_y/a) / log(1 − m_x/a), m_x = a/2 − h, m_y = a/2 + h;
* source: f = log(m_y/a) / log(m_x/a), m_x = a/2 + h, m_y = a/2 − h

(the curve through (m_x, m_y) on [0, a]: a point on the diagonal moves by p). A one-voxel shape
(a = 0) gets f = 1.

**Resampling** (:func:`deform_patch`): ``scipy.ndimage.map_coordinates`` (cubic spline, mode
``nearest``) of the anomaly's grid box, evaluated only at the moving voxels: the shape's voxels
off the box's edge, and not c. Every other voxel of the image keeps its value bit for bit.

Records: ``centre`` (grid index, D ints), ``push`` p, ``edge_mean`` a, ``factor`` f.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from adsys.synth.tasks.shapes import Shape

__all__ = ["MAX_PUSH", "MIN_PUSH", "deform_patch", "draw_deformation", "factor", "new_distance"]

MIN_PUSH, MAX_PUSH = 0.5, 5.0  # the code's min_push_dist / max_push_dist, voxels

Kind = Literal["sink", "source"]


def new_distance(d: np.ndarray, edge: np.ndarray, f: float, kind: Kind) -> np.ndarray:
    """d' for voxels at distances ``d`` ≤ ``edge`` (= D) from the centre (module doc)."""
    if kind == "sink":
        return edge - (edge - d) ** f / edge ** (f - 1)
    return d**f / edge ** (f - 1)


def factor(push: float, edge_mean: float, kind: Kind) -> float:
    """f for a push p and a mean edge distance a > 0 (module doc)."""
    h, a = math.sqrt(push**2 / 2), edge_mean
    if kind == "sink":
        return math.log(1 - (a / 2 + h) / a) / math.log(1 - (a / 2 - h) / a)
    return math.log((a / 2 - h) / a) / math.log((a / 2 + h) / a)


def draw_deformation(rng: np.random.Generator, raster: np.ndarray, kind: Kind) -> dict[str, Any]:
    """Draw a deformation of the shape ``raster`` (bool grid): its record (module doc)."""
    voxels = np.argwhere(raster)
    centre = voxels[rng.integers(len(voxels))]
    edge = np.argwhere(raster & ~ndimage.binary_erosion(raster))
    a = float(np.linalg.norm(edge - centre, axis=1).mean())
    p_max = math.sqrt(a**2 / 2)
    low, high = 0.1 * p_max, 0.9 * p_max
    if MIN_PUSH >= high:
        push = high
    elif MAX_PUSH <= low:
        push = low
    else:
        push = float(rng.uniform(max(low, MIN_PUSH), min(high, MAX_PUSH)))
    return {
        "centre": [int(c) for c in centre],
        "push": push,
        "edge_mean": a,
        "factor": factor(push, a, kind) if a > 0 else 1.0,
    }


def deform_patch(
    patch: np.ndarray, shape: Shape, raster: np.ndarray, centre: list[int], f: float, kind: Kind
) -> np.ndarray:
    """``patch`` (the anomaly's grid box, float64) deformed radially about ``centre`` by
    factor ``f`` inside ``raster`` (module doc): a new array; edge voxels of the box, voxels
    off the shape and the centre keep their values."""
    inner = np.zeros_like(raster)
    inner[(slice(1, -1),) * raster.ndim] = raster[(slice(1, -1),) * raster.ndim]
    points = np.argwhere(inner)
    offsets = points - np.asarray(centre)
    d = np.linalg.norm(offsets, axis=1)
    points, offsets, d = points[d > 0], offsets[d > 0], d[d > 0]
    directions = offsets / d[:, None]
    edge = shape.edge_distance(np.asarray(centre, dtype=np.float64), directions.T)
    moved = new_distance(np.minimum(d, edge), edge, f, kind)
    coords = np.asarray(centre)[:, None] + moved * directions.T
    out = patch.copy()
    out[tuple(points.T)] = ndimage.map_coordinates(patch, coords, order=3, mode="nearest")
    return out
