"""Time integration of the fluid PDE ∂P/∂t = −V·∇P + ∇·(D∇P) on the voxel grid.

:func:`solve` (paper mode): finite-volume flux form with zero flux through brain/non-brain
and box faces (:mod:`adsys.kernels.advdiff`), explicit SSP-RK: Heun's SSP-RK2 (default),
Shu–Osher SSP-RK3, or the 4-stage second-order SSP-RK(4,2). The step is the scheme's SSP
coefficient × the forward-Euler monotone step (:func:`~adsys.kernels.advdiff.max_stable_dt`)
× ``safety``, shortened so that a whole number of steps lands on ``t_max``. SSP schemes are
convex combinations of forward-Euler stages, so with a discretely divergence-free ``V`` mass
is conserved and ``min P0 ≤ P ≤ max P0`` holds at every step.

:func:`solve_una` (``una_compat``): what UNA / CondDiff solve — advection only, the
non-conservative first-order upwind ``−Σ_a V_a ∂_a P`` of a cell-centred ``V`` (backward
difference where ``V_a > 0``, forward otherwise; one-sided at the box faces), the outer
one-voxel shell of ``P`` replaced by replicate-padding of the interior before every
right-hand-side evaluation, and the brain mask applied only after the solve. It is
integrated with the same SSP-RK stages and a CFL step ``dt · max Σ_a |V_a| ≤ safety``
(UNA integrates the same semi-discrete system with adaptive dopri5; the difference is the
time-discretisation error of the two integrators).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from adsys.kernels.advdiff import AdvDiffFields, advdiff_stage, max_stable_dt

__all__ = ["CFLError", "SolveInfo", "solve", "solve_una", "step_plan", "una_rhs"]

logger = logging.getLogger(__name__)

Scheme = Literal["ssprk2", "ssprk3", "ssprk42"]
# SSP-RK in Shu–Osher form: stage k computes alpha_k · P^n + (1 − alpha_k) · FE_h(stage input),
# a forward-Euler stage of step h = dt / c, c the SSP coefficient: stable for h ≤ the FE limit.
# ssprk2: Heun (2 stages, order 2); ssprk3: Shu–Osher (3, order 3); ssprk42: Ketcheson's
# optimal 4-stage order-2 method (c = 3: 0.75 FE steps of progress per stage instead of 0.5).
_SCHEMES: dict[str, tuple[tuple[float, ...], int]] = {
    "ssprk2": ((0.0, 0.5), 1),
    "ssprk3": ((0.0, 0.75, 1.0 / 3.0), 1),
    "ssprk42": ((0.0, 0.0, 0.0, 0.25), 3),
}


class CFLError(ValueError):
    """A requested time step exceeds the stability (monotonicity) limit."""


@dataclass(frozen=True)
class SolveInfo:
    """How a solve was stepped: ``n_steps`` steps of ``dt`` up to ``t_max``; ``dt_limit`` is
    the largest stable step of the scheme (its SSP coefficient × the forward-Euler limit)."""

    t_max: float
    dt: float
    n_steps: int
    dt_limit: float
    scheme: str

    def to_dict(self) -> dict:
        return asdict(self)


def _ssp_coefficient(scheme: str) -> int:
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(_SCHEMES)}, got {scheme!r}")
    return _SCHEMES[scheme][1]


def step_plan(
    t_max: float, dt_limit: float, *, safety: float = 0.9, dt: float | None = None
) -> tuple[float, int]:
    """``(dt, n_steps)`` with ``n_steps · dt == t_max`` and ``dt ≤ safety · dt_limit``.

    A forced ``dt`` above ``dt_limit`` raises :class:`CFLError`; a forced ``dt`` below it is
    shortened (if needed) to land exactly on ``t_max``.
    """
    if t_max < 0:
        raise ValueError(f"t_max must be >= 0, got {t_max}")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    if dt is not None:
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if dt > dt_limit:
            raise CFLError(
                f"dt={dt:.6g} exceeds the monotonicity limit {dt_limit:.6g} of these fields; "
                "use a smaller dt or let the solver choose it (dt=None)"
            )
        target = dt
    else:
        target = safety * dt_limit
    if t_max == 0:
        return 0.0, 0
    n = max(1, math.ceil(t_max / target - 1e-12)) if math.isfinite(target) else 1
    return t_max / n, n


def _integrate(
    p: torch.Tensor, n_steps: int, scheme: Scheme, stage: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """Run ``n_steps`` SSP-RK steps in place on ``p`` with preallocated stage buffers.

    ``stage(src, base, out, alpha)`` writes ``alpha·base + (1 − alpha)·FE_h(src)`` to ``out``.
    """
    alphas = _SCHEMES[scheme][0]
    bufs = [torch.empty_like(p) for _ in range(min(2, len(alphas) - 1))]
    for _ in range(n_steps):
        src = p
        for k, alpha in enumerate(alphas):
            last = k == len(alphas) - 1
            out = p if last else bufs[k % len(bufs)]
            stage(src, p if alpha else None, out, alpha)
            src = out
    return p


def solve(
    p0: torch.Tensor,
    fields: AdvDiffFields,
    t_max: float,
    *,
    scheme: Scheme = "ssprk2",
    safety: float = 0.9,
    dt: float | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """Advect and diffuse ``p0`` (X, Y, Z) up to ``t_max`` with zero-flux brain boundaries.

    Returns a new float32 tensor ``P(t_max)`` on ``fields.device`` (values outside the mask
    are those of ``p0``) and the :class:`SolveInfo`. ``t_max = 0`` returns a copy of ``p0``.
    Raises :class:`CFLError` if a forced ``dt`` exceeds the monotonicity limit.
    """
    coeff = _ssp_coefficient(scheme)
    dt_limit = coeff * max_stable_dt(fields)
    step, n_steps = step_plan(t_max, dt_limit, safety=safety, dt=dt)
    p = p0.to(device=fields.device, dtype=torch.float32).clone().contiguous()

    def stage(src, base, out, alpha):
        return advdiff_stage(src, base, fields, out, dt=step / coeff, alpha=alpha)

    logger.debug(
        "fluid solve: %d %s steps of dt=%.4g (limit %.4g)", n_steps, scheme, step, dt_limit
    )
    _integrate(p, n_steps, scheme, stage)
    return p, SolveInfo(float(t_max), step, n_steps, dt_limit, scheme)


def una_rhs(p: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """UNA's right-hand side ``−Σ_a V_a ∂_a P`` (see module docstring); (X, Y, Z)."""
    p = F.pad(p[None, None, 1:-1, 1:-1, 1:-1], (1, 1, 1, 1, 1, 1), mode="replicate")[0, 0]
    rhs = torch.zeros_like(p)
    for axis in range(3):
        diff = torch.diff(p, dim=axis)  # P[c+1] − P[c], one shorter along axis
        n = p.shape[axis]
        backward = torch.cat([diff.narrow(axis, 0, 1), diff], dim=axis)  # c = 0: forward
        forward = torch.cat([diff, diff.narrow(axis, n - 2, 1)], dim=axis)  # c = n−1: backward
        v = velocity[axis]
        rhs -= v * torch.where(v > 0, backward, forward)
    return rhs


