"""Smooth intensity change: fractal Perlin noise in [0, 1] from its seeds, a ramp from the
shape's edge, and nothing outside the shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adsys.synth.tasks.intensity import draw_intensity, fractal_perlin, intensity_patch


@pytest.mark.parametrize("shape", [(40, 30), (16, 12, 14)])
def test_fractal_perlin_spans_zero_to_one_and_follows_its_seeds(shape):
    intervals = [[2.3] * len(shape), [4.9] * len(shape)]
    a = fractal_perlin(shape, intervals, [1, 2])
    assert a.shape == shape and a.min() == 0 and a.max() == 1
    assert np.array_equal(a, fractal_perlin(shape, intervals, [1, 2]))
    assert not np.allclose(a, fractal_perlin(shape, intervals, [1, 3]))
    assert np.array_equal(
        fractal_perlin((1,) * len(shape), intervals, [1, 2]), np.ones((1,) * len(shape))
    )


def test_perlin_draws_follow_the_layer_rules():
    rng = np.random.default_rng(0)
    grid = (60, 45)
    most = np.mean(grid) / 3
    layers = []
    for _ in range(200):
        rec = draw_intensity(rng, grid, 0.1, "perlin")
        assert abs(rec["magnitude"]) >= 0.05 and rec["ramp"] > 0.02
        noise = rec["noise"]
        assert len(noise["intervals"]) == len(noise["seeds"]) >= 1
        assert all(len(layer) == 2 for layer in noise["intervals"])
        assert len(noise["intervals"]) <= np.floor(np.log2(most)) + 1  # c₁ ≥ 1
        means = [np.mean(layer) for layer in noise["intervals"]]
        assert all(1.2 < b / a < 3 for a, b in itertools.pairwise(means))  # ≈ doubling
        layers.append(len(noise["intervals"]))
    assert set(layers) >= {1, 2}
    signs = {np.sign(draw_intensity(rng, grid, 0.1, "perlin")["magnitude"]) for _ in range(20)}
    assert signs == {-1, 1}


def test_uniform_variant_adds_the_magnitude_times_the_ramp():
    raster = np.zeros((30, 30), dtype=bool)
    raster[5:25, 3:27] = True
    patch = np.full((30, 30), 0.4)
    rec = {"magnitude": -0.2, "ramp": 0.05, "noise": None}
    out = intensity_patch(patch, raster, rec, min_side=100)  # ramp width 5 voxels
    change = out - patch
    assert np.array_equal(change[~raster], np.zeros((~raster).sum()))
    assert change[15, 15] == pytest.approx(-0.2)  # 10 voxels in: the full change
    assert change[5, 15] == pytest.approx(-0.2 / 5)  # the edge row: distance 1 of 5
    assert change[7, 15] == pytest.approx(-0.2 * 3 / 5)
    row = change[15, 3:15]
    assert np.all(np.diff(np.abs(row)) >= 0)  # grows from the edge inwards


def test_perlin_variant_stays_inside_the_shape_and_below_the_magnitude():
    rng = np.random.default_rng(3)
    raster = np.zeros((24, 20, 18), dtype=bool)
    raster[2:22, 3:17, 2:16] = True
    rec = draw_intensity(rng, raster.shape, 0.1, "perlin")
    patch = rng.random(raster.shape)
    change = intensity_patch(patch, raster, rec, min_side=64) - patch
    assert not change[~raster].any() and change[raster].any()
    assert np.abs(change).max() <= abs(rec["magnitude"]) + 1e-12
