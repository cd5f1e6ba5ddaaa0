"""The fluid generator: replay, skipping, T = 0, CFL, and the three intensity models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adsys.errors import GeometryMismatchError, InputError
from adsys.io import save_volume
from adsys.synth.fluid import (
    FluidConfig,
    encode_intensity,
    generate,
    replay,
    sample_params,
    white_matter_mean,
)
from adsys.synth.solver import CFLError
from tests.synth.shapes import irregular_mask, smooth_field

SHAPE = (20, 22, 18)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """(image, mask, lesion_map_paths, maps): a 2-tissue brain and two soft lesion maps."""
    mask = irregular_mask(SHAPE, seed=21)
    image = (mask * (0.5 + 0.4 * (smooth_field(SHAPE, 22) > 0.5))).astype(np.float32)
    folder = tmp_path_factory.mktemp("lesions")
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    paths, maps = [], []
    for k, centre in enumerate([(8, 9, 8), (11, 12, 9)]):
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        maps.append(np.exp(-r2 / 8.0).astype(np.float32))
        paths.append(save_volume(folder / f"case{k}_prob.nii.gz", maps[-1], np.eye(4)))
    return image, mask, paths, maps


@pytest.mark.parametrize(
    "config",
    [
        FluidConfig(),
        FluidConfig(intensity="conddiff", scheme="ssprk3"),
        FluidConfig(mode="una_compat", intensity="una"),
    ],
    ids=["paper", "conddiff-rk3", "una_compat"],
)
@pytest.mark.parametrize("with_maps", [True, False], ids=["lesion-maps", "perlin-shape"])
def test_replay_reproduces_a_sample_bit_for_bit(subject, config, with_maps):
    image, mask, paths, _ = subject
    maps = paths if with_maps else None
    sample = generate(image, mask, seed=3, config=config, lesion_maps=maps)
    assert sample is not None
    params = json.loads(json.dumps(sample.params))  # survives a JSON round trip
    again = replay(image, mask, params, lesion_maps=maps)
    assert np.array_equal(again.image, sample.image)
    assert np.array_equal(again.p_t, sample.p_t)
    assert np.array_equal(again.lesion, sample.lesion)
    assert sample.image.dtype == np.float32 and sample.image.min() >= 0
    assert sample.lesion.dtype == np.uint8 and not np.any(sample.lesion & (mask == 0))
    assert 0.1 <= params["t_max"] <= 0.9 + 1e-12 and params["nt"] in range(2, 11)
    expected = (sample.p_t > 0.2 * sample.p_t.max()) & (mask > 0)
    assert np.array_equal(sample.lesion, expected)
    assert not np.array_equal(sample.image, image)
    other = generate(image, mask, seed=4, config=config, lesion_maps=maps)
    assert other is None or not np.array_equal(other.image, sample.image)


def test_t_zero_returns_p0(subject):
    image, mask, paths, maps = subject
    config = FluidConfig(nt_min=1, nt_max=1)
    sample = generate(image, mask, seed=0, config=config, lesion_maps=paths[:1])
    assert sample.params["t_max"] == 0 and sample.params["solver"]["n_steps"] == 0
    np.testing.assert_array_equal(sample.p_t, maps[0] * mask)


def test_empty_lesion_is_skipped_not_raised(subject, tmp_path):
    image, mask, *_ = subject
    outside = save_volume(tmp_path / "outside.nii.gz", (1 - mask).astype(np.float32), np.eye(4))
    assert generate(image, mask, seed=0, lesion_maps=[outside]) is None
    strict = FluidConfig(empty_tol=0.9)  # any lesion below 90 % of the grid counts as empty
    assert generate(image, mask, seed=0, config=strict) is None


def test_forced_time_step_above_cfl_raises(subject):
    image, mask, paths, _ = subject
    with pytest.raises(CFLError):
        generate(image, mask, seed=1, config=FluidConfig(dt=10.0), lesion_maps=paths)


def test_lesion_map_on_another_grid_is_refused(subject, tmp_path):
    image, mask, *_ = subject
    bad = save_volume(tmp_path / "bad_prob.nii.gz", np.ones((5, 5, 5), np.float32), np.eye(4))
    with pytest.raises(GeometryMismatchError, match="bad_prob.nii.gz"):
        generate(image, mask, seed=0, lesion_maps=[bad])


def test_sign_flip_probability_is_0p2():
    flips = [sample_params(s, FluidConfig())["draws"]["flip"] for s in range(3000)]
    assert np.mean(flips) == pytest.approx(0.2, abs=0.025)


def _lesion_case():
    """Brain 10 inside a 20³ lesion block, 2 in a white-matter slab; P_T = 1 / 0.5 ring."""
    shape = (40, 40, 40)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    image = np.where(mask > 0, 5.0, 0.0).astype(np.float32)
    lesion = np.zeros(shape, np.uint8)
    lesion[10:30, 10:30, 10:30] = 1
    image[lesion > 0] = 10.0
    wm = np.zeros(shape, np.float32)
    wm[3:8, 3:37, 3:37] = 0.9
    image[wm > 0] = 2.0
    p_t = np.where(lesion > 0, 1.0, 0.0).astype(np.float32)
    p_t[8:10, 10:30, 10:30] = 0.5  # soft tail outside the binary lesion
    image[8:10, 10:30, 10:30] = 10.0
    return image, mask, p_t, lesion, wm


@pytest.mark.parametrize("flip", [False, True])
def test_paper_intensity_is_normal_minus_half_mu_w(flip):
    image, mask, p_t, lesion, wm = _lesion_case()
    draws = {"u_mu": 0.3, "u_sigma": 0.6, "flip": flip}
    out, rec = encode_intensity(
        image, mask, p_t, lesion, config=FluidConfig(), draws=draws, seed=5, wm=wm
    )
    assert rec["mu_w"] == pytest.approx(2.0)
    delta = (out - image)[lesion > 0]
    sign = -1.0 if flip else 1.0
    assert delta.mean() == pytest.approx(sign * -1.0, abs=0.02)  # N(−μ_w/2, μ_w/2), 8000 voxels
    assert delta.std() == pytest.approx(1.0, rel=0.03)
    assert np.array_equal(out[lesion == 0], image[lesion == 0])  # Δ = 0 outside Ω_P


def test_conddiff_intensity_statistics():
    image, mask, p_t, lesion, _ = _lesion_case()
    draws = {"u_mu": 0.0, "u_sigma": 0.2, "flip": False}  # no clipping at 0 with these
    config = FluidConfig(intensity="conddiff")
    out, rec = encode_intensity(image, mask, p_t, lesion, config=config, draws=draws, seed=6)
    i_mu = 10.0
    assert rec["i_mu"] == pytest.approx(i_mu)
    assert rec["mu"] == pytest.approx(-(0.75 + 0.25 * 0.0) * i_mu)
    assert rec["sigma"] == pytest.approx(i_mu / 4 * 0.2)
    inside = p_t > 0  # the soft map is applied wherever P_T > 0 (CondDiff code)
    delta = (out - image)[inside] / p_t[inside]
    assert delta.mean() == pytest.approx(rec["mu"], abs=0.02)
    assert delta.std() == pytest.approx(rec["sigma"], rel=0.03)
    assert np.array_equal(out[~inside], image[~inside])
    for u_mu in (0.0, 0.999):  # μ spans [−I_μ, −0.75·I_μ]
        _, r = encode_intensity(
            image, mask, p_t, lesion, config=config, seed=6, draws={**draws, "u_mu": u_mu}
        )
        assert -i_mu <= r["mu"] <= -0.75 * i_mu


@pytest.mark.parametrize(("polarity", "sign"), [("hyper", 1.0), ("hypo", -1.0)])
def test_una_intensity_statistics(polarity, sign):
    image, mask, p_t, lesion, _ = _lesion_case()
    draws = {"u_mu": 0.5, "u_sigma": 0.2, "flip": False}
    config = FluidConfig(intensity="una", una_polarity=polarity)
    out, rec = encode_intensity(image, mask, p_t, lesion, config=config, draws=draws, seed=7)
    assert rec["mu"] == pytest.approx(sign * 1.5 * 10.0)
    delta = (out - image)[lesion > 0]
    if sign > 0:  # no clipping: the statistics are those of N(μ, σ)
        assert delta.mean() == pytest.approx(rec["mu"], abs=0.05)
        assert delta.std() == pytest.approx(rec["sigma"], rel=0.03)
    else:  # μ = −15 on an image of 10: clipped to 0 (the image stays ≥ 0)
        assert out.min() >= 0 and np.all(out[lesion > 0] == 0)


def test_white_matter_mean_from_kmeans_or_map():
    rng = np.random.default_rng(0)
    mask = np.ones((30, 30, 30), np.uint8)
    tissue = rng.integers(0, 3, mask.shape)
    image = (np.array([0.2, 0.5, 0.8])[tissue] + rng.normal(0, 0.02, mask.shape)).astype(np.float32)
    assert white_matter_mean(image, mask) == pytest.approx(0.8, abs=0.01)
    assert white_matter_mean(image, mask, tissue="dark") == pytest.approx(0.2, abs=0.01)
    wm = (tissue == 1).astype(np.float32)
    assert white_matter_mean(image, mask, wm) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(InputError, match="white-matter"):
        white_matter_mean(image, mask, np.zeros_like(wm))