def solve_una(
    p0: torch.Tensor,
    velocity: torch.Tensor,
    t_max: float,
    mask: torch.Tensor | None = None,
    *,
    scheme: Scheme = "ssprk2",
    safety: float = 0.9,
    dt: float | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """UNA-compatible solve (module docstring) of ``p0`` (X, Y, Z) with cell-centred
    ``velocity`` (3, X, Y, Z); ``P`` is zeroed outside ``mask`` after the solve."""
    coeff = _ssp_coefficient(scheme)
    if min(p0.shape) < 3:
        raise ValueError(f"una_compat needs at least 3 voxels per axis, got {tuple(p0.shape)}")
    velocity = velocity.to(torch.float32)
    rate = float(velocity.abs().sum(dim=0).max())
    dt_limit = math.inf if rate == 0 else coeff / rate
    step, n_steps = step_plan(t_max, dt_limit, safety=safety, dt=dt)
    p = p0.to(device=velocity.device, dtype=torch.float32).clone()

    def stage(src, base, out, alpha):
        out_fe = src + (step / coeff) * una_rhs(src, velocity)
        out.copy_(out_fe if base is None else alpha * base + (1 - alpha) * out_fe)
        return out

    _integrate(p, n_steps, scheme, stage)
    if mask is not None:
        p *= (mask != 0).to(p.device)
    return p, SolveInfo(float(t_max), step, n_steps, dt_limit, scheme)
