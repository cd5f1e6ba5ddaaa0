"""Fluid PDE solver: conservation, monotonicity, boundaries, steps, UNA compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adsys.kernels.advdiff import AdvDiffFields, max_stable_dt
from adsys.synth.flow import una_velocity
from adsys.synth.solver import CFLError, solve, solve_una, step_plan
from tests.synth.shapes import irregular_mask, paper_fields, smooth_field


@pytest.fixture(scope="module")
def setup():
    mask = irregular_mask((18, 20, 16), seed=11)
    fields = paper_fields(mask, seed=12, d_max=1.5)
    p0 = torch.from_numpy(smooth_field(mask.shape, 13, 0.2, 0.9) * mask)
    return mask, fields, p0


COEFF = {"ssprk2": 1, "ssprk3": 1, "ssprk42": 3}  # SSP coefficients


def _run_100_steps(fields, p0, scheme="ssprk2", factor=0.9):
    dt = factor * COEFF[scheme] * max_stable_dt(fields)
    p, info = solve(p0, fields, 100 * dt, dt=dt, scheme=scheme)
    assert info.n_steps == 100
    return p


@pytest.mark.parametrize("scheme", ["ssprk2", "ssprk3", "ssprk42"])
def test_mass_in_the_brain_is_conserved_over_100_steps(setup, scheme):
    mask, fields, p0 = setup
    p = _run_100_steps(fields, p0, scheme)
    m0, m1 = float(p0.double().sum()), float(p.double().sum())
    assert abs(m1 - m0) / m0 < 1e-5
    assert float((p - p0).abs().max()) > 0.05  # it did move


@pytest.mark.parametrize("scheme", ["ssprk2", "ssprk42"])
@pytest.mark.parametrize("factor", [0.9, 1.0])
def test_no_new_extrema_under_the_cfl_step(setup, factor, scheme):
    mask, fields, p0 = setup
    brain = torch.from_numpy(mask).bool()
    p = _run_100_steps(fields, p0, scheme, factor=factor)
    lo, hi = float(p0[brain].min()), float(p0[brain].max())
    assert float(p[brain].min()) >= lo - 1e-6
    assert float(p[brain].max()) <= hi + 1e-6


def test_nothing_enters_or_leaves_non_brain_voxels(setup):
    mask, fields, p0 = setup
    brain = torch.from_numpy(mask).bool()
    p0_out = p0.clone()
    p0_out[~brain] = 5.0  # outside values are frozen and must not leak in
    p = _run_100_steps(fields, p0_out)
    assert torch.all(p[~brain] == 5.0)
    assert float(p[brain].max()) <= float(p0[brain].max()) + 1e-6
    p_zero = _run_100_steps(fields, p0)
    assert torch.all(p_zero[~brain] == 0)


def test_t_zero_returns_p0(setup):
    _, fields, p0 = setup
    p, info = solve(p0, fields, 0.0)
    assert info.n_steps == 0 and torch.equal(p, p0) and p is not p0


def test_forced_step_above_the_cfl_limit_raises(setup):
    _, fields, p0 = setup
    limit = max_stable_dt(fields)
    with pytest.raises(CFLError, match="exceeds the monotonicity limit"):
        solve(p0, fields, 0.5, dt=1.01 * limit)
    with pytest.raises(CFLError):
        solve(p0, fields, 0.5, dt=3.03 * limit, scheme="ssprk42")
    solve(p0, fields, 0.5, dt=2.9 * limit, scheme="ssprk42")  # 3 stages of dt/3 each: stable
    with pytest.raises(CFLError):
        solve_una(p0, torch.ones(3, *p0.shape), 0.5, dt=0.34)  # limit is 1/3


def test_step_plan_lands_on_t_max():
    dt, n = step_plan(1.0, 0.3, safety=0.9)
    assert n == 4 and dt == pytest.approx(0.25)
    dt, n = step_plan(1.0, 0.3, dt=0.1)
    assert n == 10 and dt == pytest.approx(0.1)


@pytest.mark.parametrize("scheme", ["ssprk2", "ssprk3", "ssprk42"])
def test_schemes_are_second_order_accurate(scheme):
    """Halving dt divides the error (vs a fine reference) by about 4 (or 8 for RK3)."""
    mask = irregular_mask((12, 12, 12), seed=17)
    fields = paper_fields(mask, seed=18, d_max=1.0)
    p0 = torch.from_numpy(smooth_field(mask.shape, 19, 0.0, 1.0) * mask)
    t = 20 * max_stable_dt(fields)
    ref, _ = solve(p0, fields, t, scheme="ssprk3", safety=0.05)

    def err(safety):
        p, _ = solve(p0, fields, t, scheme=scheme, safety=safety)
        return float((p.double() - ref.double()).abs().max())

    assert err(0.8) / err(0.4) > 3.2


def test_diffusion_spreads_at_rate_2d():
    """Pure diffusion, constant D: the variance of a point mass grows by 2·D·T per axis."""
    n, d_const, t = 41, 0.7, 6.0
    zero = torch.zeros(n, n, n)
    fields = AdvDiffFields(
        zero,
        zero.clone(),
        zero.clone(),
        torch.full((n, n, n), d_const),
        torch.ones(n, n, n, dtype=torch.uint8),
    )
    p0 = torch.zeros(n, n, n)
    p0[n // 2, n // 2, n // 2] = 1.0
    p, _ = solve(p0, fields, t)
    x = torch.arange(n, dtype=torch.float64) - n // 2
    var_x = float((p.double().sum(dim=(1, 2)) * x**2).sum())
    assert var_x == pytest.approx(2 * d_const * t, rel=0.01)


def _loop_una_rhs(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """UNA's documented RHS, voxel by voxel: replicate-padded shell, upwind differences."""
    q = p.copy()
    shape = p.shape
    for c in np.ndindex(shape):  # shell <- nearest interior voxel (replicate padding)
        src = tuple(min(max(i, 1), s - 2) for i, s in zip(c, shape, strict=True))
        q[c] = p[src]
    rhs = np.zeros_like(p)
    for c in np.ndindex(shape):
        for axis in range(3):
            lo, hi = list(c), list(c)
            lo[axis] -= 1
            hi[axis] += 1
            if c[axis] == 0:
                deriv = q[tuple(hi)] - q[c]  # no backward difference at the box face
            elif c[axis] == shape[axis] - 1:
                deriv = q[c] - q[tuple(lo)]
            elif v[axis][c] > 0:
                deriv = q[c] - q[tuple(lo)]
            else:
                deriv = q[tuple(hi)] - q[c]
            rhs[c] -= v[axis][c] * deriv
    return rhs


