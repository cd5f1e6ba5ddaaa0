"""Sliding-window ensembles: tile, predict every member, blend residuals with importance.

:func:`sliding_window_ensemble` tiles a batch of 2D images or 3D volumes ``(B, C, *spatial)``
into windows of ``roi`` voxels, runs ``predictor(windows, member)`` on batches of windows for
every ensemble member (t values, fold models, ...), and blends::

    map(v) = Σ_windows w_n · I(v − o_n) · reduce_m(x, x̂_m)(v − o_n)  /  Σ_windows I(v − o_n)

with ``I`` the importance window, ``o_n`` the window origin, ``w_n`` an optional per-window
weight (the window's foreground fraction, DISYRE) and ``reduce`` one of
:data:`~adsys.kernels.window.REDUCE_MODES` (mean of member residuals, residual of the mean
reconstruction, or the mean prediction itself). The weighted mean reconstruction can be
returned too.

Geometry follows MONAI's ``sliding_window_inference`` exactly (tested against it):

* ``overlap_mode="monai"`` (default): step ``= int(roi · (1 − overlap))`` (at least 1; the
  full size when ``roi`` equals it); the last window of each axis is shifted back to end at
  the border; an image smaller than ``roi`` is padded with ``cval`` (half before, the rest
  after) and the output cropped back.
* ``overlap_mode="step"`` (DISYRE v2): ``overlap`` *is* the step as a fraction of ``roi``
  (their ``overlap=0.25`` means a 32-voxel step for 128-voxel windows, i.e. 75 % overlap);
  the image is zero-padded at the far end until the windows tile it exactly, then cropped.
* ``overlap_mode="spread"`` (pDDPM's ``overlap``): ``overlap`` is the largest step as a
  fraction of ``roi``; ``n = ⌈(size − roi) / step⌉ + 1`` windows per axis are spread evenly
  over ``[0, size − roi]`` (starts ``⌊i · (size − roi) / (n − 1)⌋``), so with ``overlap=1``
  and ``roi`` dividing the size they tile it, and otherwise overlap as little as evenly
  possible; an image smaller than ``roi`` is padded as in ``monai``.
* ``mode="gaussian"``: ``I = Π_d exp(−u_d² / (2 σ_d²))``, ``u_d`` centred, ``σ_d =
  sigma_scale · roi_d`` (0.125), clamped below at 10⁻³; ``mode="constant"``: ``I = 1``.

With ``context=True`` the predictor also gets each window's :class:`WindowSites` — the
(padded) images it was cut from and its origin — for methods that restore a window from the
whole image around it (pDDPM noises one box of the full slice and keeps the box's
prediction: boxes are the windows, stitching is the blend).

The importance window, the summed-importance normaliser and the scatter index depend only
on the geometry and are cached (:func:`window_plan`). Accumulation runs the fused Triton
kernel on CUDA tensors and its torch twin elsewhere (:mod:`adsys.kernels.window`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from adsys.kernels.window import (
    Reduce,
    WindowGrid,
    accumulate_windows,
    gather_windows,
    window_boxes,
)

__all__ = [
    "WindowPlan",
    "WindowResult",
    "WindowSites",
    "box_mask",
    "crop_boxes",
    "importance_map",
    "slices_to_volume",
    "sliding_window_ensemble",
    "volume_to_slices",
    "window_plan",
]

OverlapMode = Literal["monai", "step", "spread"]
BlendMode = Literal["gaussian", "constant"]
Predictor = Callable[..., torch.Tensor]  # (windows, member[, sites]) -> reconstruction


def importance_map(
    roi: Sequence[int], mode: BlendMode = "gaussian", sigma_scale: float = 0.125,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The (*roi) float32 blending window (MONAI ``compute_importance_map`` semantics)."""
    device = torch.device(device)
    if mode == "constant":
        return torch.ones(tuple(roi), dtype=torch.float32, device=device)
    if mode != "gaussian":
        raise ValueError(f"unknown blend mode {mode!r}; use 'gaussian' or 'constant'")
    out = None
    for i, size in enumerate(roi):
        sigma = size * sigma_scale
        u = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32,
                         device=device)
        g = torch.exp(u**2 / (-2 * sigma**2))
        out = g if out is None else out.unsqueeze(-1) * g[(None,) * i]
    floor = max(float(out.min()), 1e-3)
    return out.clamp_(min=floor)


def _axis_starts(size: int, roi: int, step: int) -> tuple[int, ...]:
    """Window starts along one axis: every ``step``, the last shifted back to fit."""
    count = next(
        (d for d in range(math.ceil(size / step)) if d * step + roi >= size), 0
    ) + 1
    return tuple(i * step - max(i * step + roi - size, 0) for i in range(count))


