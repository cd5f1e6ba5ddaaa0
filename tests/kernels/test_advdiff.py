"""The advection–diffusion stage: Triton kernel == torch twin == a plain numpy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adsys.kernels import advdiff
from adsys.kernels.advdiff import (
    AdvDiffFields,
    advdiff_stage,
    advdiff_stage_torch,
    advdiff_stage_triton,
    max_stable_dt,
)
from tests.synth.shapes import irregular_mask, paper_fields, random_fields


def _inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def _loop_stage(p, p_base, fields: AdvDiffFields, dt, alpha):
    """Obviously-correct reference: visit every cell and each of its six faces."""
    p = p.double().numpy()
    m = fields.mask.numpy().astype(bool)
    d = fields.d.double().numpy()
    vel = [v.double().numpy() for v in (fields.vx, fields.vy, fields.vz)]
    shape = p.shape
    out = np.empty_like(p)
    for c in np.ndindex(shape):
        net = 0.0
        for axis in range(3):
            for side in (+1, -1):
                n = list(c)
                n[axis] += side
                n = tuple(n)
                if not (0 <= n[axis] < shape[axis]) or not (m[c] and m[n]):
                    continue  # closed face: box boundary or brain/non-brain
                up, down = (c, n) if side == 1 else (n, c)  # face between down and up
                u = vel[axis][up]  # velocity on the upper face of `up`
                flux_up = max(u, 0) * p[up] + min(u, 0) * p[down]
                flux_up -= 0.5 * (d[up] + d[down]) * (p[down] - p[up])
                net += flux_up if side == 1 else -flux_up
        out[c] = p[c] - dt * net
    if alpha:
        out = alpha * p_base.double().numpy() + (1 - alpha) * out
    return out


@pytest.mark.parametrize("slab_bytes", [1 << 21, 1], ids=["one-slab", "plane-slabs"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_twin_matches_numpy_loop_reference(alpha, slab_bytes, monkeypatch):
    monkeypatch.setattr(advdiff, "_TWIN_SLAB_BYTES", slab_bytes)
    mask = irregular_mask((8, 8, 8), seed=1)
    fields = random_fields(mask, seed=2)
    p, pb = _inputs(mask.shape, 3)
    dt = 0.9 * max_stable_dt(fields)
    out = advdiff_stage_torch(
        p, pb if alpha else None, fields, torch.empty_like(p), dt=dt, alpha=alpha
    )
    ref = _loop_stage(p, pb, fields, dt, alpha)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tile", [None, (8, 8, 16)], ids=["one-tile", "18-tiles"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_triton_matches_twin_on_irregular_24cube(alpha, tile):
    mask = irregular_mask((24, 24, 24), seed=4)
    fields = paper_fields(mask, seed=5, d_max=3.0)
    p, pb = _inputs(mask.shape, 7)
    dt = max_stable_dt(fields)
    args = (p, pb if alpha else None, fields)
    twin = advdiff_stage_torch(*args, torch.empty_like(p), dt=dt, alpha=alpha, tile=(5, 24, 24))
    tri = advdiff_stage_triton(*args, torch.empty_like(p), dt=dt, alpha=alpha, tile=tile)
    torch.testing.assert_close(tri, twin, rtol=1e-5, atol=1e-6)
    assert not torch.equal(tri, p)  # the stage did something


def test_stage_may_write_into_p_base(monkeypatch):
    """SSP-RK's last stage writes in place over P^n: out aliasing p_base is allowed."""
    mask = irregular_mask((10, 12, 9), seed=8)
    fields = random_fields(mask, seed=9)
    p, pb = _inputs(mask.shape, 10)
    dt = 0.5 * max_stable_dt(fields)
    expected = advdiff_stage_torch(p, pb, fields, torch.empty_like(p), dt=dt, alpha=0.5)
    for backend in ("torch", "triton"):
        monkeypatch.setenv("ADSYS_KERNELS", backend)
        base = pb.clone()
        advdiff_stage(p, base, fields, base, dt=dt, alpha=0.5)
        torch.testing.assert_close(base, expected, rtol=1e-5, atol=1e-6)


def test_out_aliasing_p_is_refused():
    mask = irregular_mask((6, 6, 6))
    fields = random_fields(mask)
    p, _ = _inputs(mask.shape, 0)
    with pytest.raises(ValueError, match="alias"):
        advdiff_stage_torch(p, None, fields, p, dt=0.01)


def test_max_stable_dt_is_the_per_cell_bound():
    mask = np.ones((3, 3, 3), np.uint8)
    zero = torch.zeros(3, 3, 3)
    vx = zero.clone()
    vx[1, 1, 1] = 2.0  # cell (1,1,1) sends 2 voxels/unit time up in x
    fields = AdvDiffFields(
        vx, zero.clone(), zero.clone(), torch.full((3, 3, 3), 0.5), torch.from_numpy(mask)
    )
    # Centre cell: outflow 2 + six open faces of diffusivity 0.5 -> rate 5.
    assert max_stable_dt(fields) == pytest.approx(1 / 5)
    empty = AdvDiffFields(zero, zero.clone(), zero.clone(), zero.clone(), torch.from_numpy(mask))
    assert max_stable_dt(empty) == float("inf")
