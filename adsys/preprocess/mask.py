"""The brain mask of a scan given without a mask file: a threshold above its background.

The threshold is applied on the scan's own grid, before any resampling: a cubic B-spline
rings, so thresholding a resampled image at its background level marks background voxels
far from the brain as brain. The pipeline resamples the thresholded mask the way it
resamples a mask file (nearest neighbour).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np


def border_background(data: np.ndarray) -> float:
    """The most frequent value on the six faces of ``data`` (x, y, z).

    Skull stripping leaves one constant outside the brain (0, a scanner offset, -1024 in CT
    units, ...), which is then the commonest border value even where the brain touches the
    border. A noisy background has no such value: give a mask file, or set the background
    level in the config, for those scans.
    """
    faces = [data[i] for i in (0, -1)] + [data[:, i] for i in (0, -1)]
    faces += [data[:, :, i] for i in (0, -1)]
    values, counts = np.unique(np.concatenate([f.ravel() for f in faces]), return_counts=True)
    return float(values[np.argmax(counts)])


def threshold_mask(
    data: np.ndarray, threshold: float, background: float | Literal["border"]
) -> tuple[np.ndarray, dict[str, Any]]:
    """``data > background level + threshold`` (bool, ``data``'s grid) and its record.

    ``background`` is a level in ``data``'s units, or ``"border"`` for
    :func:`border_background`. The record (``preprocess.json``'s ``mask``) holds the level used and
    where it came from.
    """
    estimated = background == "border"
    level = border_background(data) if estimated else float(background)
    record = {
        "source": "threshold",
        "threshold": threshold,
        "background": level,
        "background_from": "border" if estimated else "config",
    }
    return data > level + threshold, record
