"""Velocity and diffusivity fields: discretely divergence-free, tangential at the brain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adsys.synth.flow import (
    diffusivity,
    grid_factor,
    make_fields,
    una_velocity,
    upper_face_divergence,
)
from adsys.synth.perlin import perlin_noise
from tests.synth.shapes import irregular_mask


@pytest.fixture(scope="module")
def mask():
    return irregular_mask((20, 22, 18), seed=3)


@pytest.fixture(scope="module")
def fields(mask):
    return make_fields(mask, res=2, speed=50.0, d_max=2.0, width=2.0, seeds=[1, 2, 3, 4])


def test_discrete_divergence_is_zero_in_every_cell(fields, mask):
    div = upper_face_divergence(*(v.double() for v in (fields.vx, fields.vy, fields.vz)))
    vmax = max(float(v.abs().max()) for v in (fields.vx, fields.vy, fields.vz))
    assert vmax > 1.0  # a real flow, not a zero field
    assert float(div.abs().max()) <= 1e-6 * vmax  # float32 rounding of the face values only


def test_no_normal_velocity_on_brain_boundary_or_box_faces(fields, mask):
    m = torch.from_numpy(mask).bool()
    for axis, v in enumerate((fields.vx, fields.vy, fields.vz)):
        n = m.shape[axis]
        inner = m.narrow(axis, 0, n - 1) & m.narrow(axis, 1, n - 1)  # both cells brain
        faces = v.narrow(axis, 0, n - 1)
        assert torch.all(faces[~inner] == 0), f"flux through a closed face on axis {axis}"
        assert torch.all(v.narrow(axis, n - 1, 1) == 0)  # upper box face
        assert float(faces[inner].abs().max()) > 0


def test_potentials_independent_by_default_identical_on_request(mask):
    kw = dict(res=2, speed=50.0, d_max=0.0, width=2.0)
    same = make_fields(mask, seeds=[1, 2, 3, 4], independent=False, **kw)
    forced = make_fields(mask, seeds=[1, 1, 1, 4], independent=True, **kw)
    indep = make_fields(mask, seeds=[1, 2, 3, 4], independent=True, **kw)
    assert torch.equal(same.vx, forced.vx) and torch.equal(same.vz, forced.vz)
    assert not torch.equal(same.vx, indep.vx)


def test_diffusivity_is_phi_squared_in_0_dmax(mask):
    d = diffusivity(mask.shape, mask, res=2, seed=9, d_max=3.5)
    phi = perlin_noise(mask.shape, 2, seed=9, dtype=torch.float64)
    assert float(d.max()) == pytest.approx(3.5)
    assert float(d.min()) >= 0 and torch.all(d[torch.from_numpy(mask) == 0] == 0)
    brain = torch.from_numpy(mask).bool()
    ratio = d[brain] / phi[brain].square()
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])))


def test_una_velocity_is_central_difference_curl_of_identical_potentials():
    shape, speed = (12, 10, 9), 500.0
    v = una_velocity(shape, 2, [7, 7, 7], speed).double().numpy()
    psi = perlin_noise(shape, 2, seed=7, dtype=torch.float64).numpy()
    gx, gy, gz = np.gradient(psi)  # central differences, one-sided at the box faces
    expected = speed * np.stack([gy - gz, gz - gx, gx - gy])
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-4)


def test_grid_factor_scales_with_size_squared():
    assert grid_factor((200, 180, 150), 200) == 1.0
    assert grid_factor((96, 96, 80), 200) == pytest.approx(0.2304)
    assert grid_factor((96, 96, 80), None) == 1.0
