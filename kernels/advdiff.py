"""One explicit Runge–Kutta stage of ∂P/∂t = −∇·(V P) + ∇·(D ∇P) on a masked voxel grid.

Finite volumes on unit voxels. Each cell ``c`` has one face per axis on its upper side,
between ``c`` and ``c + e_a``; the arrays ``vx, vy, vz`` hold the face-normal velocity
there (voxels / unit time), so the lower face of ``c`` is the upper face of ``c − e_a``.
A face is *open* when both its cells are brain (``mask``); closed faces, and the faces of
the box, carry no flux (zero-flux / Neumann on the brain mask). Through an open face::

    F = max(u, 0) · P_c + min(u, 0) · P_{c+e} − ½ (D_c + D_{c+e}) · (P_{c+e} − P_c)

(first-order upwind advection, face-averaged diffusivity). A stage computes::

    out = alpha · p_base + (1 − alpha) · (p − dt · Σ_faces F_out)

which covers forward Euler (``alpha = 0``) and the SSP-RK2/3 combination stages. With a
discretely divergence-free ``V`` and ``dt ≤`` :func:`max_stable_dt`, each stage is a convex
combination of neighbouring values: mass is conserved and no new extrema appear. Cells
outside the mask keep their value.

Two implementations, one signature (see :mod:`adsys.kernels.dispatch`):

* :func:`advdiff_stage_triton` — one Triton kernel: each program loads a 3D tile of
  ``P, vx, vy, vz, D, mask`` (+ halo) once and writes the new ``P``.
* :func:`advdiff_stage_torch` — the CPU twin. The operator is linear with time-invariant
  coefficients, so the twin folds ``V, D, mask`` once into the 7 stencil weights of
  ``L(P) = Σ w_n · P_n`` (cached on the :class:`AdvDiffFields`) and applies them x-slab by
  x-slab with in-place ``addcmul_`` into a small, cache-resident scratch buffer: no
  full-volume temporaries per step, one pass over the weights and ``P`` per stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from adsys.kernels.dispatch import KernelPair, triton_available, triton_interpreted

__all__ = [
    "AdvDiffFields",
    "advdiff_stage",
    "advdiff_stage_torch",
    "advdiff_stage_triton",
    "max_stable_dt",
]

Tile = tuple[int, int, int]
_TRITON_TILE: Tile = (4, 8, 32)  # cells per program on a GPU (z is the contiguous axis)
_INTERPRETER_TILE_CELLS = 1 << 15  # the interpreter costs per program, not per cell
_TWIN_SLAB_BYTES = 1 << 21  # twin: x-slabs of about 2 MiB per array (stay in L2/L3)


@dataclass(eq=False)
class AdvDiffFields:
    """Time-invariant inputs of the solver, all of shape (X, Y, Z) on one device.

    ``vx, vy, vz``: float32 face-normal velocity on the upper x/y/z face of each cell
    (voxels / unit time); the last plane of each is a box face and is ignored.
    ``d``: float32 cell diffusivity (voxels² / unit time), ≥ 0.
    ``mask``: uint8 brain mask (1 = brain).

    Treat the tensors as read-only: the torch twin caches stencil weights derived from them.
    """

    vx: torch.Tensor
    vy: torch.Tensor
    vz: torch.Tensor
    d: torch.Tensor
    mask: torch.Tensor
    _twin: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        shape = self.mask.shape
        if len(shape) != 3:
            raise ValueError(f"fields must be 3D (X, Y, Z), got mask shape {tuple(shape)}")
        for name in ("vx", "vy", "vz", "d"):
            t = getattr(self, name)
            if t.shape != shape or t.dtype != torch.float32 or t.device != self.mask.device:
                raise ValueError(
                    f"{name} must be float32 of shape {tuple(shape)} on {self.mask.device}, "
                    f"got {t.dtype} {tuple(t.shape)} on {t.device}"
                )
            setattr(self, name, t.contiguous())
        if self.mask.dtype != torch.uint8:
            self.mask = (self.mask != 0).to(torch.uint8)
        self.mask = self.mask.contiguous()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)

    @property
    def device(self) -> torch.device:
        return self.mask.device


def _slabs(fields: AdvDiffFields) -> list[tuple[int, int]]:
    """x-slabs ``[x0, x1)`` of about ``_TWIN_SLAB_BYTES`` per array (one slab off the CPU)."""
    nx, ny, nz = fields.shape
    bx = nx if fields.device.type != "cpu" else max(1, _TWIN_SLAB_BYTES // (4 * ny * nz))
    return [(x0, min(nx, x0 + bx)) for x0 in range(0, nx, bx)]


def _shifted_down(t: torch.Tensor, axis: int, halo: torch.Tensor | None) -> torch.Tensor:
    """``out[c] = t[c − e_axis]``; the first plane is ``halo`` (x) or 0 (y, z)."""
    out = torch.zeros_like(t)
    n = t.shape[axis]
    out.narrow(axis, 1, n - 1).copy_(t.narrow(axis, 0, n - 1))
    if halo is not None:
        out[0] = halo
    return out


def _face_terms(fields: AdvDiffFields, x0: int, x1: int) -> list[tuple[torch.Tensor, ...]]:
    """Per axis, for the cells of slab ``[x0, x1)``: ``(u_up, d_up, u_lo, d_lo)``, float32.

    The face-normal velocity and face diffusivity ``½(D_c + D_n)`` of the upper and lower
    face of each cell; 0 on closed faces (a non-brain cell on either side, or the box).
    """
    nx = fields.shape[0]
    e0, e1 = max(x0 - 1, 0), min(x1 + 1, nx)  # the slab plus one halo plane on each side
    k, nb = x0 - e0, x1 - x0
    m = fields.mask[e0:e1].bool()
    d = fields.d[e0:e1]
    terms = []
    for axis, v in enumerate((fields.vx, fields.vy, fields.vz)):
        n = m.shape[axis]
        # Face between cell a (index i) and cell b (index i + 1) along `axis`.
        open_ = m.narrow(axis, 0, n - 1) & m.narrow(axis, 1, n - 1)
        u = torch.zeros_like(d)
        df = torch.zeros_like(d)
        torch.mul(v[e0:e1].narrow(axis, 0, n - 1), open_, out=u.narrow(axis, 0, n - 1))
        torch.add(d.narrow(axis, 0, n - 1), d.narrow(axis, 1, n - 1), out=df.narrow(axis, 0, n - 1))
        df.narrow(axis, 0, n - 1).mul_(open_).mul_(0.5)
        u_up, d_up = u[k : k + nb], df[k : k + nb]
        if axis == 0:  # the lower face of plane x0 is the upper face of the halo plane
            u_lo = _shifted_down(u_up, 0, u[k - 1] if k else None)
            d_lo = _shifted_down(d_up, 0, df[k - 1] if k else None)
        else:
            u_lo, d_lo = _shifted_down(u_up, axis, None), _shifted_down(d_up, axis, None)
        terms.append((u_up, d_up, u_lo, d_lo))
    return terms


def _outflow_rate(terms: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """Σ outgoing face velocities + Σ face diffusivities of each cell (per unit time)."""
    rate = torch.zeros_like(terms[0][0])
    for u_up, d_up, u_lo, d_lo in terms:
        rate += u_up.clamp(min=0)
        rate -= u_lo.clamp(max=0)
        rate += d_up
        rate += d_lo
    return rate


def _stencil_weights(fields: AdvDiffFields) -> list[torch.Tensor]:
    """[w_centre, w_x−, w_x+, w_y−, w_y+, w_z−, w_z+] with ``L(p) = Σ w_n · p_n``.

    ``w_a−`` weighs the lower neighbour (inflow through the lower face), ``w_a+`` the upper
    one, ``w_centre = −outflow``. Built slab by slab in float32 and cached on ``fields``
    together with the largest outflow rate (see :func:`max_stable_dt`).
    """
    cache = fields._twin
    if "weights" not in cache:
        weights = [torch.empty(fields.shape, device=fields.device) for _ in range(7)]
        worst = 0.0
        for x0, x1 in _slabs(fields):
            terms = _face_terms(fields, x0, x1)
            rate = torch.neg(_outflow_rate(terms), out=weights[0][x0:x1])
            worst = max(worst, -float(rate.min()))
            for axis, (u_up, d_up, u_lo, d_lo) in enumerate(terms):
                torch.add(u_lo.clamp(min=0), d_lo, out=weights[1 + 2 * axis][x0:x1])
                torch.sub(d_up, u_up.clamp(max=0), out=weights[2 + 2 * axis][x0:x1])
        cache["weights"], cache["max_rate"] = weights, worst
    return cache["weights"]


def max_stable_dt(fields: AdvDiffFields) -> float:
    """Largest forward-Euler step that keeps every stage a convex combination.

    Per cell: ``dt · (Σ outgoing face velocities + Σ face diffusivities) ≤ 1`` (unit voxels).
    Returns ``inf`` when nothing moves. On the CPU this builds (and caches) the twin's
    stencil weights, which carry the rates.
    """
    cache = fields._twin
    if "max_rate" not in cache:
        if fields.device.type == "cpu":
            _stencil_weights(fields)
        else:
            slabs = _slabs(fields)
            cache["max_rate"] = max(
                float(_outflow_rate(_face_terms(fields, *s)).max()) for s in slabs
            )
    worst = cache["max_rate"]
    return math.inf if worst <= 0 else 1.0 / worst


def _check_stage_args(p, p_base, fields, out, alpha) -> None:
    if p.shape != fields.shape or out.shape != fields.shape:
        raise ValueError(f"p and out must have the fields' shape {fields.shape}")
    for name, t in (("p", p), ("out", out), ("p_base", p_base)):
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 tensor")
    if out.data_ptr() == p.data_ptr():
        raise ValueError("out must not alias p (out may alias p_base)")
    if alpha != 0.0 and (p_base is None or p_base.shape != p.shape):
        raise ValueError("alpha != 0 needs p_base of the same shape as p")


def advdiff_stage_torch(
    p: torch.Tensor,
    p_base: torch.Tensor | None,
    fields: AdvDiffFields,
    out: torch.Tensor,
    *,
    dt: float,
    alpha: float = 0.0,
    tile: Tile | None = None,
) -> torch.Tensor:
    """Torch twin of :func:`advdiff_stage_triton` (same arguments, same result).

    ``tile[0]`` is the number of x-planes per slab (default: about 2 MiB per array). The
    stencil weights and a slab scratch buffer are cached on ``fields``: run one solve at a
    time per :class:`AdvDiffFields` object.
    """
    _check_stage_args(p, p_base, fields, out, alpha)
    wc, wxm, wxp, wym, wyp, wzm, wzp = _stencil_weights(fields)
    nx, ny, nz = fields.shape
    slabs = (
        [(x0, min(nx, x0 + tile[0])) for x0 in range(0, nx, tile[0])] if tile else _slabs(fields)
    )
    bx = max(x1 - x0 for x0, x1 in slabs)
    scratch = fields._twin.get("scratch")
    if scratch is None or scratch.shape[0] < bx:
        scratch = fields._twin["scratch"] = torch.empty((bx, ny, nz), device=p.device)
    for x0, x1 in slabs:
        acc = scratch[: x1 - x0]
        ps = p[x0:x1]
        torch.mul(wc[x0:x1], ps, out=acc)
        lo, hi = max(x0, 1), min(x1, nx - 1)
        acc[lo - x0 :].addcmul_(wxm[lo:x1], p[lo - 1 : x1 - 1])
        acc[: hi - x0].addcmul_(wxp[x0:hi], p[x0 + 1 : hi + 1])
        acc[:, 1:].addcmul_(wym[x0:x1, 1:], ps[:, :-1])
        acc[:, :-1].addcmul_(wyp[x0:x1, :-1], ps[:, 1:])
        acc[:, :, 1:].addcmul_(wzm[x0:x1, :, 1:], ps[:, :, :-1])
        acc[:, :, :-1].addcmul_(wzp[x0:x1, :, :-1], ps[:, :, 1:])
        if alpha == 0.0:
            torch.add(ps, acc, alpha=dt, out=out[x0:x1])
        else:
            torch.add(ps, acc, alpha=dt, out=acc)
            torch.lerp(acc, p_base[x0:x1], alpha, out=out[x0:x1])
    return out


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _net_flux(p, d, m, off, p_ptr, v_ptr, d_ptr, m_ptr, stride, has_lo, has_hi):
        """Σ outgoing flux of the cells through their lower and upper face on one axis."""
        p_hi = tl.load(p_ptr + off + stride, mask=has_hi, other=0.0)
        d_hi = tl.load(d_ptr + off + stride, mask=has_hi, other=0.0)
        open_hi = m * tl.load(m_ptr + off + stride, mask=has_hi, other=0).to(tl.float32)
        u_hi = tl.load(v_ptr + off, mask=has_hi, other=0.0) * open_hi
        f_hi = (
            tl.maximum(u_hi, 0.0) * p
            + tl.minimum(u_hi, 0.0) * p_hi
            - 0.5 * (d + d_hi) * open_hi * (p_hi - p)
        )
        p_lo = tl.load(p_ptr + off - stride, mask=has_lo, other=0.0)
        d_lo = tl.load(d_ptr + off - stride, mask=has_lo, other=0.0)
        open_lo = m * tl.load(m_ptr + off - stride, mask=has_lo, other=0).to(tl.float32)
        u_lo = tl.load(v_ptr + off - stride, mask=has_lo, other=0.0) * open_lo
        f_lo = (
            tl.maximum(u_lo, 0.0) * p_lo
            + tl.minimum(u_lo, 0.0) * p
            - 0.5 * (d_lo + d) * open_lo * (p - p_lo)
        )
        return f_hi - f_lo

    @triton.jit
    def _advdiff_stage_kernel(
        p_ptr,
        pb_ptr,
        vx_ptr,
        vy_ptr,
        vz_ptr,
        d_ptr,
        m_ptr,
        out_ptr,
        nx,
        ny,
        nz,
        dt,
        alpha,
        HAS_BASE: tl.constexpr,
        BX: tl.constexpr,
        BY: tl.constexpr,
        BZ: tl.constexpr,
    ):
        ix = (tl.program_id(0) * BX + tl.arange(0, BX))[:, None, None]
        iy = (tl.program_id(1) * BY + tl.arange(0, BY))[None, :, None]
        iz = (tl.program_id(2) * BZ + tl.arange(0, BZ))[None, None, :]
        sx = ny * nz
        inb = (ix < nx) & (iy < ny) & (iz < nz)
        off = ix * sx + iy * nz + iz
        p = tl.load(p_ptr + off, mask=inb, other=0.0)
        d = tl.load(d_ptr + off, mask=inb, other=0.0)
        m = tl.load(m_ptr + off, mask=inb, other=0).to(tl.float32)
        flux = _net_flux(
            p, d, m, off, p_ptr, vx_ptr, d_ptr, m_ptr, sx, inb & (ix > 0), inb & (ix < nx - 1)
        )
        flux += _net_flux(
            p, d, m, off, p_ptr, vy_ptr, d_ptr, m_ptr, nz, inb & (iy > 0), inb & (iy < ny - 1)
        )
        flux += _net_flux(
            p, d, m, off, p_ptr, vz_ptr, d_ptr, m_ptr, 1, inb & (iz > 0), inb & (iz < nz - 1)
        )
        res = p - dt * flux
        if HAS_BASE:
            pb = tl.load(pb_ptr + off, mask=inb, other=0.0)
            res = alpha * pb + (1.0 - alpha) * res
        tl.store(out_ptr + off, res, mask=inb)


def _interpreter_tile(shape: tuple[int, int, int]) -> Tile:
    """Few, large programs: the interpreter's cost is per program instance."""
    tile = [triton.next_power_of_2(s) for s in shape]
    while math.prod(tile) > _INTERPRETER_TILE_CELLS:
        tile[tile.index(max(tile))] //= 2
    return tuple(tile)


