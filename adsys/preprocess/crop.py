"""Crop or pad volumes to a fixed shape centred on the brain's bounding box."""

from __future__ import annotations

import numpy as np


def brain_bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive lower and exclusive upper voxel corner of the mask's nonzero voxels."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise ValueError("the brain mask is empty")
    return idx.min(axis=0), idx.max(axis=0) + 1


def centred_window(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Start voxel (3,) of a ``shape`` window centred on the brain bounding box.

    The start may be negative or the window may exceed the array: those parts are padding.
    Raises ``ValueError`` when the brain is larger than ``shape`` along an axis.
    """
    lo, hi = brain_bbox(mask)
    extent = hi - lo
    target = np.asarray(shape)
    if np.any(extent > target):
        raise ValueError(
            f"the brain's bounding box {tuple(int(e) for e in extent)} voxels does not fit into "
            f"the target shape {tuple(shape)}"
        )
    return lo - (target - extent) // 2


def extract_window(data: np.ndarray, start: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The ``shape`` window of ``data`` beginning at ``start``; outside voxels are 0."""
    out = np.zeros(shape, dtype=data.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.asarray(shape), data.shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    if np.all(src_hi > src_lo):
        out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))] = data[
            tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
        ]
    return out
