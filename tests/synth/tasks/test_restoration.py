"""The ``icdm_tasks`` corruption: every task seeded and replayed bit for bit in 2D and 3D, its
anomaly mask covering what changed, results inside the image's range, clean pairs at the
identity rate, sources, options."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from adsys.synth.corruption import CORRUPTIONS, make_corruption
from tests.synth.tasks.phantoms import brains

BLEND_TOL = 1e-3  # blends may change voxels off the shapes by up to this (module doc)
CASES = [(task, dims) for dims in (2, 3) for task in range(5)]


def _batch(dims):
    return brains(n=3, size=48, dims=2) if dims == 2 else brains(n=2, size=24, dims=3)


@pytest.mark.parametrize(("task", "dims"), CASES)
def test_each_task_is_seeded_replays_and_masks_what_it_changed(task, dims):
    corruption = make_corruption("icdm_tasks", {"tasks": [task], "identity_p": 0.0})
    x, m = _batch(dims)
    a = corruption(x, m, torch.Generator().manual_seed(7))
    b = corruption(x, m, torch.Generator().manual_seed(7))
    c = corruption(x, m, torch.Generator().manual_seed(8))
    assert torch.equal(a.corrupted, b.corrupted) and a.params == b.params
    assert torch.equal(a.anomaly_mask, b.anomaly_mask)
    assert not torch.equal(a.corrupted, c.corrupted)
    assert a.corrupted.dtype == x.dtype and a.anomaly_mask.dtype == torch.float32
    assert a.target is None and a.masks is None

    replayed = corruption.replay(x, m, json.loads(json.dumps(a.params)))  # JSON-exact
    assert torch.equal(replayed.corrupted, a.corrupted)
    assert torch.equal(replayed.anomaly_mask, a.anomaly_mask)

    tol = BLEND_TOL if task in (0, 1) else 0.0
    for i, rec in enumerate(a.params):
        assert rec["task"] == task and 1 <= len(rec["anomalies"]) <= 4
        mask = a.anomaly_mask[i, 0] > 0
        change = (a.corrupted[i, 0] - x[i, 0]).abs()
        assert mask.any() and change.max() > 0
        assert change[~mask].max() <= tol  # every voxel changed by more is in the mask
        assert x[i].min() <= a.corrupted[i].min() and a.corrupted[i].max() <= x[i].max()


def test_the_mask_tolerance_of_the_blends_is_needed():
    """Blends change voxels beside their shapes (below 0.001), so the tolerance above is
    not slack: the shapes alone do not cover every changed voxel."""
    corruption = make_corruption("icdm_tasks", {"tasks": [0], "identity_p": 0.0})
    x, m = _batch(2)
    res = corruption(x, m, torch.Generator().manual_seed(7))
    off = (res.corrupted != x) & (res.anomaly_mask == 0)
    assert off.any()


def test_identity_pairs_come_at_their_rate_unchanged_with_empty_masks():
    corruption = make_corruption("icdm_tasks", {"tasks": [4], "identity_p": 0.3})
    x, m = brains(n=200, size=20)
    res = corruption(x, m, torch.Generator().manual_seed(0))
    clean = [rec["task"] is None for rec in res.params]
    assert 0.22 < np.mean(clean) < 0.38  # 200 draws of p 0.3: σ ≈ 0.032
    for i, is_clean in enumerate(clean):
        assert (not res.anomaly_mask[i].any()) == is_clean
        assert (res.params[i]["anomalies"] == []) == is_clean
        if is_clean:
            assert torch.equal(res.corrupted[i], x[i])
    assert not torch.equal(res.corrupted, x)
    counts = np.bincount([len(r["anomalies"]) for r in res.params if r["task"] is not None])
    assert counts[1] > counts[2] > counts[3] > 0  # geometric: ½, ¼, …


def test_identity_rate_zero_and_one():
    x, m = brains(n=8, size=20)
    g = torch.Generator().manual_seed(0)
    always = make_corruption("icdm_tasks", {"identity_p": 1.0})(x, m, g)
    assert torch.equal(always.corrupted, x) and not always.anomaly_mask.any()
    never = make_corruption("icdm_tasks", {"tasks": [2, 4], "identity_p": 0.0})(x, m, g)
    assert all(r["task"] in (2, 4) for r in never.params)


def test_intra_dataset_blends_take_another_item_or_the_flipped_item_itself():
    corruption = make_corruption("icdm_tasks", {"tasks": [0], "identity_p": 0.0})
    x, m = _batch(2)
    res = corruption(x, m, torch.Generator().manual_seed(1))
    for i, rec in enumerate(res.params):
        assert all(a["source"] != i and not a["flipped"] for a in rec["anomalies"])
    single = corruption(x[:1], m[:1], torch.Generator().manual_seed(1))
    assert all(a["source"] == 0 and a["flipped"] for a in single.params[0]["anomalies"])
    assert (single.corrupted != x[:1]).any()


def test_foreign_blends_name_their_source_files(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    for name in ("one.png", "two.png"):
        io.imsave(tmp_path / name, (rng.random((40, 40)) * 255).astype(np.uint8))
    corruption = make_corruption(
        "icdm_tasks", {"tasks": [1], "identity_p": 0.0, "foreign_source": str(tmp_path)}
    )
    x, m = _batch(2)
    res = corruption(x, m, torch.Generator().manual_seed(2))
    names = {a["source"] for rec in res.params for a in rec["anomalies"]}
    assert names <= {"one.png", "two.png"}
    again = make_corruption(
        "icdm_tasks", {"tasks": [1], "identity_p": 0.0, "foreign_source": str(tmp_path)}
    ).replay(x, m, res.params)  # a fresh instance reads the files again
    assert torch.equal(again.corrupted, res.corrupted)


def test_it_pickles_and_draws_the_same_in_a_worker():
    corruption = make_corruption("icdm_tasks", {"tasks": [1, 4]})
    x, m = _batch(2)
    first = corruption(x, m, torch.Generator().manual_seed(3))  # fills the source cache
    clone = pickle.loads(pickle.dumps(corruption))
    assert clone.sources._cache == {}
    assert torch.equal(clone(x, m, torch.Generator().manual_seed(3)).corrupted, first.corrupted)


def test_an_empty_brain_mask_falls_back_to_the_image_foreground():
    corruption = make_corruption("icdm_tasks", {"tasks": [4], "identity_p": 0.0})
    x, m = _batch(2)
    res = corruption(x, torch.zeros_like(m), torch.Generator().manual_seed(4))
    assert res.anomaly_mask.flatten(1).any(1).all()


def test_half_precision_images_keep_their_dtype_and_unchanged_voxels():
    corruption = make_corruption("icdm_tasks", {"tasks": [2], "identity_p": 0.0})
    x, m = _batch(2)
    x = x.half()
    res = corruption(x, m, torch.Generator().manual_seed(5))
    assert res.corrupted.dtype == torch.float16
    assert torch.equal(res.corrupted[res.anomaly_mask == 0], x[res.anomaly_mask == 0])


def test_options_and_shapes_are_checked():
    assert "icdm_tasks" in CORRUPTIONS.names()
    default = make_corruption("icdm_tasks")
    assert default.options.tasks == [0, 1, 2, 3, 4] and default.options.identity_p == 0.2
    assert default.scale == 0.1
    assert make_corruption("icdm_tasks", {"intensity": "uniform"}).scale == 0.2
    assert make_corruption("icdm_tasks", {"intensity_scale": 0.05}).scale == 0.05
    for bad in ([], [5], [1, 1]):
        with pytest.raises(ValueError, match="tasks must be distinct task numbers in 0..4"):
            make_corruption("icdm_tasks", {"tasks": bad})
    with pytest.raises(ValueError, match="identity_p"):
        make_corruption("icdm_tasks", {"identity_p": 1.5})
    with pytest.raises(ValueError, match="options.colour"):
        make_corruption("icdm_tasks", {"colour": 1})
    x = torch.zeros(2, 2, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, 1, x, y\[, z\]\)"):
        default(x, x, torch.Generator())


def test_an_anomaly_without_room_ends_the_items_list_and_says_why():
    """A single-voxel brain in a corner holds one small anomaly at most: the next one's
    placement error ends the item's list and is recorded; the batch goes on."""
    images = torch.zeros(2, 1, 32, 32)
    masks = torch.zeros_like(images)
    masks[:, 0, 0, 0] = 1
    images[:, 0, 0, 0] = 1
    c = make_corruption("icdm_tasks", {"tasks": [4], "identity_p": 0.0})
    out = c(images, masks, torch.Generator().manual_seed(0))
    unplaced = [p for p in out.params if "unplaced" in p]
    assert unplaced and all("overlaps the foreground" in p["unplaced"] for p in unplaced)
    assert all(p["task"] == (4 if p["anomalies"] else None) for p in unplaced)
    again = c.replay(images, masks, out.params)
    assert torch.equal(again.corrupted, out.corrupted)