def advdiff_stage_triton(
    p: torch.Tensor,
    p_base: torch.Tensor | None,
    fields: AdvDiffFields,
    out: torch.Tensor,
    *,
    dt: float,
    alpha: float = 0.0,
    tile: Tile | None = None,
) -> torch.Tensor:
    """One RK stage in one Triton kernel pass over 3D tiles; writes and returns ``out``.

    Args:
        p: (X, Y, Z) float32 stage input.
        p_base: (X, Y, Z) float32 value combined with weight ``alpha`` (SSP-RK); ``None``
            when ``alpha == 0``. ``out`` may alias ``p_base`` but not ``p``.
        fields: velocities, diffusivity and mask (:class:`AdvDiffFields`).
        out: (X, Y, Z) float32 result buffer.
        dt: time step (unit time); stable for ``dt ≤ max_stable_dt(fields)``.
        alpha: ``out = alpha · p_base + (1 − alpha) · (p + dt · L p)``.
        tile: cells per program (powers of two); default (4, 8, 32) on a GPU and a few
            large tiles under the interpreter.
    """
    _check_stage_args(p, p_base, fields, out, alpha)
    nx, ny, nz = fields.shape
    if tile is None:
        tile = _interpreter_tile(fields.shape) if triton_interpreted() else _TRITON_TILE
    grid = tuple(triton.cdiv(n, b) for n, b in zip(fields.shape, tile, strict=True))
    has_base = alpha != 0.0
    _advdiff_stage_kernel[grid](
        p,
        p_base if has_base else p,
        fields.vx,
        fields.vy,
        fields.vz,
        fields.d,
        fields.mask,
        out,
        nx,
        ny,
        nz,
        float(dt),
        float(alpha),
        HAS_BASE=has_base,
        BX=tile[0],
        BY=tile[1],
        BZ=tile[2],
    )
    return out


advdiff_stage = KernelPair(
    "advdiff_stage", triton_fn=advdiff_stage_triton, torch_fn=advdiff_stage_torch
)
