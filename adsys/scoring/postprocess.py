"""Post-processing of anomaly maps, as the reference implementations do it.

All functions take and return NumPy arrays in the ``(x, y, z)`` voxel order of adsys (axial
slices along the last axis); they run on the CPU with SciPy.

* :func:`erode_mask` — brain-mask erosion: ``"slice2d"`` erodes every axial slice with the 2D
  cross (connectivity 1) for ``X // 25`` iterations (cDDPM/pDDPM ``utils_eval``: 3 at 96);
  ``"3d"`` erodes with the 3D 6-neighbour cross for ``X // 25`` iterations (CondDiff: 6 at
  160³). Voxels beyond the array border count as background (SciPy's ``border_value=0``).
* :func:`median_filter` — 3D median, cube of side 5 (cDDPM, CondDiff), SciPy ``reflect`` border.
* :func:`remove_small_components` — on a *binarised* map, drop connected components
  (26-connectivity in 3D, 8 in 2D) whose filled size is ``<= 7`` voxels (cDDPM: skimage
  ``label(connectivity=3)`` + ``regionprops(...).filled_area <= 7``).
* :func:`zero_background` — UPD/ICDM: ``map × (x > min x)`` per axial slice; DISYRE: map set
  to 0 where ``x == 0``.
* :func:`postprocess` composes them in the published order from a :class:`PostprocessConfig`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from adsys.config import StrictModel

__all__ = [
    "PostprocessConfig",
    "default_erosion_iterations",
    "erode_mask",
    "median_filter",
    "postprocess",
    "remove_small_components",
    "zero_background",
]

Erosion = Literal["none", "slice2d", "3d"]
Background = Literal["none", "above_min_slice", "nonzero"]


def default_erosion_iterations(shape: tuple[int, ...]) -> int:
    """``X // 25`` for a volume of shape ``(X, Y, Z)`` (cDDPM's H//25, CondDiff's W//25)."""
    return int(shape[0]) // 25


def erode_mask(
    mask: np.ndarray, mode: Erosion = "slice2d", iterations: int | None = None
) -> np.ndarray:
    """Erode a brain mask (x, y, z) per axial slice (``"slice2d"``) or in 3D (``"3d"``).

    ``iterations`` defaults to :func:`default_erosion_iterations`; 0 (or ``mode="none"``)
    returns the mask unchanged. Returns a bool array.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"erode_mask expects a 3D (x, y, z) mask, got shape {mask.shape}")
    n = default_erosion_iterations(mask.shape) if iterations is None else int(iterations)
    if mode == "none" or n <= 0:
        return mask.copy()
    if mode == "slice2d":  # the 2D cross in the (x, y) plane, nothing along z
        structure = ndimage.generate_binary_structure(2, 1)[:, :, None]
    elif mode == "3d":
        structure = ndimage.generate_binary_structure(3, 1)
    else:
        raise ValueError(f"unknown erosion mode {mode!r}; use 'slice2d', '3d' or 'none'")
    return ndimage.binary_erosion(mask, structure=structure, iterations=n)


def median_filter(data: np.ndarray, size: int = 5) -> np.ndarray:
    """Median over a cube of side ``size`` (SciPy, ``reflect`` border); float32 out."""
    return ndimage.median_filter(np.asarray(data, dtype=np.float32), size=size, mode="reflect")


def remove_small_components(binary: np.ndarray, max_size: int = 7) -> np.ndarray:
    """Drop connected components whose *filled* size (holes included) is ``<= max_size``.

    Full connectivity (26 in 3D, 8 in 2D), as skimage ``label(connectivity=ndim)``. A hole
    can only exist inside a component of at least ``3^ndim − 1`` voxels, so filled sizes
    are computed only for the few components where they can differ. Returns a bool array.
    """
    binary = np.asarray(binary) > 0
    structure = np.ones((3,) * binary.ndim, dtype=bool)
    labels, count = ndimage.label(binary, structure=structure)
    if count == 0:
        return binary
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    small = sizes <= max_size
    small[0] = False
    may_hold_hole = np.flatnonzero(small & (sizes >= 3**binary.ndim - 1))
    if may_hold_hole.size:
        boxes = ndimage.find_objects(labels)
        for lab in may_hold_hole:
            part = labels[boxes[lab - 1]] == lab
            if ndimage.binary_fill_holes(part, structure=structure).sum() > max_size:
                small[lab] = False
    return binary & ~small[labels]


def zero_background(
    data: np.ndarray, image: np.ndarray, rule: Background = "above_min_slice"
) -> np.ndarray:
    """Zero the map outside the imaged object.

    ``"above_min_slice"`` (UPD/ICDM ``zero_bg_pred``): keep voxels with ``x > min(x)`` of
    their axial slice; ``"nonzero"`` (DISYRE): keep voxels with ``x != 0``.
    """
    data = np.asarray(data, dtype=np.float32)
    image = np.asarray(image)
    if rule == "none":
        return data.copy()
    if rule == "above_min_slice":
        keep = image > image.min(axis=(0, 1), keepdims=True)
    elif rule == "nonzero":
        keep = image != 0
    else:
        raise ValueError(f"unknown background rule {rule!r}")
    return data * keep


class PostprocessConfig(StrictModel):
    """Steps applied to a raw anomaly map, in this order:

    1. ``normalize_max``: divide by the map's maximum and clip to [0, 1] (CondDiff);
    2. ``background``: :func:`zero_background` rule;
    3. ``erosion``: multiply by the brain mask eroded with :func:`erode_mask`
       (``erosion_iterations``; default ``X // 25``);
    4. ``median_size``: :func:`median_filter` (``None`` = off);
    5. ``clip``: clip to [0, 1] (CondDiff).
    """

    normalize_max: bool = False
    background: Background = "none"
    erosion: Erosion = "none"
    erosion_iterations: int | None = None
    median_size: int | None = None
    clip: bool = False


def postprocess(
    data: np.ndarray, image: np.ndarray, mask: np.ndarray, config: PostprocessConfig
) -> np.ndarray:
    """Apply ``config`` to a raw map ``data`` (x, y, z) of ``image`` with brain ``mask``."""
    out = np.asarray(data, dtype=np.float32)
    if config.normalize_max:
        peak = float(out.max())
        out = np.clip(out / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(out)
    if config.background != "none":
        out = zero_background(out, image, config.background)
    if config.erosion != "none":
        out = out * erode_mask(mask, config.erosion, config.erosion_iterations)
    if config.median_size:
        out = median_filter(out, config.median_size)
    if config.clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32, copy=False)
