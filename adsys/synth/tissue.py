"""Tissue intensity clusters: exact-assignment 1-D k-means of brain intensities.

Used by the fluid generator (μ_w: the brightest or darkest of 3 clusters of one image) and
by DISYRE's anomaly generator (:mod:`adsys.synth.dag`: K = 5 clusters of the training
cohort's brain intensities, computed once when the shards are built and stored in their
manifest, so that every loader worker biases the same tissue classes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["tissue_centroids"]


def tissue_centroids(intensity_samples: np.ndarray, k: int = 5, iters: int = 100) -> list[float]:
    """The ``k`` cluster centres (ascending, intensity units) of 1-D k-means (Lloyd) over
    ``intensity_samples`` (any shape, flattened; e.g. brain voxels sampled over a cohort).

    Deterministic, so no seed: centres start at the quantiles (i + 0.5)/k and each step
    assigns every value to its nearest centre exactly (sorted values, cuts at the
    midpoints), until the centres stop moving or ``iters`` steps. A centre that loses all its
    values stays where it is. Cost: one sort, then O(k log n) per step.
    """
    v = np.sort(np.asarray(intensity_samples, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("tissue_centroids needs at least one intensity sample")
    centres = np.quantile(v, (np.arange(k) + 0.5) / k)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    for _ in range(iters):
        cuts = np.searchsorted(v, (centres[1:] + centres[:-1]) / 2)
        bounds = np.concatenate([[0], cuts, [len(v)]])
        counts = np.diff(bounds)
        sums = csum[bounds[1:]] - csum[bounds[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(new, centres):
            break
        centres = new
    return centres.tolist()
