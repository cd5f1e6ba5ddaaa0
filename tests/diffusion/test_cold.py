"""Cold diffusion's severity → t map and the trailing inference spacing (DISYRE v2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adsys.diffusion import NoiseSchedule, severity_timestep, trailing_timesteps


def test_the_cold_schedule_is_linear_1e3_to_0_2_over_100_steps_with_the_listed_values():
    s = NoiseSchedule("linear", 100)
    betas = np.linspace(1e-3, 0.2, 100)
    sab = np.sqrt(np.cumprod(1 - betas))
    np.testing.assert_allclose(s.sqrt_alphas_cumprod.numpy(), sab, rtol=1e-6)
    # implementations.md §4.3's √ᾱ_t, to the digits listed
    for t, value, digits in [(0, 0.9995, 4), (24, 0.727, 3), (49, 0.272, 3), (74, 0.051, 3),
                             (99, 0.0045, 4)]:  # fmt: skip
        assert s.sqrt_alphas_cumprod[t].item() == pytest.approx(value, abs=0.5 * 10**-digits)


def test_severity_to_t_is_the_closed_form_nearest_sqrt_alpha_bar():
    s = NoiseSchedule("linear", 100)
    sab = np.sqrt(np.cumprod(1 - np.linspace(1e-3, 0.2, 100)))
    alphas = np.linspace(0, 1, 2001)
    expected = np.abs(sab[None] - alphas[:, None]).argmin(1)
    got = severity_timestep(s, torch.from_numpy(alphas))
    assert got.dtype == torch.int64 and got.shape == (2001,)
    np.testing.assert_array_equal(got.numpy(), expected)
    severe_to_mild = severity_timestep(s, torch.tensor([[1.0, 0.5], [0.1, 0.0]]))
    assert severe_to_mild.tolist() == [[0, 36], [65, 99]]  # small t = severe


def test_trailing_spacing_matches_diffusers():
    assert trailing_timesteps(100, 4) == [99, 74, 49, 24]  # DISYRE v2's "step size 25"
    assert trailing_timesteps(100, 5) == [99, 79, 59, 39, 19]
    for n in (1, 3, 7, 100):
        ts = trailing_timesteps(100, n)
        expected = np.round(np.arange(100, 0, -100 / n)).astype(np.int64) - 1
        assert ts == expected.tolist() and len(ts) == n and ts[0] == 99
    with pytest.raises(ValueError, match="1 <= n <= T"):
        trailing_timesteps(100, 101)
