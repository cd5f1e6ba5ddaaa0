"""Small synthetic volumes with known geometry, shared by tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def ellipsoid_brain(shape: tuple[int, int, int], fill: float = 0.7) -> np.ndarray:
    """A boolean ellipsoid filling ``fill`` of each half-axis, centred in ``shape``."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return sum((g / fill) ** 2 for g in grid) <= 1.0


def brain_volume(shape=(20, 24, 18), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): positive random intensities inside an ellipsoid, 0 outside."""
    rng = np.random.default_rng(seed)
    mask = ellipsoid_brain(shape)
    image = (rng.uniform(50, 150, shape) * mask).astype(np.float32)
    return image, mask


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write with nibabel directly (so tests can write what adsys itself refuses to)."""
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(path))
    return path


def lps_affine(shape, spacing=(1.0, 1.0, 1.0), origin=(10.0, 20.0, -30.0)) -> np.ndarray:
    """An LPS-stored affine: voxel axes 0 and 1 run towards -x and -y in RAS world."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a
