"""Anomaly shapes: rasters against analytic areas, ray–edge distances, size bounds, and the
placement rule's relaxation and failure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adsys.synth.tasks.shapes import (
    PlacementError,
    Shape,
    foreground,
    place,
    regions,
    sample_shape,
    side_bounds,
)

SHEAR_2D = ((1, 0.3), (0, -0.25))
SHEAR_3D = ((2, 0.2), (0, -0.3), (1, 0.15))


@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
@pytest.mark.parametrize("angles", [(0.0,), (0.7,), (-1.3,)])
def test_2d_rasters_have_the_analytic_area_under_shear_and_rotation(kind, angles):
    shape = Shape(kind, (160, 100), SHEAR_2D, angles, 0.9)
    assert np.linalg.det(shape.matrix) == pytest.approx(0.9**2, rel=1e-12)  # shear keeps area
    aligned = math.pi * 80 * 50 if kind == "ellipse" else 160 * 100
    assert shape.raster().sum() == pytest.approx(aligned * 0.9**2, rel=0.005)


@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_3d_rasters_have_the_analytic_volume(kind):
    shape = Shape(kind, (48, 32, 40), SHEAR_3D, (0.4, -0.9, 1.2), 0.8)
    assert np.linalg.det(shape.matrix) == pytest.approx(0.8**3, rel=1e-12)
    aligned = 4 / 3 * math.pi * 24 * 16 * 20 if kind == "ellipse" else 48 * 32 * 40
    assert shape.raster().sum() == pytest.approx(aligned * 0.8**3, rel=0.01)


def test_an_aligned_rectangle_fills_its_grid_exactly():
    shape = Shape("rectangle", (10, 7), ((1, 0.0), (0, 0.0)), (0.0,), 1.0)
    assert shape.grid == (10, 7) and shape.raster().all()


def test_a_shape_thinner_than_a_voxel_keeps_its_centre_voxel():
    raster = Shape("ellipse", (1, 1), ((1, 0.0), (0, 0.0)), (0.8,), 0.2).raster()
    assert raster.sum() == 1


@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
@pytest.mark.parametrize("dims", [2, 3])
def test_ray_edge_distance_lands_on_the_edge(kind, dims):
    rng = np.random.default_rng(1)
    shear = SHEAR_2D if dims == 2 else SHEAR_3D
    angles = tuple(rng.uniform(-1.5, 1.5, dims * (dims - 1) // 2))
    shape = Shape(kind, (30, 18, 24)[:dims], shear, angles, 0.7)
    voxels = np.argwhere(shape.raster())
    origin = voxels[len(voxels) // 3].astype(np.float64)
    directions = rng.normal(size=(dims, 200))
    directions /= np.linalg.norm(directions, axis=0)
    distance = shape.edge_distance(origin, directions)
    assert (distance > 0).all()
    q = shape.aligned(origin[:, None] + distance * directions)
    half = np.array(shape.sides)[:, None] / 2
    level = ((q / half) ** 2).sum(0) if kind == "ellipse" else np.abs(q / half).max(0)
    np.testing.assert_allclose(level, 1.0, atol=1e-9)


def test_sampled_shapes_respect_the_bounds_and_record_exactly():
    rng = np.random.default_rng(0)
    fg = np.zeros((128, 100), dtype=bool)
    fg[10:110, 20:70] = True
    fg[0:3, 90:95] = True  # a second, smaller region: the first sizes the anomalies
    boxes = regions(fg)
    assert len(boxes) == 2
    lb, ub = side_bounds(boxes, fg.shape)
    assert lb.tolist() == [6, 3] and ub.tolist() == [80, 40]
    kinds = set()
    for _ in range(200):
        shape = sample_shape(rng, lb, ub, fg.shape)
        kinds.add(shape.kind)
        assert all(lo <= s <= hi for s, lo, hi in zip(shape.sides, lb, ub, strict=True))
        assert np.all(np.array(shape.grid) <= ub) and 0 < shape.scale <= 1
        back = Shape.from_record(json.loads(json.dumps(shape.record())))
        assert back == shape and np.array_equal(back.raster(), shape.raster())
    assert kinds == {"ellipse", "rectangle"}


def test_foreground_falls_back_to_the_image_then_to_everything():
    image = np.zeros((8, 8))
    image[2:4, 2:5] = 0.5
    mask = np.zeros((8, 8))
    assert foreground(image, mask).sum() == 6
    mask[0, 0] = 1
    assert foreground(image, mask).sum() == 1
    assert foreground(np.zeros((8, 8)), np.zeros((8, 8))).all()


def test_placement_accepts_at_half_overlap_when_possible():
    fg = np.zeros((60, 60), dtype=bool)
    fg[10:50, 10:50] = True
    raster = np.ones((12, 12), dtype=bool)
    spot = place(np.random.default_rng(0), raster, fg, regions(fg))
    c = spot.corner
    assert spot.required == 0.5 and spot.failures < 1000
    assert fg[c[0] : c[0] + 12, c[1] : c[1] + 12].sum() >= 0.5 * 144


def test_placement_halves_the_required_overlap_after_1000_failures():
    """A 10×3 foreground strip: a 10×10 anomaly overlaps it by 30 % at most, so 0.5 is
    impossible and 0.25 is reached after the first 1000 failures."""
    fg = np.zeros((40, 40), dtype=bool)
    fg[15:25, 18:21] = True
    raster = np.ones((10, 10), dtype=bool)
    spot = place(np.random.default_rng(3), raster, fg, regions(fg))
    c = spot.corner
    assert spot.required == 0.25 and 1000 <= spot.failures < 2000
    assert fg[c[0] : c[0] + 10, c[1] : c[1] + 10].sum() >= 25


def test_placement_fails_clearly_after_5000_failures():
    fg = np.zeros((40, 40), dtype=bool)
    fg[20, 20] = True  # 1 % of a 10×10 anomaly at best: below 0.5 / 16
    with pytest.raises(PlacementError, match="5000 tries") as err:
        place(np.random.default_rng(0), np.ones((10, 10), dtype=bool), fg, regions(fg))
    assert isinstance(err.value, ValueError) and "brain mask" in str(err.value)
