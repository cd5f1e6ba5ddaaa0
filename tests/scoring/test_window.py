"""Sliding-window ensembles: MONAI equivalence, invariances, DISYRE step and pDDPM spread
semantics, windows in context, caching."""

import itertools

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from adsys.scoring import (
    box_mask,
    crop_boxes,
    importance_map,
    slices_to_volume,
    sliding_window_ensemble,
    volume_to_slices,
    window_plan,
)


def restorer(windows, member=0):
    """A non-linear, member-dependent stand-in for a restoration model."""
    gain = 0.8 - 0.1 * (member or 0)
    return torch.tanh(2 * windows) * gain + 0.05 * torch.roll(windows, 1, dims=-1)


GEOMETRIES = [
    ((2, 1, 20, 17), (8, 6), 0.25),
    ((1, 2, 12, 9, 7), (5, 4, 3), 0.5),
    ((3, 1, 5, 6), (8, 8), 0.3),  # smaller than the roi: padded and cropped
    ((1, 1, 16, 16, 16), (16, 16, 16), 0.5),  # one window
    ((2, 1, 33, 40), (8, 8), 0.9),  # step 1 on a 90 % overlap
    ((1, 1, 19, 23, 9), (8, -1, 4), 0.6),  # roi -1: the full axis
]


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("shape,roi,overlap", GEOMETRIES)
@pytest.mark.parametrize("sw_batch_size", [1, 4, None])
def test_twin_equals_monai_sliding_window_inference(shape, roi, overlap, mode, sw_batch_size):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    bs = sw_batch_size or 10_000
    monai_roi = tuple(r if r > 0 else s for r, s in zip(roi, shape[2:], strict=True))
    want_pred = sliding_window_inference(x, monai_roi, bs, restorer, overlap=overlap, mode=mode)
    want_res = sliding_window_inference(x, monai_roi, bs, lambda w: (w - restorer(w)).abs(),
                                        overlap=overlap, mode=mode)
    kw = {"overlap": overlap, "mode": mode, "sw_batch_size": sw_batch_size}
    pred = sliding_window_ensemble(x, restorer, roi, reduce="prediction", **kw)
    res = sliding_window_ensemble(x, restorer, roi, return_reconstruction=True, **kw)
    torch.testing.assert_close(pred.map, want_pred, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.map, want_res, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.reconstruction, want_pred, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "shape,roi,overlap,overlap_mode",
    [(s, r, o, m) for (s, r), o, m in itertools.product(
        [((4, 1, 23, 17), (8, 8)), ((1, 2, 11, 13, 9), (4, 6, 5)), ((2, 1, 6, 5), (9, 9))],
        [0.0, 0.25, 0.5, 0.75, 1.0], ["monai", "step", "spread"],
    ) if (o > 0.0 or m == "monai") and (o < 1.0 or m != "monai")],
)
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_identity_predictor_returns_the_input(shape, roi, overlap, overlap_mode, mode):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    for bs in (1, 3, None):
        out = sliding_window_ensemble(x, lambda w, m: w, roi, overlap=overlap,
                                      overlap_mode=overlap_mode, mode=mode, sw_batch_size=bs,
                                      reduce="prediction")
        torch.testing.assert_close(out.map, x, atol=1e-5, rtol=0)
        plus_one = sliding_window_ensemble(x, lambda w, m: w + 1, roi, overlap=overlap,
                                           overlap_mode=overlap_mode, mode=mode,
                                           sw_batch_size=bs, reduce="residual_mean")
        torch.testing.assert_close(plus_one.map, torch.ones_like(x), atol=1e-5, rtol=0)


def _reference_ensemble(x, roi, starts, importance, members, reduce, foreground):
    """Brute-force loops over windows: what the module doc's formula says."""
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[0, 0])
    for b in range(x.shape[0]):
        for s in itertools.product(*starts):
            sl = tuple(slice(a, a + r) for a, r in zip(s, roi, strict=True))
            w = x[(b, slice(None), *sl)]
            recs = torch.stack([restorer(w[None], m)[0] for m in members])
            if reduce == "residual_mean":
                v = (w - recs).abs().mean(0)
            elif reduce == "reconstruction_mean":
                v = (w - recs.mean(0)).abs()
            else:
                v = recs.mean(0)
            weight = (w > 0).float().mean() if foreground else 1.0
            num[(b, slice(None), *sl)] += v * importance * weight
            if b == 0:
                den[sl] += importance
    return num / den


@pytest.mark.parametrize("reduce", ["residual_mean", "reconstruction_mean", "prediction"])
@pytest.mark.parametrize("foreground", [False, True])
def test_ensemble_reductions_and_foreground_weight_match_brute_force(reduce, foreground):
    x = torch.rand(2, 1, 14, 11, generator=torch.Generator().manual_seed(2))
    x[x < 0.3] = 0.0  # background, so foreground fractions differ between windows
    out = sliding_window_ensemble(x, restorer, (6, 6), members=(0, 1, 2), overlap=0.5,
                                  reduce=reduce, foreground_weight=foreground, sw_batch_size=5)
    plan = window_plan((14, 11), (6, 6), 0.5)
    want = _reference_ensemble(x, (6, 6), plan.grid.starts, plan.importance, (0, 1, 2), reduce,
                               foreground)
    torch.testing.assert_close(out.map, want, atol=1e-5, rtol=0)


