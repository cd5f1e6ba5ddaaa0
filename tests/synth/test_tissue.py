"""Tissue intensity clusters: 1-D k-means against scikit-learn as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from adsys.synth.tissue import tissue_centroids


def _mixture(seed: int = 0, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([0.05, 0.35, 0.55, 0.72, 0.9])
    return (means[rng.integers(0, 5, n)] + rng.normal(0, 0.03, n)).astype(np.float32)


def _inertia(values: np.ndarray, centres) -> float:
    return float((np.abs(values[:, None] - np.asarray(centres)[None]).min(1) ** 2).sum())


def test_tissue_centroids_match_scikit_learn_on_a_mixture():
    values = _mixture()
    ours = tissue_centroids(values)
    assert isinstance(ours, list) and len(ours) == 5 and ours == sorted(ours)
    assert ours == tissue_centroids(values.copy())  # deterministic, no seed needed
    oracle = KMeans(5, n_init=10, random_state=0).fit(values[:, None].astype(np.float64))
    expected = np.sort(oracle.cluster_centers_[:, 0])
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert _inertia(values, ours) <= _inertia(values, expected) * (1 + 1e-6)
    np.testing.assert_allclose(ours, [0.05, 0.35, 0.55, 0.72, 0.9], atol=5e-3)


def test_tissue_centroids_take_any_shape_and_refuse_nothing():
    values = _mixture(1, 4096).reshape(16, 16, 16)
    assert tissue_centroids(values, k=3) == tissue_centroids(values.ravel(), k=3)
    with pytest.raises(ValueError, match="at least one"):
        tissue_centroids(np.array([]))
