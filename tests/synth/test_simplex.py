"""Fractal simplex noise: the AnoDDPM recipe (6 octaves, ×0.8, 64 px halving), seeds."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from adsys.synth.simplex import octave_wavelengths, simplex_noise

GRADIENTS_2D = [(5, 2), (2, 5), (-5, 2), (-2, 5), (5, -2), (2, -5), (-5, -2), (-2, -5)]


def _loop_opensimplex_2d(perm: list[int], x: float, y: float) -> float:
    """OpenSimplex 2D kernel summed over a generous window of lattice vertices."""
    stretch = (1 / math.sqrt(3) - 1) / 2
    squish = (math.sqrt(3) - 1) / 2
    xs, ys = x + (x + y) * stretch, y + (x + y) * stretch
    value = 0.0
    for i, j in itertools.product(range(-4, 6), repeat=2):
        vx, vy = math.floor(xs) + i, math.floor(ys) + j
        dx = x - (vx + (vx + vy) * squish)
        dy = y - (vy + (vx + vy) * squish)
        attn = 2 - dx * dx - dy * dy
        if attn > 0:
            h = perm[(perm[vx & 255] + vy) & 255]
            gx, gy = GRADIENTS_2D[(h >> 1) % 8]
            value += attn**4 * (gx * dx + gy * dy)
    return value / 47


def test_base_noise_sums_every_vertex_in_range():
    wavelength = 3.7
    got = simplex_noise((1, 1, 9, 11), seed=3, octaves=1, wavelength=wavelength)[0, 0]
    perm = torch.argsort(torch.rand(1, 256, generator=torch.Generator().manual_seed(3)), dim=1)
    perm = perm[0].tolist()  # the permutation simplex_noise draws first from the seed
    ref = torch.tensor(
        [
            [_loop_opensimplex_2d(perm, i / wavelength, j / wavelength) for j in range(11)]
            for i in range(9)
        ]
    )
    torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-6)


def test_octave_recipe_64px_halving_times_0p8():
    assert octave_wavelengths() == [64, 32, 16, 8, 4, 2]
    shape = (1, 1, 48, 40)
    fractal = simplex_noise(shape, seed=11)
    octaves = [
        simplex_noise(shape, seed=11, octaves=1, wavelength=lam) for lam in octave_wavelengths()
    ]
    torch.testing.assert_close(fractal, sum(0.8**k * o for k, o in enumerate(octaves)))


def test_wavelength_scales_pixel_coordinates():
    """Octave k+1 is octave k sampled at half the pixel distance (same base noise)."""
    coarse = simplex_noise((1, 1, 64, 64), seed=5, octaves=1, wavelength=32)
    fine = simplex_noise((1, 1, 32, 32), seed=5, octaves=1, wavelength=16)
    torch.testing.assert_close(coarse[..., ::2, ::2], fine)


def test_deterministic_given_seed():
    a = simplex_noise((2, 1, 32, 32), seed=0)
    assert torch.equal(a, simplex_noise((2, 1, 32, 32), seed=0))
    assert not torch.equal(a, simplex_noise((2, 1, 32, 32), seed=1))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(simplex_noise((2, 1, 32, 32), seed=gen), a)


def test_one_map_shared_by_the_batch_unless_per_sample():
    shared = simplex_noise((4, 2, 24, 24), seed=2)
    assert all(torch.equal(shared[b, c], shared[0, 0]) for b in range(4) for c in range(2))
    own = simplex_noise((4, 2, 24, 24), seed=2, per_sample=True)
    assert not torch.equal(own[0, 0], own[1, 0]) and not torch.equal(own[0, 0], own[0, 1])


def test_unnormalised_scale_and_normalize_option():
    raw = simplex_noise((1, 1, 96, 96), seed=4)
    single = simplex_noise((1, 1, 96, 96), seed=4, octaves=1)
    assert single.abs().max() <= 1.0
    assert 0.3 < float(raw.std()) < 0.8  # the reference's octave sum is not unit variance
    assert float(raw.abs().max()) <= sum(0.8**k for k in range(6))
    unit = simplex_noise((3, 1, 96, 96), seed=4, per_sample=True, normalize=True)
    flat = unit.view(3, -1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def test_3d_form():
    vol = simplex_noise((2, 1, 10, 12, 8), seed=6, octaves=3, wavelength=8)
    assert vol.shape == (2, 1, 10, 12, 8)
    assert torch.equal(vol[0], vol[1])
    assert torch.equal(vol, simplex_noise((2, 1, 10, 12, 8), seed=6, octaves=3, wavelength=8))
    parts = [simplex_noise((1, 1, 10, 12, 8), seed=6, octaves=1, wavelength=w) for w in (8, 4, 2)]
    torch.testing.assert_close(vol[:1], sum(0.8**k * p for k, p in enumerate(parts)))
    assert 0.05 < float(vol.std()) < 1.0


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        simplex_noise((96, 96), seed=0)


def test_streamed_large_grid_path_equals_cached_sparse_path(monkeypatch):
    import adsys.synth.simplex as simplex

    cached = simplex_noise((2, 1, 9, 10, 7), seed=8, octaves=2, wavelength=4, per_sample=True)
    monkeypatch.setattr(simplex, "_CACHE_MAX_POINTS", 0)
    monkeypatch.setattr(simplex, "_ROWS_PER_CHUNK", 100)  # several blocks
    streamed = simplex_noise((2, 1, 9, 10, 7), seed=8, octaves=2, wavelength=4, per_sample=True)
    torch.testing.assert_close(streamed, cached)
