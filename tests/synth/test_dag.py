"""DISYRE's disentangled anomaly generation (DAG): seeded, replayable, and each attribute's
formula checked on hand-made records."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage

from adsys.diffusion import NoiseSchedule, severity_timestep
from adsys.synth.corruption import CORRUPTIONS, make_corruption
from adsys.synth.dag import CODEBOOK, ShapeLibrary

KMEANS = {"tissue": "kmeans", "centroids": [0.3, 0.55, 0.8]}
CODE = {"tissue": "codebook"}
LEVELS = (0.3, 0.55, 0.8)


def _brains(n: int = 6, size: int = 96, dims: int = 2, seed: int = 0, radius: float = 0.42):
    """(images, masks): balls of three tissue rings with noise; background 0.05, not 0, so
    that the brain mask (not the image) must say where the background is."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    r = sum((a - size / 2) ** 2 for a in axes).sqrt() / size
    mask = (r < radius).float().expand(n, 1, *(size,) * dims).clone()
    tissue = torch.tensor(LEVELS)[(3 * r / radius).long().clamp(max=2)]
    noise = 0.04 * torch.randn(n, 1, *(size,) * dims, generator=g)
    images = torch.where(mask > 0, (tissue + noise).clamp(0, 1), 0.05)
    return images, mask


def _record(**changes):
    """A hand-made draw record (module doc): an unblurred 40-px square, no texture/bias."""
    rec = {
        "center": [48, 48], "kind": "square", "size": [40, 40], "offset": [32, 32],
        "angles": [], "scale": 1.0, "sigma": 0.0, "source": 0, "source_origin": [0, 0],
        "alpha_texture": 0.0, "alpha_bias": 0.0, "sign": 1, "cluster_u": [0.0] * 5,
    }  # fmt: skip
    return rec | changes


@pytest.mark.parametrize(
    ("dims", "size", "options"),
    [(2, 96, CODE), (2, 64, KMEANS), (3, 36, {**KMEANS, "window": 32})],
)
def test_dag_is_seeded_and_replays_bit_for_bit(dims, size, options):
    dag = make_corruption("dag", options)
    x, m = _brains(n=6 if dims == 2 else 3, size=size, dims=dims)
    a = dag(x, m, torch.Generator().manual_seed(3))
    b = dag(x, m, torch.Generator().manual_seed(3))
    c = dag(x, m, torch.Generator().manual_seed(4))
    assert torch.equal(a.corrupted, b.corrupted) and a.params == b.params
    assert not torch.equal(a.corrupted, c.corrupted)
    assert a.corrupted.dtype == x.dtype and a.anomaly_mask.dtype == torch.float32
    assert 0 <= a.corrupted.min() and a.corrupted.max() <= 1
    assert 0 <= a.anomaly_mask.min() and a.anomaly_mask.max() <= 1
    records = json.loads(json.dumps(a.params))  # JSON-ready, and exact through JSON
    replayed = dag.replay(x, m, records)
    assert torch.equal(replayed.corrupted, a.corrupted)
    assert torch.equal(replayed.anomaly_mask, a.anomaly_mask)
    assert replayed.params == a.params
    clone = pickle.loads(pickle.dumps(dag))  # loader workers may be spawned
    assert torch.equal(clone(x, m, torch.Generator().manual_seed(3)).corrupted, a.corrupted)
    schedule = NoiseSchedule("linear", 100)
    for rec in a.params:
        assert rec["severity"] == max(rec["texture_effective"], rec["bias_effective"])
        assert rec["t"] == severity_timestep(schedule, torch.tensor(rec["severity"])).item()
        assert rec["source"] != a.params.index(rec)  # another item's patch
        assert rec["sign"] in (1, -1) and rec["clusters"]
    assert (a.anomaly_mask.flatten(1).amax(1) > 0).any()


