"""Perlin (gradient) noise in 2D and 3D, vectorised in torch.

One octave is a lattice of random unit gradients with ``res`` cells per axis; the noise at a
point is the smootherstep (6t⁵ − 15t⁴ + 10t³) blend of the dot products of the corner
gradients with the offsets to the corners. Values lie in about [−√D/2, √D/2].

Grids are cell-centred: voxel ``i`` of an axis with ``n`` voxels sits at lattice coordinate
``(i + 0.5) · res / n``, so the box ``[−0.5, n − 0.5]`` maps onto ``[0, res]``. A
:class:`PerlinLattice` can also be evaluated at any other positions (e.g. staggered edge
centres, see :mod:`adsys.synth.flow`), which is why the lattice and its evaluation are
separate from :func:`perlin_noise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adsys.seeding import SeedLike, as_generator

__all__ = ["PerlinLattice", "cell_centres", "perlin_noise"]


def _per_axis(value, dim: int, name: str) -> tuple:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != dim:
            raise ValueError(f"{name} has {len(value)} entries for {dim} axes")
        return tuple(value)
    return (value,) * dim


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


@dataclass(frozen=True)
class PerlinLattice:
    """Random unit gradients on a lattice: one octave of Perlin noise.

    ``gradients`` has shape ``(*lattice, D)`` with ``lattice[a] = res[a] + 1``, or
    ``res[a]`` on a tileable (periodic) axis.
    """

    gradients: torch.Tensor
    res: tuple[int, ...]
    tileable: tuple[bool, ...]

    @classmethod
    def sample(
        cls,
        res: int | Sequence[int],
        *,
        dim: int,
        seed: SeedLike,
        tileable: bool | Sequence[bool] = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PerlinLattice:
        """Draw unit gradients (uniform on the sphere) from ``seed`` (CPU draws)."""
        if dim not in (2, 3):
            raise ValueError(f"Perlin noise is 2D or 3D, got dim={dim}")
        res_t = tuple(int(r) for r in _per_axis(res, dim, "res"))
        if min(res_t) < 1:
            raise ValueError(f"res must be >= 1 per axis, got {res_t}")
        tile_t = tuple(bool(t) for t in _per_axis(tileable, dim, "tileable"))
        lattice = tuple(r if t else r + 1 for r, t in zip(res_t, tile_t, strict=True))
        g = torch.randn(*lattice, dim, generator=as_generator(seed), dtype=torch.float64)
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return cls(g.to(device=device, dtype=dtype), res_t, tile_t)

    def __call__(self, *axes: torch.Tensor) -> torch.Tensor:
        """Noise on the tensor-product grid of 1-D lattice coordinates ``axes[a]``.

        ``axes[a]`` holds positions in lattice units, in ``[0, res[a]]`` (any real number on
        a tileable axis). Returns a tensor of shape ``(len(axes[0]), ..., len(axes[D-1]))``
        in the gradients' dtype.

        Within a lattice cell the noise is ``Σ_corners Σ_a g_a · (t_a − c_a) · Π_b w_b``, a
        sum of products of 1-D factors, so it is evaluated as ``D`` small tensor
        contractions of the gradient lattice with per-axis interpolation matrices.
        """
        dim = len(self.res)
        if len(axes) != dim:
            raise ValueError(f"expected {dim} coordinate axes, got {len(axes)}")
        weights, offsets = [], []  # per axis: (n, lattice) matrices of w_b and (t − c)·w_b
        for a, u in enumerate(axes):
            u = u.to(device=self.gradients.device, dtype=self.gradients.dtype)
            i0 = torch.floor(u)
            if not self.tileable[a]:
                i0 = i0.clamp(0, self.res[a] - 1)
            t = u - i0
            f = _fade(t)
            lo = i0.long()
            hi = lo + 1
            if self.tileable[a]:
                lo, hi = lo.remainder(self.res[a]), hi.remainder(self.res[a])
            size = (len(u), self.gradients.shape[a])
            rows = torch.arange(len(u), device=u.device)
            w = torch.zeros(size, dtype=u.dtype, device=u.device)
            o = torch.zeros_like(w)
            w.index_put_((rows, lo), 1 - f, accumulate=True)
            w.index_put_((rows, hi), f, accumulate=True)
            o.index_put_((rows, lo), t * (1 - f), accumulate=True)
            o.index_put_((rows, hi), (t - 1) * f, accumulate=True)
            weights.append(w)
            offsets.append(o)
        lat, out = "ijk"[:dim], "xyz"[:dim]
        spec = f"{lat}," + ",".join(f"{out[b]}{lat[b]}" for b in range(dim)) + f"->{out}"
        return sum(
            torch.einsum(
                spec,
                self.gradients[..., a],
                *[offsets[b] if b == a else weights[b] for b in range(dim)],
            )
            for a in range(dim)
        )


def cell_centres(n: int, res: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Lattice coordinates ``(i + 0.5) · res / n`` of the ``n`` voxels of one axis."""
    return (torch.arange(n, dtype=dtype) + 0.5) * (res / n)


def perlin_noise(
    shape: Sequence[int],
    res: int | Sequence[int] = 2,
    *,
    seed: SeedLike,
    octaves: int = 1,
    persistence: float = 0.5,
    lacunarity: int = 2,
    tileable: bool | Sequence[bool] = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fractal Perlin noise on a 2D or 3D voxel grid.

    Args:
        shape: grid shape ``(x, y)`` or ``(x, y, z)``.
        res: lattice periods per axis of the first octave (int or one per axis).
        seed: int seed or CPU ``torch.Generator``; octave ``k`` draws its own gradients.
        octaves: number of octaves; octave ``k`` has ``res · lacunarity**k`` periods and
            amplitude ``persistence**k``.
        tileable: per-axis periodicity (the noise wraps around the grid on those axes).

    Returns:
        Tensor of ``shape``, unnormalised (one octave lies in about ±√D/2).
    """
    shape = tuple(int(s) for s in shape)
    dim = len(shape)
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    gen = as_generator(seed)
    res_t = _per_axis(res, dim, "res")
    out = torch.zeros(shape, dtype=dtype, device=device)
    amplitude = 1.0
    for k in range(octaves):
        res_k = tuple(int(r) * lacunarity**k for r in res_t)
        lattice = PerlinLattice.sample(
            res_k, dim=dim, seed=gen, tileable=tileable, device=device, dtype=dtype
        )
        axes = [cell_centres(n, r, dtype=dtype) for n, r in zip(shape, res_k, strict=True)]
        out += amplitude * lattice(*axes)
        amplitude *= persistence
    return out
