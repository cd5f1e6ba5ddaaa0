"""Radial deformations: f = 1 is the identity, the box's edge and everything off the shape
stay, sinks pull content in and sources push it out, and f follows the push."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adsys.synth.tasks.deform import (
    MAX_PUSH,
    MIN_PUSH,
    deform_patch,
    draw_deformation,
    factor,
    new_distance,
)
from adsys.synth.tasks.shapes import Shape

NO_SHEAR = {2: ((1, 0.0), (0, 0.0)), 3: ((1, 0.0), (2, 0.0), (0, 0.0))}


def _shape(kind, dims, sides=(21, 17, 19)):
    shear = ((1, 0.2), (0, -0.1)) if dims == 2 else ((2, 0.2), (0, -0.1), (1, 0.1))
    return Shape(kind, sides[:dims], shear, (0.5, -0.3, 0.9)[: dims * (dims - 1) // 2], 1.0)


@pytest.mark.parametrize("kind", ["sink", "source"])
@pytest.mark.parametrize("dims", [2, 3])
def test_factor_one_is_the_identity(kind, dims):
    shape = _shape("ellipse", dims)
    raster = shape.raster()
    patch = np.random.default_rng(0).random(raster.shape)
    centre = np.argwhere(raster)[len(np.argwhere(raster)) // 2].tolist()
    np.testing.assert_allclose(
        deform_patch(patch, shape, raster, centre, 1.0, kind), patch, rtol=0, atol=1e-9
    )  # spline interpolation at the nodes


@pytest.mark.parametrize("kind", ["sink", "source"])
@pytest.mark.parametrize("shape_kind", ["ellipse", "rectangle"])
@pytest.mark.parametrize("dims", [2, 3])
def test_only_the_shape_inside_its_box_edge_moves(kind, shape_kind, dims):
    shape = _shape(shape_kind, dims)
    raster = shape.raster()
    patch = np.random.default_rng(1).random(raster.shape)
    centre = np.argwhere(raster)[7].tolist()
    out = deform_patch(patch, shape, raster, centre, 2.5, kind)
    still = ~raster
    for a in range(dims):  # the box's edge voxels
        still[(slice(None),) * a + ([0, -1],)] = True
    still[tuple(centre)] = True
    assert np.array_equal(out[still], patch[still])
    assert not np.allclose(out[~still], patch[~still])


def _dot(size, centre, offset):
    """A Gaussian dot (σ 1 voxel) at ``centre + offset`` in a (size, size) box."""
    yy, xx = np.indices((size, size), dtype=np.float64)
    cy, cx = centre[0] + offset[0], centre[1] + offset[1]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2)


@pytest.mark.parametrize(("kind", "f"), [("sink", 2.0), ("source", 2.0), ("sink", 1.4)])
def test_sink_pulls_a_dot_in_and_source_pushes_it_out(kind, f):
    """A dot 8 voxels from the centre of a 41-voxel disk (D = 20.5 on every ray) ends where
    d'(d) = 8: nearer the centre for a sink, farther for a source."""
    shape = Shape("ellipse", (41, 41), NO_SHEAR[2], (0.0,), 1.0)
    raster = shape.raster()
    centre, r0, edge = [20, 20], 8.0, 20.5
    patch = _dot(41, centre, (r0 * 0.6, r0 * 0.8))
    out = deform_patch(patch, shape, raster, centre, f, kind)
    peak = np.array(np.unravel_index(out.argmax(), out.shape)) - centre
    if kind == "sink":  # invert d' = D − (D − d)^f / D^(f−1)
        expected = edge - ((edge - r0) * edge ** (f - 1)) ** (1 / f)
        assert expected < r0
    else:  # invert d' = d^f / D^(f−1)
        expected = (r0 * edge ** (f - 1)) ** (1 / f)
        assert expected > r0
    assert np.linalg.norm(peak) == pytest.approx(expected, abs=1.0)
    assert np.dot(peak, (0.6, 0.8)) > 0.95 * np.linalg.norm(peak)  # along the same ray


@pytest.mark.parametrize("kind", ["sink", "source"])
def test_the_factor_bends_the_curve_through_the_pushed_point(kind):
    """On [0, a] the map passes through (m_x, m_y): a point on the diagonal moves by p."""
    a, push = 10.0, 3.0
    f = factor(push, a, kind)
    h = math.sqrt(push**2 / 2)
    m_x, m_y = (a / 2 - h, a / 2 + h) if kind == "sink" else (a / 2 + h, a / 2 - h)
    assert f > 1
    assert new_distance(np.array(m_x), np.array(a), f, kind) == pytest.approx(m_y, rel=1e-12)
    assert math.hypot(m_x - m_y, 0) / math.sqrt(2) == pytest.approx(push)


@pytest.mark.parametrize("kind", ["sink", "source"])
def test_drawn_deformations_keep_to_the_push_bounds(kind):
    rng = np.random.default_rng(0)
    raster = _shape("rectangle", 2, sides=(30, 24)).raster()
    for _ in range(50):
        rec = draw_deformation(rng, raster, kind)
        assert raster[tuple(rec["centre"])]
        p_max = math.sqrt(rec["edge_mean"] ** 2 / 2)
        assert max(0.1 * p_max, MIN_PUSH) <= rec["push"] <= min(0.9 * p_max, MAX_PUSH)
        assert rec["factor"] == factor(rec["push"], rec["edge_mean"], kind) > 1
    tiny = draw_deformation(rng, np.ones((1, 1), dtype=bool), kind)
    assert tiny["edge_mean"] == 0 and tiny["factor"] == 1.0