@pytest.mark.parametrize("options", [CODE, KMEANS])
def test_zero_alphas_give_the_clean_image_back(options):
    dag = make_corruption("dag", {**options, "alpha_texture": (0, 0), "alpha_bias": (0, 0)})
    x, m = _brains()
    res = dag(x, m, torch.Generator().manual_seed(0))
    assert torch.equal(res.corrupted, x)
    assert not res.anomaly_mask.any()
    assert {(r["severity"], r["t"]) for r in res.params} == {(0.0, 99)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nothing_changes_on_the_background(dtype):
    dag = make_corruption("dag", CODE)
    x, m = _brains(n=8, radius=0.3)  # a small brain: windows reach into the background
    x = x.to(dtype)
    background = m == 0
    for seed in range(3):
        res = dag(x, m, torch.Generator().manual_seed(seed))
        assert res.corrupted.dtype == dtype
        assert torch.equal(res.corrupted[background], x[background])
        assert not res.anomaly_mask[background].any()
        assert (res.corrupted != x).any()


def test_an_empty_brain_places_the_window_uniformly_and_changes_nothing():
    dag = make_corruption("dag", CODE)
    x, m = _brains(n=3)
    m[1] = 0
    res = dag(x, m, torch.Generator().manual_seed(2))
    assert torch.equal(res.corrupted[1], x[1])
    assert res.params[1]["severity"] == 0.0
    assert all(32 <= c <= 96 - 32 for c in res.params[1]["center"])


def test_windows_are_centred_on_brain_pixels_that_let_them_fit():
    dag = make_corruption("dag", CODE)
    x, m = _brains(n=8, size=96)
    m[:, :, :, 60:] = 0  # the brain's right part is gone: centres must follow the mask
    res = dag(x, m, torch.Generator().manual_seed(5))
    for i, rec in enumerate(res.params):
        cy, cx = rec["center"]
        assert 32 <= cy <= 64 and 32 <= cx <= 64 and m[i, 0, cy, cx] > 0
    single = dag(x[:1], m[:1], torch.Generator().manual_seed(5))
    assert single.params[0]["source"] == 0  # a batch of one: its own image


def test_texture_is_the_fpi_blend_of_a_min_max_matched_foreign_patch():
    dag = make_corruption("dag", KMEANS)
    x, m = _brains(n=2)
    rec = _record(source=1, source_origin=[20, 10], alpha_texture=0.4, cluster_u=[0.0] * 3)
    res = dag.replay(x, m, [rec, _record(source=0, cluster_u=[0.0] * 3)])
    box = (0, 0, slice(28, 68), slice(28, 68))  # centre 48, window [16, 80), square [12, 52)
    fp = x[1, 0, 20 + 12 : 20 + 52, 10 + 12 : 10 + 52]  # the same square of the source's crop
    src = x[box]
    fp = (fp - fp.min()) / (fp.max() - fp.min() + 1e-3) * (src.max() - src.min()) + src.min()
    expected = src * (1 - 0.4) + fp.clamp(0, 1) * 0.4
    torch.testing.assert_close(res.corrupted[box], expected, rtol=0, atol=1e-6)
    outside = torch.ones_like(x[0], dtype=torch.bool)
    outside[box[1:]] = False
    assert torch.equal(res.corrupted[0][outside], x[0][outside])
    assert res.params[0]["texture_effective"] == 0.4 and res.params[0]["t"] == 41
    assert torch.equal(res.anomaly_mask[box], torch.full_like(src, 0.4))
    assert torch.equal(res.corrupted[1], x[1])  # α = 0: untouched


def _two_tissue_image(levels, size=96):
    """One all-brain item: columns < 48 at levels[0], the rest at levels[1]."""
    x = torch.full((1, 1, size, size), float(levels[0]))
    x[..., 48:] = levels[1]
    return x, torch.ones_like(x)


def test_bias_touches_only_the_chosen_cluster_inside_the_shape():
    dag = make_corruption("dag", {"tissue": "kmeans", "centroids": [0.3, 0.7]})
    x, m = _two_tissue_image((0.3, 0.7))
    rec = _record(alpha_bias=0.2, cluster_u=[0.75, 0.0])  # 2 clusters present: the 2nd
    res = dag.replay(x, m, [rec])
    out, rec = res.corrupted[0, 0], res.params[0]
    assert rec["clusters"] == [1]
    rows, cols = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    in_square = (rows >= 28) & (rows < 68) & (cols >= 28) & (cols < 68)
    changed = out != x[0, 0]
    assert not (changed & ~in_square).any()  # nothing outside the shape
    assert not (changed & (cols < 48 - 4)).any()  # nor in the other cluster (blur: 4 px)
    core = in_square & (cols >= 48 + 4)  # the chosen cluster, beyond the blur's reach
    torch.testing.assert_close(out[core], torch.full_like(out[core], 0.9), rtol=0, atol=1e-6)
    assert rec["bias_effective"] == pytest.approx(0.2, abs=1e-6)
    assert rec["severity"] == rec["bias_effective"] and rec["texture_effective"] == 0.0
    down = dag.replay(x, m, [_record(alpha_bias=0.2, sign=-1, cluster_u=[0.25, 0.0])])
    assert down.params[0]["clusters"] == [0]  # the 1st cluster, lowered
    lowered = in_square & (cols < 48 - 4)
    assert torch.allclose(down.corrupted[0, 0][lowered], torch.tensor(0.1), atol=1e-6)


def test_codebook_clusters_join_with_probability_n_over_n_plus_1000():
    dag = make_corruption("dag", CODE)
    x, m = _two_tissue_image((CODEBOOK[1], CODEBOOK[3]))  # 800 px of each in the square
    # p = 800 / (1600 + 1000) ≈ 0.31 for clusters 1 and 3, 0 for the others
    res = dag.replay(x, m, [_record(alpha_bias=0.1, cluster_u=[0.0, 0.5, 0.0, 0.3, 0.0])])
    assert res.params[0]["clusters"] == [3]
    none = dag.replay(x, m, [_record(alpha_bias=0.1, cluster_u=[0.9] * 5)])
    assert none.params[0]["clusters"] == [0, 1, 2, 3, 4]  # none joined: all
    assert (none.corrupted != x)[0, 0, 28:68, 28:68].all()


def test_window_computation_equals_the_whole_image_formula_at_the_image_edge():
    """The bias, computed in the window plus 4 px, is the whole-image formula (SciPy's
    reflect blur of the cluster indicator), also where the window touches the border."""
    dag = make_corruption("dag", KMEANS)
    x, m = _brains(n=1, radius=0.6)
    rec = _record(center=[32, 63], offset=[20, 40], sigma=2.0, alpha_bias=0.5,
                  cluster_u=[0.5, 0, 0])  # fmt: skip
    res = dag.replay(x, m, [rec])
    shape = np.zeros((96, 96))
    square = np.zeros((64, 64))
    square[0:40, 20:60] = 1
    shape[0:64, 31:95] = ndimage.gaussian_filter(square, 2.0)
    shape *= m[0, 0].numpy()
    cluster = np.abs(x[0, 0].numpy()[..., None] - np.array(LEVELS)).argmin(-1)
    (chosen,) = res.params[0]["clusters"]
    tissue = ndimage.gaussian_filter((cluster == chosen).astype(np.float32), 1.0)
    bias = torch.from_numpy((0.5 * shape.astype(np.float32)) * tissue)
    torch.testing.assert_close(res.corrupted[0, 0], (x[0, 0] + bias).clamp(0, 1))


def test_shapes_are_the_drawn_box_disk_and_library_slice():
    dag = make_corruption("dag", {**KMEANS, "alpha_bias": (0, 0)})
    x, m = _brains(n=2, radius=0.6)

    def support(**kind):
        rec = _record(source=1, alpha_texture=1.0, cluster_u=[0.0] * 3) | kind
        return dag.replay(x, m, [rec, _record(cluster_u=[0.0] * 3)]).anomaly_mask[0, 0] > 0

    box = torch.zeros(96, 96, dtype=torch.bool)
    box[16 + 30 - 5 : 16 + 30 + 5, 16 + 20 - 12 : 16 + 20 + 12] = True
    assert torch.equal(support(size=[11, 25], offset=[30, 20]), box)
    rows, cols = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    disk = (rows - 16 - 30) ** 2 + (cols - 16 - 33) ** 2 <= 9**2
    assert torch.equal(support(kind="disk", diameter=19, offset=[30, 33]), disk)
    lib = ShapeLibrary()
    plane = np.indices((64, 64), dtype=np.float64) - 31.5
    blob = lib.contains(7, np.concatenate([plane, np.zeros((1, 64, 64))]))
    got = support(kind="library", index=7, angles=[0.0], scale=1.0)
    assert torch.equal(got[16:80, 16:80], torch.from_numpy(blob)) and blob.any()
    turned = support(size=[11, 25], offset=[32, 32], angles=[15.0])
    assert turned.sum().item() == pytest.approx(10 * 24, rel=0.1) and turned[48, 48]
    assert not torch.equal(turned, support(size=[11, 25], offset=[32, 32]))


def test_shape_library_is_deterministic_from_its_seed():
    a, b, c = ShapeLibrary(300, seed=7), ShapeLibrary(300, seed=7), ShapeLibrary(300, seed=8)
    assert len(a) == 300
    assert all(np.array_equal(p, q) for p, q in zip(a.centres, b.centres, strict=True))
    assert all(np.array_equal(p, q) for p, q in zip(a.radii, b.radii, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a.radii, c.radii, strict=True))
    plane = np.concatenate([np.indices((64, 64), dtype=np.float64) - 31.5, np.zeros((1, 64, 64))])
    for i in range(0, 300, 25):  # central planes: never empty, within the window at 2×
        blob = a.contains(i, plane)
        assert np.array_equal(blob, b.contains(i, plane)) and blob[31:33, 31:33].all()
        grown = a.contains(i, plane / 2)
        assert not (grown[[0, -1]].any() or grown[:, [0, -1]].any())


def test_options_and_shapes_are_checked():
    assert "dag" in CORRUPTIONS.names()
    unbound = make_corruption("dag")  # validates: the stream fills centroids from the shards
    assert unbound.cohort_keys() == {"tissue_centroids"}
    x = torch.zeros(1, 1, 64, 64)
    with pytest.raises(ValueError, match="rebuild the shards"):
        unbound(x, x, torch.Generator())
    bound = unbound.with_statistics({"tissue_centroids": [0.1, 0.5, 0.9]})
    assert bound.options.centroids == [0.1, 0.5, 0.9] and not bound.cohort_keys()
    assert not make_corruption("dag", {"tissue": "codebook"}).cohort_keys()
    with pytest.raises(ValueError, match="drop centroids"):
        make_corruption("dag", {"tissue": "codebook", "centroids": [0.5]})
    with pytest.raises(ValueError, match="centroids must increase"):
        make_corruption("dag", {"centroids": [0.5, 0.2]})
    with pytest.raises(ValueError, match="alpha_bias must be a range"):
        make_corruption("dag", {**CODE, "alpha_bias": (0.5, 0.2)})
    with pytest.raises(ValueError, match="window must be even"):
        make_corruption("dag", {**CODE, "window": 63})
    x, m = _brains(n=1, size=48)
    with pytest.raises(ValueError, match="smaller than the anomaly window 64"):
        make_corruption("dag", CODE)(x, m, torch.Generator())
