"""How a volume's anomaly map is formed: the map kind and the sliding windows.

Both are parts of a method's inference recipe (:class:`adsys.methods.base.InferenceRecipe`),
saved with every exported model and overridable per inference run.
"""

from __future__ import annotations

from typing import Literal

from adsys.config import StrictModel

__all__ = ["MapConfig", "MapKind", "WindowConfig"]

MapKind = Literal["l1", "ssim", "shift", "method"]


class WindowConfig(StrictModel):
    """Sliding windows over the model's input (:func:`adsys.scoring.sliding_window_ensemble`).

    ``roi`` ``None`` = the whole axial slice (2D models) or volume (3D models): one window.
    ``sw_batch_size`` ``None`` = every window of a volume in one call, so a noise map drawn
    once per call is shared by all slices of the volume. ``overlap_mode`` ``step`` reads
    ``overlap`` as the step in units of the window (``0.25`` = a quarter-window step),
    ``spread`` as the largest step, windows spread evenly (:mod:`adsys.scoring.window`);
    ``foreground_weight`` weights each window's residual by its foreground fraction.
    """

    roi: tuple[int, ...] | None = None
    overlap: float = 0.25
    overlap_mode: Literal["monai", "step", "spread"] = "monai"
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int | None = None
    foreground_weight: bool = False


class MapConfig(StrictModel):
    """How the raw anomaly map is formed from input and reconstruction(s).

    ``kind``: ``l1`` (|x − x̂|), ``ssim`` (1 − SSIM; ``ssim_data_range=255`` and
    ``ssim_padding="zeros"`` reproduce UPD), ``shift`` (shift-tolerant residual, ``shift_k``
    voxels, ``edge`` or ``circular`` padding), or ``method`` (the method's own
    ``anomaly_map``, for maps that are not a function of one reconstruction). ``ensemble``
    across several models: ``residual_mean`` (mean of the models' maps) or
    ``reconstruction_mean`` (the map of the mean reconstruction). ``score_max``: the top of
    the pooled histograms' range (see :attr:`score_range`).
    """

    kind: MapKind = "l1"
    ensemble: Literal["residual_mean", "reconstruction_mean"] = "residual_mean"
    ssim_data_range: float = 1.0
    ssim_padding: Literal["reflect", "zeros"] = "reflect"
    shift_k: int = 2
    shift_padding: Literal["edge", "circular"] = "edge"
    score_max: float | None = None

    @property
    def score_range(self) -> tuple[float, float]:
        """The range of raw scores (fixes the pooled histograms): ``(0, score_max)`` when set
        (a method's own map that is not bounded by 1, e.g. a z-score), else 1 − SSIM's
        [0, 2] or the residuals' [0, 1]. Pooled scores above it are counted as clipped."""
        if self.score_max is not None:
            return (0.0, self.score_max)
        return (0.0, 2.0) if self.kind == "ssim" else (0.0, 1.0)