def test_una_compat_matches_its_documented_semantics():
    shape = (8, 9, 7)
    mask = irregular_mask(shape, seed=14)
    p0 = smooth_field(shape, 15, 0.0, 1.0)  # not masked: UNA masks after the solve
    vel = una_velocity(shape, 2, [16, 16, 16], 40.0)
    p, info = solve_una(torch.from_numpy(p0), vel, 0.3, torch.from_numpy(mask))
    assert info.n_steps >= 2
    v = vel.double().numpy()
    ref = p0.astype(np.float64)
    for _ in range(info.n_steps):  # SSP-RK2 (Heun) with the same step
        stage = ref + info.dt * _loop_una_rhs(ref, v)
        ref = 0.5 * ref + 0.5 * (stage + info.dt * _loop_una_rhs(stage, v))
    ref *= mask
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert np.abs(ref - p0 * mask).max() > 1e-2


def test_solve_on_triton_kernel_matches_twin(setup, monkeypatch):
    mask, fields, p0 = setup
    dt = 0.9 * max_stable_dt(fields)
    monkeypatch.setenv("ADSYS_KERNELS", "torch")
    twin, _ = solve(p0, fields, 6 * dt, dt=dt)
    monkeypatch.setenv("ADSYS_KERNELS", "triton")
    tri, _ = solve(p0, fields, 6 * dt, dt=dt)
    torch.testing.assert_close(tri, twin, rtol=1e-5, atol=1e-6)
