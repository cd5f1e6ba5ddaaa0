"""Optional N4 bias-field correction through SimpleITK (installed with torchio)."""

from __future__ import annotations

import numpy as np


def n4_correct(
    image: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    *,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30, 20),
) -> np.ndarray:
    """N4-corrected copy of ``image`` (x, y, z); the field is fitted at 1/``shrink`` resolution.

    Fitting on a shrunk image and dividing the full-resolution image by the upsampled field
    is the standard fast N4 recipe (ANTs' ``shrink_factor``).
    """
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # torchio depends on SimpleITK, so this is unusual
        raise ImportError("N4 bias correction needs SimpleITK: pip install SimpleITK") from exc
    # SimpleITK arrays are (z, y, x); transpose so that spacing lines up with our axes.
    img = sitk.GetImageFromArray(np.ascontiguousarray(image.T, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing))
    m = (image > 0) if mask is None else mask.astype(bool)
    msk = sitk.GetImageFromArray(np.ascontiguousarray(m.T.astype(np.uint8)))
    msk.CopyInformation(img)
    small = sitk.Shrink(img, [shrink] * 3)
    small_mask = sitk.Shrink(msk, [shrink] * 3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(iterations))
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(img)
    field = np.exp(sitk.GetArrayFromImage(log_field).T)
    return (image / field).astype(np.float32)
