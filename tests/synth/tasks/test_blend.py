"""Poisson blending: the solver satisfies the discrete Poisson equation with mixed-gradient
guidance (checked against the equation written out here), and the source-patch transform
keeps to its caps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adsys.synth.tasks.blend import (
    blend_patch,
    draw_source_corner,
    draw_transform,
    poisson_blend,
    source_patch,
)
from adsys.synth.tasks.shapes import rotation


def _case(shape, seed=0):
    """Rough target and source, and a blob mask well inside the box."""
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    source = np.cumsum(rng.normal(size=shape), axis=0) / 4  # strong gradients along axis 0
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = sum(g**2 for g in grid) < 0.45
    return target, source, mask


def _residual(f, target, source, mask):
    """Δf − div v at the box's interior voxels, v the mixed guidance written edge by edge:
    on an edge (p, p + e_a) touching the mask, the source's difference if it is larger in
    magnitude than the target's, else the target's; the target's on every other edge."""
    ndim = f.ndim
    inner = (slice(1, -1),) * ndim
    res = np.zeros(tuple(n - 2 for n in f.shape))
    for a in range(ndim):

        def at(arr, shift, a=a):  # arr at p + shift·e_a for every interior p
            return arr[
                tuple(
                    slice(1 + shift, n - 1 + shift) if b == a else slice(1, -1)
                    for b, n in enumerate(arr.shape)
                )
            ]

        def edge(shift, a=a):  # guidance on the edge (p + shift·e_a, p + (shift + 1)·e_a)
            t = at(target, shift + 1) - at(target, shift)
            s = at(source, shift + 1) - at(source, shift)
            touches = at(mask, shift) | at(mask, shift + 1)
            return np.where(touches & (np.abs(s) > np.abs(t)), s, t)

        res += at(f, 1) - 2 * f[inner] + at(f, -1) - (edge(0) - edge(-1))
    return res


@pytest.mark.parametrize("shape", [(40, 56), (18, 22, 20)])
def test_solution_satisfies_the_poisson_equation_with_mixed_guidance(shape):
    target, source, mask = _case(shape)
    f = poisson_blend(target, source, mask)
    assert np.abs(_residual(f, target, source, mask)).max() < 1e-5
    border = np.ones(shape, dtype=bool)
    border[(slice(1, -1),) * len(shape)] = False
    assert np.array_equal(f[border], target[border])  # Dirichlet: the target
    assert np.abs(f - target)[mask].max() > 0.1  # the source's strong gradients came in


@pytest.mark.parametrize("shape", [(30, 30), (12, 14, 10)])
def test_no_mask_or_a_source_equal_to_the_target_changes_nothing(shape):
    target, source, mask = _case(shape, seed=1)
    assert np.array_equal(poisson_blend(target, source, np.zeros(shape, dtype=bool)), target)
    np.testing.assert_allclose(poisson_blend(target, target, mask), target, atol=1e-12)


def test_mixed_gradients_keep_the_stronger_target_edges():
    """A flat source brings nothing where the target's own gradients are stronger: with
    mixed gradients the target comes back unchanged."""
    target, _, mask = _case((32, 32), seed=2)
    np.testing.assert_allclose(poisson_blend(target, np.zeros((32, 32)), mask), target, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_source_transform_keeps_the_region_within_0_8_of_the_source(dims):
    rng = np.random.default_rng(0)
    grid = (30, 26, 20)[:dims]
    corners = np.array(list(itertools.product(*[(0, n) for n in grid]))).T
    for source in (np.array((40, 36, 30)[:dims]), np.array((160, 144, 120)[:dims])):
        scales = []
        for _ in range(60):
            rec = draw_transform(rng, grid, tuple(source))
            assert len(rec["angles"]) == dims * (dims - 1) // 2
            assert all(abs(a) <= np.pi / 4 for a in rec["angles"])
            mapped = rec["scale"] * rotation(rec["angles"], dims) @ corners
            extent = mapped.max(1) - mapped.min(1)  # the region before rounding to voxels
            assert np.all(extent <= 0.8 * source + 1e-9)
            assert draw_source_corner(rng, rec, grid, np.ones(source, dtype=bool)) is not None
            scales.append(rec["scale"])
    assert min(scales) < 1 < max(scales) < 2  # the large source: 1 + Exp(0.1) or 1/(…)


def test_no_source_corner_when_the_foreground_cannot_centre_the_region():
    rng = np.random.default_rng(0)
    rec = {"angles": [0.0], "scale": 1.0}
    fg = np.zeros((40, 40), dtype=bool)
    fg[0, 0] = True  # the region cannot be centred in a corner voxel
    assert draw_source_corner(rng, rec, (20, 20), fg) is None
    fg[20, 20] = True
    assert draw_source_corner(rng, rec, (20, 20), fg) == [10, 10]


def test_identity_transform_copies_the_source_region():
    source = np.random.default_rng(0).random((40, 40))
    rec = {"angles": [0.0], "scale": 1.0, "source_corner": [5, 7]}
    patch = source_patch(source, rec, (10, 12), np.zeros(2), (10, 12))
    np.testing.assert_allclose(patch, source[5:15, 7:19], atol=1e-12)


def test_blend_patch_changes_the_image_around_the_shape_only():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)) * 0.5
    source = rng.random((64, 64))
    raster = np.ones((12, 12), dtype=bool)
    rec = {"angles": [0.3], "scale": 1.1, "source_corner": [20, 20]}
    out = image.copy()
    blend_patch(out, raster, (30, 8), source, rec)
    changed = np.argwhere(out != image)
    assert len(changed) and changed.min(0).tolist() >= [30, 8]  # the box grown by 1 …
    assert changed.max(0).tolist() <= [41, 19]  # … keeps its border: the shape's box
    assert image.min() <= out.min() and out.max() <= image.max()
