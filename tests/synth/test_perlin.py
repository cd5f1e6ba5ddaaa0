"""Perlin noise: the vectorised lattice equals a corner-by-corner loop; seeds, tiling."""

from __future__ import annotations

import itertools

import pytest
import torch

from adsys.synth.perlin import PerlinLattice, perlin_noise


def _fade(t: float) -> float:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _loop_perlin(lattice: PerlinLattice, axes: list[torch.Tensor]) -> torch.Tensor:
    """Textbook Perlin: blend the 2^D corner dot products point by point."""
    dim = len(axes)
    out = torch.zeros([len(a) for a in axes], dtype=torch.float64)
    for idx in itertools.product(*[range(len(a)) for a in axes]):
        u = [float(axes[a][idx[a]]) for a in range(dim)]
        cell, t = [], []
        for a in range(dim):
            i = int(u[a] // 1)
            if not lattice.tileable[a]:
                i = min(max(i, 0), lattice.res[a] - 1)
            cell.append(i)
            t.append(u[a] - i)
        value = 0.0
        for corner in itertools.product((0, 1), repeat=dim):
            node = tuple(
                (cell[a] + corner[a]) % lattice.res[a]
                if lattice.tileable[a]
                else cell[a] + corner[a]
                for a in range(dim)
            )
            g = lattice.gradients[node]
            dot = sum(float(g[a]) * (t[a] - corner[a]) for a in range(dim))
            weight = 1.0
            for a in range(dim):
                weight *= _fade(t[a]) if corner[a] else 1 - _fade(t[a])
            value += dot * weight
        out[idx] = value
    return out


@pytest.mark.parametrize(
    ("res", "tileable"), [((1, 3), (False, True)), ((2, 3, 1), (True, False, False))]
)
def test_lattice_matches_corner_loop(res, tileable):
    lattice = PerlinLattice.sample(
        res, dim=len(res), seed=3, tileable=tileable, dtype=torch.float64
    )
    axes = [
        torch.linspace(-0.4, r + 0.6, 7, dtype=torch.float64)
        if tile
        else torch.linspace(0, r, 7, dtype=torch.float64)
        for r, tile in zip(res, tileable, strict=True)
    ]
    torch.testing.assert_close(lattice(*axes), _loop_perlin(lattice, axes), rtol=0, atol=1e-12)


def test_zero_on_lattice_nodes_and_bounded():
    lattice = PerlinLattice.sample(4, dim=3, seed=0, dtype=torch.float64)
    nodes = torch.arange(5, dtype=torch.float64)
    assert lattice(nodes, nodes, nodes).abs().max() < 1e-12  # gradient noise vanishes on nodes
    noise = perlin_noise((40, 40, 40), 4, seed=1)
    assert noise.abs().max() <= 3**0.5 / 2
    assert noise.std() > 0.05


def test_seed_determinism_and_generator():
    a = perlin_noise((16, 20), (2, 4), seed=7, octaves=3)
    b = perlin_noise((16, 20), (2, 4), seed=7, octaves=3)
    c = perlin_noise((16, 20), (2, 4), seed=8, octaves=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(perlin_noise((16, 20), (2, 4), seed=gen, octaves=3), a)
    with pytest.raises(TypeError):
        perlin_noise((8, 8), 2, seed=None)


def test_tileable_axis_wraps_around():
    n = perlin_noise((32, 24), (2, 3), seed=2, tileable=(True, False))
    # Continuity across the seam: the jump from the last row to the first is as small as
    # between neighbouring rows (it is not on the non-tileable axis).
    seam = (n[-1] - n[0]).abs().max()
    step = (n[1:] - n[:-1]).abs().max()
    assert seam <= step * 1.01
    assert (n[:, -1] - n[:, 0]).abs().max() > (n[:, 1:] - n[:, :-1]).abs().max()


def test_octaves_add_scaled_finer_lattices():
    shape = (32, 32)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    fractal = perlin_noise(shape, 2, seed=gen_a, octaves=3, persistence=0.5)
    parts = sum(0.5**k * perlin_noise(shape, 2 * 2**k, seed=gen_b) for k in range(3))
    torch.testing.assert_close(fractal, parts)
