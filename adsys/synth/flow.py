"""Velocity and diffusivity fields of the fluid-driven anomaly randomisation.

Velocity (paper mode): ``V = s · curl(χ Ψ)`` on a staggered (MAC) grid. The vector
potential ``Ψ = (Ψx, Ψy, Ψz)`` lives on cell edges (``Ψx`` on x-parallel edges, ...), each
component an independent Perlin field (res 2 periods per axis). The face-normal velocities
are its discrete edge-to-face curl (Stokes on each face), so the discrete divergence of
every cell is exactly 0 (the edge terms cancel pairwise). ``χ`` is a smooth cut-off,
``smoothstep(dist / width)``, with ``dist`` the distance (voxels) from the edge's cells to
the nearest non-brain voxel: it is 0 on every edge touching a non-brain voxel or the box
boundary, hence the normal velocity on every brain-boundary face is exactly 0. The ramp
adds a tangential flow of about ``s · Ψ / width`` along the brain surface; a width of a
quarter of a Perlin period (the generator's default) keeps it about as fast as the interior
flow (narrow ramps make fast boundary jets and small stable time steps).

Diffusivity: ``D = d_max · Φ² / max Φ²`` with ``Φ`` a scalar Perlin field (0 outside).

Scaling with grid size: potentials are in voxel units with ``res`` periods per axis, so a
period spans ``n / res`` voxels and ``|V| ~ s · res / n`` voxels per unit time. UNA draws
its potentials on a 200³ grid with ``s = 500``; on an ``n``-voxel grid (``n`` = largest
dimension) the effective multiplier ``s · (n / 200)²`` keeps displacements the same
fraction of the grid, and the same factor applies to ``d_max``
(``reference_size=None`` uses ``s`` and ``d_max`` unscaled).

UNA compatibility (:func:`una_velocity`): cell-centred ``V = s · curl Ψ`` by central
differences (one-sided at the box faces, as ``numpy.gradient``) of three *identical*
potentials, no cut-off; it is divergence-free only in the continuum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from adsys.kernels.advdiff import AdvDiffFields
from adsys.synth.perlin import PerlinLattice, cell_centres

__all__ = [
    "diffusivity",
    "edge_cutoffs",
    "grid_factor",
    "make_fields",
    "staggered_curl",
    "una_velocity",
    "upper_face_divergence",
    "velocity_potentials",
]

Shape = tuple[int, int, int]


def grid_factor(shape: Sequence[int], reference_size: int | None) -> float:
    """``(n / reference_size)²`` with ``n = max(shape)``; 1 when ``reference_size`` is None."""
    return 1.0 if reference_size is None else (max(shape) / reference_size) ** 2


def _nodes(n: int, res: float) -> torch.Tensor:
    """Lattice coordinates of the ``n + 1`` cell boundaries of one axis."""
    return torch.arange(n + 1, dtype=torch.float64) * (res / n)


def velocity_potentials(
    shape: Shape, res: int, seeds: Sequence[int], *, independent: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Perlin potentials on the edges: ``Ψx`` (X, Y+1, Z+1), ``Ψy`` (X+1, Y, Z+1), ``Ψz``
    (X+1, Y+1, Z), float64. ``independent=False`` uses the lattice of ``seeds[0]`` for all
    three components (UNA / CondDiff behaviour)."""
    lattices = [PerlinLattice.sample(res, dim=3, seed=s, dtype=torch.float64) for s in seeds]
    if not independent:
        lattices = [lattices[0]] * 3
    out = []
    for axis, lattice in enumerate(lattices):
        axes = [cell_centres(n, res) if a == axis else _nodes(n, res) for a, n in enumerate(shape)]
        out.append(lattice(*axes))
    return tuple(out)


def edge_cutoffs(mask: np.ndarray, width: float) -> tuple[torch.Tensor, ...]:
    """χ on the x-, y- and z-parallel edges (shapes as in :func:`velocity_potentials`).

    ``χ = smoothstep(min(dist of the 4 cells around the edge) / width)``, with ``dist`` the
    Euclidean distance of a brain cell to the nearest non-brain cell (outside the box
    counts as non-brain) and 0 for non-brain cells.
    """
    padded = np.pad(mask.astype(bool), 1)
    dist = torch.from_numpy(ndimage.distance_transform_edt(padded))  # (X+2, Y+2, Z+2)
    t = (dist / width).clamp(0.0, 1.0)
    chi_cell = t * t * (3.0 - 2.0 * t)
    out = []
    for axis in range(3):
        # An edge parallel to `axis` touches the 2 × 2 cells around it in the other axes.
        a, b = (ax for ax in range(3) if ax != axis)
        core = [slice(None)] * 3
        core[axis] = slice(1, -1)
        c = chi_cell[tuple(core)]
        lo_a, hi_a = [slice(None)] * 3, [slice(None)] * 3
        lo_a[a], hi_a[a] = slice(0, -1), slice(1, None)
        m = torch.minimum(c[tuple(lo_a)], c[tuple(hi_a)])
        lo_b, hi_b = [slice(None)] * 3, [slice(None)] * 3
        lo_b[b], hi_b[b] = slice(0, -1), slice(1, None)
        out.append(torch.minimum(m[tuple(lo_b)], m[tuple(hi_b)]))
    return tuple(out)