def _spread_starts(size: int, roi: int, step: int) -> tuple[int, ...]:
    """Window starts along one axis: ``⌈(size − roi) / step⌉ + 1`` spread over [0, size − roi]."""
    n = math.ceil((size - roi) / step) + 1
    return tuple(i * (size - roi) // (n - 1) for i in range(n)) if n > 1 else (0,)


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """The cached geometry of one (image size, roi, overlap, blending) combination.

    ``grid``: the windows of one padded image (:class:`~adsys.kernels.window.WindowGrid`:
    starts per axis, roi, importance); ``pad``: ``(before, after)`` per spatial axis;
    ``step``: the window step per axis; ``inv_norm``: (*padded) float32, 1 / Σ importance of
    the windows covering each voxel.
    """

    image_size: tuple[int, ...]
    step: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    grid: WindowGrid
    inv_norm: torch.Tensor

    @property
    def roi(self) -> tuple[int, ...]:
        return self.grid.roi

    @property
    def padded(self) -> tuple[int, ...]:
        return self.grid.padded

    @property
    def num_windows(self) -> int:
        return self.grid.num_windows

    @property
    def importance(self) -> torch.Tensor:
        return self.grid.importance


@functools.lru_cache(maxsize=16)
def _cached_plan(
    image_size: tuple[int, ...],
    roi: tuple[int, ...],
    overlap: tuple[float, ...],
    overlap_mode: OverlapMode,
    mode: BlendMode,
    sigma_scale: float,
    device: str,
) -> WindowPlan:
    if overlap_mode in ("monai", "spread"):
        if overlap_mode == "monai" and any(not 0 <= o < 1 for o in overlap):
            raise ValueError(f"overlap must be in [0, 1) with overlap_mode='monai', got {overlap}")
        if overlap_mode == "spread" and any(not 0 < o <= 1 for o in overlap):
            raise ValueError(f"the step fraction must be in (0, 1], got {overlap}")
        padded = tuple(max(s, r) for s, r in zip(image_size, roi, strict=True))
        pad = tuple(
            ((p - s) // 2, p - s - (p - s) // 2) for s, p in zip(image_size, padded, strict=True)
        )
        fraction = overlap if overlap_mode == "spread" else tuple(1 - o for o in overlap)
        step = tuple(
            r if r == p else max(int(r * f), 1)
            for r, p, f in zip(roi, padded, fraction, strict=True)
        )
    elif overlap_mode == "step":
        if any(not 0 < o <= 1 for o in overlap):
            raise ValueError(f"the step fraction must be in (0, 1], got {overlap}")
        step = tuple(max(int(r * o), 1) for r, o in zip(roi, overlap, strict=True))
        padded = tuple(
            r + math.ceil(max(s - r, 0) / st) * st
            for s, r, st in zip(image_size, roi, step, strict=True)
        )
        pad = tuple((0, p - s) for s, p in zip(image_size, padded, strict=True))
    else:
        raise ValueError(
            f"unknown overlap_mode {overlap_mode!r}; use 'monai', 'step' or 'spread'"
        )
    axis = _spread_starts if overlap_mode == "spread" else _axis_starts
    starts = tuple(axis(p, r, st) for p, r, st in zip(padded, roi, step, strict=True))
    grid = WindowGrid(starts, roi, padded, importance_map(roi, mode, sigma_scale, device))
    norm = torch.zeros((1, 1, *padded), dtype=torch.float32, device=grid.importance.device)
    ones = torch.ones((grid.num_windows, 1, *roi), device=norm.device)
    accumulate_windows(ones, [ones], None, grid, norm, reduce="prediction")
    return WindowPlan(image_size, step, pad, grid, norm[0, 0].reciprocal_())


def window_plan(
    image_size: Sequence[int],
    roi: Sequence[int | None] | int,
    overlap: Sequence[float] | float = 0.25,
    *,
    overlap_mode: OverlapMode = "monai",
    mode: BlendMode = "gaussian",
    sigma_scale: float = 0.125,
    device: torch.device | str = "cpu",
) -> WindowPlan:
    """The (cached) :class:`WindowPlan` for these arguments.

    ``roi`` entries ``<= 0`` (or ``None``) take the image size on that axis (MONAI's
    ``fall_back_tuple``); a scalar applies to every axis.
    """
    image_size = tuple(int(s) for s in image_size)
    dims = len(image_size)
    roi_t = (roi,) * dims if isinstance(roi, int) else tuple(roi)
    if len(roi_t) != dims:
        raise ValueError(f"roi {roi} does not match the {dims} spatial dims of {image_size}")
    roi_t = tuple(
        s if r is None or r <= 0 else int(r) for r, s in zip(roi_t, image_size, strict=True)
    )
    if isinstance(overlap, int | float):
        ov = (float(overlap),) * dims
    else:
        ov = tuple(float(o) for o in overlap)
    return _cached_plan(
        image_size, roi_t, ov, overlap_mode, mode, float(sigma_scale), str(torch.device(device))
    )


def box_mask(
    origins: torch.Tensor, roi: Sequence[int], spatial: Sequence[int]
) -> torch.Tensor:
    """(n, 1, *spatial) bool: True inside the box ``[origin, origin + roi)`` of each row of
    ``origins`` (n, d) — pDDPM's M_p, one box per image."""
    inside = None
    for d, (size, r) in enumerate(zip(spatial, roi, strict=True)):
        pos = torch.arange(size, device=origins.device)
        lo = origins[:, d, None]
        axis = ((pos >= lo) & (pos < lo + r)).view(-1, *(size if e == d else 1
                                                          for e in range(len(spatial))))
        inside = axis if inside is None else inside & axis
    return inside.unsqueeze(1)


def crop_boxes(images: torch.Tensor, origins: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
    """(n, C, *roi): from each image of ``images`` (n, C, *spatial) its box at the matching
    row of ``origins`` (n, d) — one indexed gather for all boxes."""
    n, c = images.shape[:2]
    dims = len(roi)
    index: list[torch.Tensor] = [torch.arange(n, device=images.device).view(n, *(1,) * dims)]
    for d, r in enumerate(roi):
        pos = origins[:, d].view(n, 1) + torch.arange(r, device=images.device)
        index.append(pos.view(n, *(r if e == d else 1 for e in range(dims))))
    # advanced indices around the channel slice put the channel axis last
    return images.movedim(1, -1)[tuple(index)].movedim(-1, 1)


@dataclass(frozen=True)
class WindowSites:
    """Where the windows of one predictor call come from (``context=True``).

    ``images``: (B, C, *padded) every padded input image; ``image_index``: (n,) int64, each
    window's image in ``images``; ``origins``: (n, d) int64 window starts (voxels of the
    padded image); ``roi``: the window size.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    origins: torch.Tensor
    roi: tuple[int, ...]

    def context(self) -> torch.Tensor:
        """(n, C, *padded): each window's whole image."""
        return self.images[self.image_index]

    def masks(self) -> torch.Tensor:
        """(n, 1, *padded) bool: each window's box in its image (:func:`box_mask`)."""
        return box_mask(self.origins, self.roi, self.images.shape[2:])

    def crop(self, full: torch.Tensor) -> torch.Tensor:
        """(n, C, *roi): each window's box cut from ``full`` (n, C, *padded), e.g. the
        prediction for its whole image (:func:`crop_boxes`)."""
        return crop_boxes(full, self.origins, self.roi)


@dataclass
class WindowResult:
    """``map``: (B, C, *spatial) blended anomaly map (or prediction); ``reconstruction``:
    the blended mean reconstruction when requested, else ``None``."""

    map: torch.Tensor
    reconstruction: torch.Tensor | None


def sliding_window_ensemble(
    inputs: torch.Tensor,
    predictor: Predictor,
    roi: Sequence[int | None] | int,
    *,
    members: Sequence[Any] = (None,),
    overlap: Sequence[float] | float = 0.25,
    overlap_mode: OverlapMode = "monai",
    mode: BlendMode = "gaussian",
    sigma_scale: float = 0.125,
    sw_batch_size: int | None = None,
    reduce: Reduce = "residual_mean",
    foreground_weight: bool = False,
    return_reconstruction: bool = False,
    cval: float = 0.0,
    context: bool = False,
) -> WindowResult:
    """Sliding-window ensemble over ``inputs`` (B, C, *spatial); 2 or 3 spatial dims.

    Args:
        inputs: images (float); the outputs keep their shape and dtype.
        predictor: ``predictor(windows, member) -> reconstruction``, windows (n, C, *roi) on
            the inputs' device, ``n <= sw_batch_size``; called for every batch and member.
        roi: window size per spatial axis (see :func:`window_plan` for ``<= 0`` entries).
        members: the ensemble (t values, models, ...), passed to ``predictor`` as is.
        overlap, overlap_mode, mode, sigma_scale: geometry and blending (module doc).
        sw_batch_size: windows per predictor call; ``None`` = all windows of all inputs at
            once (cDDPM draws one noise map per call, shared by every slice of a volume).
        reduce: ``"residual_mean"`` (default), ``"reconstruction_mean"`` or ``"prediction"``.
        foreground_weight: multiply each window's value by its fraction of input voxels
            ``> 0`` (DISYRE); the normaliser stays the summed importance.
        return_reconstruction: also blend the mean reconstruction (importance weights only).
        cval: padding value of the inputs.
        context: call ``predictor(windows, member, sites)`` with the windows'
            :class:`WindowSites` (their whole padded images and origins).

    Windows are cut, reconstructed and blended one predictor call at a time, so memory
    stays bounded by ``(M + 2) ×`` the windows of one call and, on CPU, the working set of a
    call stays in cache.
    """
    if inputs.ndim not in (4, 5):
        raise ValueError(f"inputs must be (B, C, H, W) or (B, C, X, Y, Z), got {inputs.shape}")
    if not members:
        raise ValueError("members must list at least one ensemble member")
    batch, channels, *spatial = inputs.shape
    plan = window_plan(
        spatial, roi, overlap, overlap_mode=overlap_mode, mode=mode, sigma_scale=sigma_scale,
        device=inputs.device,
    )
    x = inputs.float()
    if any(sum(p) for p in plan.pad):
        x = F.pad(x, [v for before_after in reversed(plan.pad) for v in before_after],
                  mode="constant", value=cval)
    x = x.contiguous()
    out_map = torch.zeros_like(x)
    out_rec = torch.zeros_like(x) if return_reconstruction else None
    total = batch * plan.num_windows
    per_call = int(sw_batch_size) if sw_batch_size else total
    for c0 in range(0, total, per_call):
        pieces = _call_pieces(plan.grid, c0, min(c0 + per_call, total))
        sizes = [(b1 - b0) * grid.num_windows for b0, b1, grid in pieces]
        windows = x.new_empty((sum(sizes), channels, *plan.roi))
        for (b0, b1, grid), part in zip(pieces, windows.split(sizes), strict=True):
            gather_windows(x[b0:b1], grid, out=part)
        if context:
            sites = _sites(x, pieces, plan.roi)
            recons = [predictor(windows, member, sites) for member in members]
        else:
            recons = [predictor(windows, member) for member in members]
        weight = (windows > 0).flatten(1).float().mean(1) if foreground_weight else None
        i = 0
        for (b0, b1, grid), n in zip(pieces, sizes, strict=True):
            accumulate_windows(
                windows[i : i + n], [r[i : i + n] for r in recons],
                None if weight is None else weight[i : i + n], grid, out_map[b0:b1],
                None if out_rec is None else out_rec[b0:b1], reduce=reduce,
            )
            i += n
    crop = (slice(None), slice(None),
            *(slice(b, b + s) for (b, _), s in zip(plan.pad, spatial, strict=True)))
    result = out_map.mul_(plan.inv_norm)[crop].to(inputs.dtype)
    rec = None if out_rec is None else out_rec.mul_(plan.inv_norm)[crop].to(inputs.dtype)
    return WindowResult(map=result, reconstruction=rec)


def _call_pieces(grid: WindowGrid, start: int, stop: int) -> list[tuple[int, int, WindowGrid]]:
    """The windows ``[start, stop)`` of a batch (image-major) as ``(first image, end image,
    grid)`` pieces: runs of whole images share the full grid, partial images get sub-grids."""
    w = grid.num_windows
    pieces: list[tuple[int, int, WindowGrid]] = []
    for b in range(start // w, (stop - 1) // w + 1):
        for box in window_boxes(grid.counts, max(start - b * w, 0), min(stop - b * w, w)):
            sub = grid.subgrid(box)
            if pieces and sub is grid and pieces[-1][2] is grid and pieces[-1][1] == b:
                pieces[-1] = (pieces[-1][0], b + 1, grid)
            else:
                pieces.append((b, b + 1, sub))
    return pieces


def _sites(
    x: torch.Tensor, pieces: list[tuple[int, int, WindowGrid]], roi: tuple[int, ...]
) -> WindowSites:
    """The :class:`WindowSites` of one call's pieces, in the order they were gathered."""
    index, origins = [], []
    for b0, b1, grid in pieces:
        starts = torch.tensor(list(itertools.product(*grid.starts)), dtype=torch.int64)
        index.append(torch.arange(b0, b1).repeat_interleave(len(starts)))
        origins.append(starts.repeat(b1 - b0, 1))
    return WindowSites(x, torch.cat(index).to(x.device), torch.cat(origins).to(x.device), roi)


def volume_to_slices(volume: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) → (Z, 1, X, Y): a volume as a batch of axial slices for 2D methods."""
    return volume.permute(2, 0, 1).unsqueeze(1)


def slices_to_volume(slices: torch.Tensor) -> torch.Tensor:
    """(Z, 1, X, Y) → (X, Y, Z), the inverse of :func:`volume_to_slices` (contiguous)."""
    return slices[:, 0].permute(1, 2, 0).contiguous()
