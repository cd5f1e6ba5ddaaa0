"""Anomaly maps, post-processing, sliding-window ensembles.

* :mod:`~adsys.scoring.maps` — L1 residual, SSIM map, shift-tolerant residual (torch);
* :mod:`~adsys.scoring.postprocess` — erosion, median, component removal, background (SciPy);
* :mod:`~adsys.scoring.window` — sliding-window ensembles with cached importance maps.
"""

from adsys.scoring.maps import (
    l1_residual,
    shift_tolerant_residual,
    ssim_anomaly_map,
    ssim_map,
)
from adsys.scoring.postprocess import (
    PostprocessConfig,
    erode_mask,
    median_filter,
    postprocess,
    remove_small_components,
    zero_background,
)
from adsys.scoring.window import (
    WindowPlan,
    WindowResult,
    WindowSites,
    box_mask,
    crop_boxes,
    importance_map,
    slices_to_volume,
    sliding_window_ensemble,
    volume_to_slices,
    window_plan,
)

__all__ = [
    "PostprocessConfig",
    "WindowPlan",
    "WindowResult",
    "WindowSites",
    "box_mask",
    "crop_boxes",
    "erode_mask",
    "importance_map",
    "l1_residual",
    "median_filter",
    "postprocess",
    "remove_small_components",
    "shift_tolerant_residual",
    "slices_to_volume",
    "sliding_window_ensemble",
    "ssim_anomaly_map",
    "ssim_map",
    "volume_to_slices",
    "window_plan",
    "zero_background",
]