def test_step_mode_is_disyre_geometry():
    """overlap=0.25 in DISYRE means a step of 0.25 · roi; the image is padded to tile."""
    plan = window_plan((100, 70), (32, 32), 0.25, overlap_mode="step")
    assert plan.step == (8, 8)
    assert plan.grid.starts[0] == tuple(range(0, 100 - 32 + 8, 8))[: len(plan.grid.starts[0])]
    assert plan.padded == (104, 72) and plan.pad == ((0, 4), (0, 2))
    assert all(s[-1] + 32 == p for s, p in zip(plan.grid.starts, plan.padded, strict=True))
    monai = window_plan((100, 70), (32, 32), 0.25)
    assert monai.step == (24, 24) and monai.grid.starts[0][-1] == 100 - 32


@pytest.mark.parametrize("size,roi,starts", [
    (96, 48, (0, 48)),  # P | W: the spread grid is the tiling
    (100, 48, (0, 26, 52)),  # ⌈100/48⌉ = 3 boxes re-spaced over [0, 52]
    (112, 48, (0, 32, 64)),
    (48, 48, (0,)),
    (30, 48, (0,)),  # smaller than the box: padded, one box
])
def test_spread_mode_is_pddpm_overlap_geometry(size, roi, starts):
    plan = window_plan((size,), (roi,), 1.0, overlap_mode="spread", mode="constant")
    assert plan.grid.starts == (starts,)
    assert plan.padded == (max(size, roi),)
    # the boxes cover every voxel at least once
    assert float(plan.inv_norm.min()) > 0 and float(plan.inv_norm.max()) <= 1


def test_box_masks_and_crops_agree_with_slicing():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 2, 9, 11, generator=g)
    origins = torch.tensor([[0, 0], [4, 6], [2, 3]])
    mask = box_mask(origins, (5, 5), (9, 11))
    crops = crop_boxes(images, origins, (5, 5))
    assert mask.shape == (3, 1, 9, 11) and crops.shape == (3, 2, 5, 5)
    for i, (a, b) in enumerate(origins.tolist()):
        want = torch.zeros(9, 11, dtype=torch.bool)
        want[a:a + 5, b:b + 5] = True
        assert torch.equal(mask[i, 0], want)
        assert torch.equal(crops[i], images[i, :, a:a + 5, b:b + 5])
    vol = torch.rand(2, 1, 6, 7, 8, generator=g)
    o3 = torch.tensor([[1, 2, 3], [0, 0, 4]])
    assert torch.equal(crop_boxes(vol, o3, (3, 4, 2))[1], vol[1, :, 0:3, 0:4, 4:6])
    assert int(box_mask(o3, (3, 4, 2), (6, 7, 8))[0].sum()) == 24


@pytest.mark.parametrize("size,overlap,overlap_mode", [
    ((2, 1, 32, 32), 0.0, "monai"), ((3, 1, 20, 28), 0.0, "monai"),
    ((2, 1, 20, 28), 1.0, "spread"), ((1, 2, 10, 12, 9), 0.5, "step"),
])
@pytest.mark.parametrize("sw_batch_size", [1, 3, None])
def test_windows_in_context_see_their_image_and_place(size, overlap, overlap_mode,
                                                      sw_batch_size):
    """The sites of each call name where its windows came from: cropping a window's whole
    image at its origin gives the window back, so an identity "model" that restores every
    window from its context stitches back the input (boxes tile: no blending needed)."""
    x = torch.rand(size, generator=torch.Generator().manual_seed(1))
    roi = (8,) * (len(size) - 2)
    calls = []

    def from_context(windows, member, sites):
        full = sites.context()
        assert full.shape[0] == windows.shape[0] and sites.masks().shape[0] == len(full)
        assert torch.equal(sites.crop(full), windows)
        assert sites.masks().flatten(1).sum(1).eq(8 ** len(roi)).all()
        calls.append(len(windows))
        return sites.crop(full)

    out = sliding_window_ensemble(x, from_context, roi, overlap=overlap, mode="constant",
                                  overlap_mode=overlap_mode, sw_batch_size=sw_batch_size,
                                  reduce="prediction", context=True)
    torch.testing.assert_close(out.map, x, atol=1e-6, rtol=0)
    plan = window_plan(size[2:], roi, overlap, overlap_mode=overlap_mode, mode="constant")
    assert sum(calls) == size[0] * plan.num_windows
    if sw_batch_size is None:
        assert calls == [size[0] * plan.num_windows]  # every window of every image at once


def test_importance_map_is_monais_gaussian_clamped_at_1e3():
    from monai.data.utils import compute_importance_map

    for roi in [(16, 16), (7, 12, 5), (128, 128)]:
        ours = importance_map(roi, "gaussian", 0.125)
        torch.testing.assert_close(ours, compute_importance_map(roi, "gaussian", 0.125),
                                   atol=0, rtol=0)
        assert float(ours.min()) >= 1e-3
    assert torch.equal(importance_map((3, 4), "constant"), torch.ones(3, 4))


def test_plans_are_cached_per_geometry():
    a = window_plan((40, 30), (16, 16), 0.5)
    assert window_plan((40, 30), [16, 16], 0.5) is a
    assert window_plan((40, 30), (16, 16), 0.25) is not a


def test_bad_arguments():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        window_plan((8, 8), (4, 4), 1.0)
    with pytest.raises(ValueError, match="step fraction"):
        window_plan((8, 8), (4, 4), 0.0, overlap_mode="step")
    with pytest.raises(ValueError, match="spatial dims"):
        window_plan((8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match="members"):
        sliding_window_ensemble(x, restorer, 4, members=())
    with pytest.raises(ValueError, match="reduce"):
        sliding_window_ensemble(x, restorer, 4, reduce="median")


def test_volume_slices_round_trip():
    vol = torch.rand(5, 6, 7)
    slices = volume_to_slices(vol)
    assert slices.shape == (7, 1, 5, 6) and torch.equal(slices[3, 0], vol[..., 3])
    assert torch.equal(slices_to_volume(slices), vol)
    assert np.shares_memory(slices.numpy(), vol.numpy())
