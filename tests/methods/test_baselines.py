"""The classic baselines: their maps are their definitions, on a synthetic cohort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adsys.methods import build_method, method_class
from adsys.methods.baselines import Z_SCORE_MAX
from adsys.methods.export import export_model, load_exported

G = torch.Generator()


def _cohort(n: int = 5, shape=(6, 7, 5), seed: int = 0) -> torch.Tensor:
    """(n, 1, *shape) volumes in [0, 1] with a voxel-wise varying mean and spread."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, shape)
    vols = np.clip(base + rng.normal(0, 0.1, (n, *shape)), 0, 1)
    vols[:, 0, 0, 0] = 0.5  # one voxel with no spread: the z-score's std floor
    return torch.from_numpy(vols[:, None].astype(np.float32))


def test_the_baselines_are_not_trainable_and_have_their_own_maps():
    for name in ("threshold", "threshold-hypo", "deviation"):
        cls = method_class(name)
        assert not cls.trainable
        assert build_method(name).config.inference.map.kind == "method"
    assert method_class("ddpm").trainable


def test_threshold_maps_are_the_image_and_its_complement():
    x = _cohort()
    torch.testing.assert_close(build_method("threshold").anomaly_map(x, G), x)
    torch.testing.assert_close(build_method("threshold-hypo").anomaly_map(x, G), 1 - x)
    assert build_method("threshold").fit(iter(())) == 0  # nothing to fit, nothing read


def test_deviation_fits_the_voxelwise_mean_and_std_of_the_training_volumes(tmp_path):
    train = _cohort(7)
    method = build_method("deviation")
    batches = [{"image": train[:4]}, {"image": train[4:]}]  # any batching, same numbers
    assert method.fit(batches) == 7
    ref = train[:, 0].double().numpy()
    np.testing.assert_allclose(method.mean.numpy(), ref.mean(0), atol=1e-6)
    np.testing.assert_allclose(method.std.numpy(), ref.std(0), atol=1e-6)  # ddof 0
    assert method.config.grid == (6, 7, 5)
    x = _cohort(2, seed=1)
    mu, sd = ref.mean(0), ref.std(0)
    np.testing.assert_allclose(method.anomaly_map(x, G).numpy()[:, 0],
                               np.abs(x.numpy()[:, 0] - mu), atol=1e-6)
    z = build_method("deviation", {"form": "z"})
    z.fit(batches)
    np.testing.assert_allclose(z.anomaly_map(x, G).numpy()[:, 0],
                               np.abs(x.numpy()[:, 0] - mu) / np.maximum(sd, 0.01), rtol=1e-4,
                               atol=1e-5)
    assert z.config.inference.map.score_range == (0.0, Z_SCORE_MAX)
    export_model(tmp_path, "deviation", z.config, z.state_dict())  # the statistics travel
    loaded, _ = load_exported(tmp_path)
    torch.testing.assert_close(loaded.anomaly_map(x, G), z.anomaly_map(x, G))


def test_deviation_refuses_what_it_cannot_compare():
    method = build_method("deviation")
    with pytest.raises(ValueError, match="no statistics yet"):
        method.anomaly_map(_cohort(1), G)
    with pytest.raises(ValueError, match="one grid"):
        method.fit([{"image": _cohort(2)}, {"image": _cohort(2, shape=(6, 7, 6))}])
    with pytest.raises(ValueError, match="holds no volume"):
        method.fit([])
    method.fit([{"image": _cohort(2)}])
    with pytest.raises(ValueError, match=r"training mean of shape \(6, 7, 5\).*\(6, 7, 6\)"):
        method.anomaly_map(_cohort(1, shape=(6, 7, 6)), G)