def staggered_curl(
    psi_x: torch.Tensor, psi_y: torch.Tensor, psi_z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge-to-face curl: face-normal ``u`` (X+1, Y, Z), ``v`` (X, Y+1, Z), ``w`` (X, Y, Z+1).

    ``u = ∂yΨz − ∂zΨy`` etc. as differences of the edge values around each face (unit
    voxels); the divergence of every cell vanishes identically.
    """
    u = (psi_z[:, 1:, :] - psi_z[:, :-1, :]) - (psi_y[:, :, 1:] - psi_y[:, :, :-1])
    v = (psi_x[:, :, 1:] - psi_x[:, :, :-1]) - (psi_z[1:, :, :] - psi_z[:-1, :, :])
    w = (psi_y[1:, :, :] - psi_y[:-1, :, :]) - (psi_x[:, 1:, :] - psi_x[:, :-1, :])
    return u, v, w


def upper_face_divergence(vx: torch.Tensor, vy: torch.Tensor, vz: torch.Tensor) -> torch.Tensor:
    """Net outflow of each cell for upper-face velocities (box faces closed), (X, Y, Z)."""
    div = torch.zeros_like(vx)
    for axis, v in enumerate((vx, vy, vz)):
        upper = v.clone()
        idx = [slice(None)] * 3
        idx[axis] = -1
        upper[tuple(idx)] = 0  # the last plane is the closed box face
        lower = torch.zeros_like(v)
        dst, src = [slice(None)] * 3, [slice(None)] * 3
        dst[axis], src[axis] = slice(1, None), slice(0, -1)
        lower[tuple(dst)] = upper[tuple(src)]
        div += upper - lower
    return div


def diffusivity(shape: Shape, mask: np.ndarray, res: int, seed: int, d_max: float) -> torch.Tensor:
    """``D = d_max · Φ² / max_brain Φ²`` at cell centres, 0 outside the brain; float64."""
    phi = PerlinLattice.sample(res, dim=3, seed=seed, dtype=torch.float64)(
        *[cell_centres(n, res) for n in shape]
    )
    brain = torch.from_numpy(mask.astype(bool))
    d = phi.square() * brain
    peak = float(d.max())
    return d * (d_max / peak) if peak > 0 else d


def make_fields(
    mask: np.ndarray,
    *,
    res: int,
    speed: float,
    d_max: float,
    width: float,
    seeds: Sequence[int],
    independent: bool = True,
    device: torch.device | str = "cpu",
) -> AdvDiffFields:
    """Paper-mode fields for ``mask`` (X, Y, Z): divergence-free, boundary-tangential ``V``
    (``speed`` = effective multiplier ``s``) and ``D`` in [0, d_max].

    ``seeds``: 4 ints — the three potentials and the diffusivity.
    """
    shape = tuple(int(s) for s in mask.shape)
    psi = velocity_potentials(shape, res, seeds[:3], independent=independent)
    chi = edge_cutoffs(mask, width)
    u, v, w = staggered_curl(*(p * c for p, c in zip(psi, chi, strict=True)))
    # Upper face of each cell; the lower box faces (index 0) carry χ = 0 and are dropped.
    vx, vy, vz = (speed * f.narrow(a, 1, f.shape[a] - 1) for a, f in enumerate((u, v, w)))
    d = diffusivity(shape, mask, res, seeds[3], d_max)
    return AdvDiffFields(
        *(t.to(device=device, dtype=torch.float32) for t in (vx, vy, vz, d)),
        mask=torch.from_numpy(mask.astype(np.uint8)).to(device),
    )


def una_velocity(shape: Shape, res: int, seeds: Sequence[int], speed: float) -> torch.Tensor:
    """UNA's cell-centred velocity ``s · curl Ψ``, (3, X, Y, Z) float32.

    Central differences, one-sided at the box faces (``torch.gradient``), of the three
    potentials drawn from ``seeds`` (pass one seed three times for UNA's identical ones).
    """
    centres = [cell_centres(n, res) for n in shape]
    psi = [PerlinLattice.sample(res, dim=3, seed=s, dtype=torch.float64)(*centres) for s in seeds]
    grad = [torch.gradient(p, dim=(0, 1, 2)) for p in psi]  # grad[c][axis] = ∂_axis Ψ_c
    vel = torch.stack([grad[2][1] - grad[1][2], grad[0][2] - grad[2][0], grad[1][0] - grad[0][1]])
    return (speed * vel).float()
