"""Blend the sliding windows of an ensemble into output volumes.

A :class:`WindowGrid` is the window layout of one (padded) image: the window starts along
each axis (their product is the set of windows, in row-major order) and the importance
window ``I`` (*roi). For the windows ``x_n`` of ``b`` images (``b · W`` windows, image-major)
and ``M`` ensemble reconstructions ``r_{m,n}``, :data:`accumulate_windows` adds::

    out_map[image, c, origin_n + p] += reduce(x_n, r_1,n … r_M,n)[c, p] · I[p] · weight[n]
    out_rec[image, c, origin_n + p] += (1/M) Σ_m r_m,n[c, p] · I[p]          (optional)

where ``reduce`` is

* ``"residual_mean"``       — ``(1/M) Σ_m |x − r_m|`` (DISYRE: the mean of the members'
  residuals; ICDM: the mean over fold models),
* ``"reconstruction_mean"`` — ``|x − (1/M) Σ_m r_m|`` (cDDPM: the residual of the mean
  reconstruction),
* ``"prediction"``          — ``(1/M) Σ_m r_m`` (plain sliding-window inference).

``weight`` is an optional per-window factor (DISYRE's foreground fraction). Dividing by the
summed importance happens once per volume, outside (:mod:`adsys.scoring.window`).

Two implementations, one signature (see :mod:`adsys.kernels.dispatch`):

* :func:`accumulate_windows_triton` — one kernel: each program reads a block of one window
  and its ``M`` reconstructions once, forms the residual, the ensemble mean and the weighting
  in registers and scatters with ``tl.atomic_add`` (windows overlap).
* :func:`accumulate_windows_torch` — the CPU twin: in-place vectorised passes over
  cache-sized chunks (the members are read from memory once), then the scatter as a handful
  of strided ``add_`` calls: windows whose starts are ``k`` steps apart, with
  ``k · step >= roi``, never overlap, so each residue class of an evenly spaced run of
  windows is one non-overlapping strided view of the output (``(⌈roi/step⌉ + 1)^d`` calls
  for all windows of all images, no per-window Python and no index tensors).

:func:`gather_windows` cuts the windows out of the images the same way (one strided copy per
evenly spaced run: at most ``2^d`` copies).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from adsys.kernels.dispatch import KernelPair, triton_available, triton_interpreted

__all__ = [
    "REDUCE_MODES",
    "Reduce",
    "WindowGrid",
    "accumulate_windows",
    "accumulate_windows_torch",
    "accumulate_windows_triton",
    "gather_windows",
    "window_boxes",
]

Reduce = Literal["residual_mean", "reconstruction_mean", "prediction"]
REDUCE_MODES: tuple[Reduce, ...] = ("residual_mean", "reconstruction_mean", "prediction")
_GPU_BLOCK = 1024
_INTERPRETER_MAX_BLOCK = 1 << 15  # the interpreter costs per program, not per element
# elements per thread in a chunk of the CPU twin's reduction: a thread's share of a chunk
# and of its scratch (2 × 256 KiB) stay in its core's L2 cache
_CHUNK = 1 << 16

# An evenly spaced run of windows along one axis:
# (first window index, count, window-index step, first start, start spacing in voxels).
Run = tuple[int, int, int, int, int]


def _runs(starts: Sequence[int]) -> list[Run]:
    """Split one axis' window starts into maximal evenly spaced runs."""
    runs: list[Run] = []
    i = 0
    while i < len(starts):
        j = i + 1
        step = starts[j] - starts[i] if j < len(starts) else 1
        while j < len(starts) and starts[j] - starts[j - 1] == step:
            j += 1
        runs.append((i, j - i, 1, starts[i], step if j - i > 1 else 1))
        i = j
    return runs


def _disjoint_runs(starts: Sequence[int], roi: int) -> list[Run]:
    """Runs of one axis whose windows do not overlap: every k-th window of an even run,
    with ``k · spacing >= roi``."""
    out: list[Run] = []
    for first, count, _, start, step in _runs(starts):
        k = min(max(1, math.ceil(roi / step)), count)
        for c in range(k):
            out.append((first + c, len(range(c, count, k)), k, start + c * step, step * k))
    return out


@dataclass(frozen=True, eq=False)
class WindowGrid:
    """Window layout of one image of spatial size ``padded``.

    ``starts``: per spatial axis, the window starts (the windows are their product, in
    row-major order); ``roi``: window size; ``importance``: (*roi) float32 blending window
    on the device the grid is used on.
    """

    starts: tuple[tuple[int, ...], ...]
    roi: tuple[int, ...]
    padded: tuple[int, ...]
    importance: torch.Tensor

    @property
    def num_windows(self) -> int:
        return math.prod(len(s) for s in self.starts)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.starts)

    @functools.cached_property
    def strides(self) -> tuple[int, ...]:
        """Element strides of the spatial axes of a contiguous image."""
        return tuple(math.prod(self.padded[d + 1 :]) for d in range(len(self.padded)))

    @functools.cached_property
    def origins(self) -> torch.Tensor:
        """(W,) int64 flat offset of each window's first element in one channel."""
        grids = torch.meshgrid(
            *[torch.tensor(s, dtype=torch.int64) for s in self.starts], indexing="ij"
        )
        flat = sum(g * st for g, st in zip(grids, self.strides, strict=True)).reshape(-1)
        return flat.to(self.importance.device)

    @functools.cached_property
    def offsets(self) -> torch.Tensor:
        """(P,) int64 flat offset of each window element from the window's origin."""
        grids = torch.meshgrid(*[torch.arange(r, dtype=torch.int64) for r in self.roi],
                               indexing="ij")
        flat = sum(g * st for g, st in zip(grids, self.strides, strict=True)).reshape(-1)
        return flat.to(self.importance.device)

    def views(self, images: torch.Tensor, runs: list[list[Run]]):
        """Pairs (strided view of ``images``, window-index slices) for each run combination.

        ``images``: (b, C, *padded) contiguous; each view is (b, n_1 … n_d, C, *roi) and the
        slices pick the same windows from a (b, W_1 … W_d, C, *roi) window tensor.
        """
        sb, sc = images.stride(0), images.stride(1)
        for combo in itertools.product(*runs):
            size = (images.shape[0], *(r[1] for r in combo), images.shape[1], *self.roi)
            stride = (sb, *(r[4] * s for r, s in zip(combo, self.strides, strict=True)), sc,
                      *self.strides)
            offset = images.storage_offset() + sum(
                r[3] * s for r, s in zip(combo, self.strides, strict=True)
            )
            index = tuple(slice(r[0], r[0] + (r[1] - 1) * r[2] + 1, r[2]) for r in combo)
            yield images.as_strided(size, stride, offset), index

    def subgrid(self, box: Sequence[tuple[int, int]]) -> WindowGrid:
        """The windows ``[a_d, b_d)`` along each axis (a box of the row-major window grid),
        as a grid of their own over the same padded image (cached per grid and box)."""
        return _subgrid(self, tuple(box))

    @functools.cached_property
    def gather_runs(self) -> list[list[Run]]:
        return [_runs(s) for s in self.starts]

    @functools.cached_property
    def scatter_runs(self) -> list[list[Run]]:
        return [_disjoint_runs(s, r) for s, r in zip(self.starts, self.roi, strict=True)]


@functools.lru_cache(maxsize=256)
def _subgrid(grid: WindowGrid, box: tuple[tuple[int, int], ...]) -> WindowGrid:
    if box == tuple((0, n) for n in grid.counts):
        return grid
    starts = tuple(s[a:b] for s, (a, b) in zip(grid.starts, box, strict=True))
    return WindowGrid(starts, grid.roi, grid.padded, grid.importance)


def window_boxes(
    counts: Sequence[int], start: int, stop: int
) -> list[tuple[tuple[int, int], ...]]:
    """Split the windows ``[start, stop)`` (row-major over a grid of ``counts`` windows per
    axis) into boxes ``((a_1, b_1), …, (a_d, b_d))`` of consecutive windows, in order (at
    most ``2d − 1`` boxes)."""
    if start >= stop:
        return []
    if len(counts) == 1:
        return [((start, stop),)]
    inner = math.prod(counts[1:])
    full = tuple((0, n) for n in counts[1:])
    (a0, r0), (a1, r1) = divmod(start, inner), divmod(stop, inner)
    if a0 == a1:
        return [((a0, a0 + 1), *b) for b in window_boxes(counts[1:], r0, r1)]
    boxes = []
    if r0:
        boxes += [((a0, a0 + 1), *b) for b in window_boxes(counts[1:], r0, inner)]
        a0 += 1
    if a1 > a0:
        boxes.append(((a0, a1), *full))
    if r1:
        boxes += [((a1, a1 + 1), *b) for b in window_boxes(counts[1:], 0, r1)]
    return boxes


def gather_windows(
    images: torch.Tensor, grid: WindowGrid, out: torch.Tensor | None = None
) -> torch.Tensor:
    """All windows of ``images`` (b, C, *padded) → (b·W, C, *roi), image-major, row-major;
    written into ``out`` (contiguous, that shape) when given."""
    images = images.contiguous()
    b, c = images.shape[:2]
    shape = (b, *grid.counts, c, *grid.roi)
    if out is None:
        out = torch.empty(shape, dtype=images.dtype, device=images.device)
    dest = out.view(shape)
    for view, index in grid.views(images, grid.gather_runs):
        dest[(slice(None), *index)] = view
    return out.view(b * grid.num_windows, c, *grid.roi)


def _check_args(windows, recons, weight, grid, out_map, out_rec, reduce):
    if reduce not in REDUCE_MODES:
        raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCE_MODES}")
    if not recons:
        raise ValueError("need at least one reconstruction (ensemble member)")
    b, c = out_map.shape[:2]
    want = (b * grid.num_windows, c, *grid.roi)
    if tuple(windows.shape) != want or any(tuple(r.shape) != want for r in recons):
        raise ValueError(
            f"windows {tuple(windows.shape)} and reconstructions "
            f"{[tuple(r.shape) for r in recons]} must be {want} for outputs "
            f"{tuple(out_map.shape)}"
        )
    if tuple(out_map.shape[2:]) != grid.padded:
        raise ValueError(f"outputs must be (b, C, *{grid.padded}), got {tuple(out_map.shape)}")
    if weight is not None and weight.shape != (want[0],):
        raise ValueError(f"weight must be ({want[0]},), got {tuple(weight.shape)}")
    for name, t in (("out_map", out_map), ("out_rec", out_rec)):
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 tensor")
    if out_rec is not None and out_rec.shape != out_map.shape:
        raise ValueError("out_rec must have out_map's shape")


def _scatter_add(
    out: torch.Tensor, values: torch.Tensor, grid: WindowGrid, importance: torch.Tensor
) -> None:
    """``out`` (b, C, *padded) += every window of ``values`` (b·W, C, *roi) × ``importance``
    (*roi) at its place (one fused multiply-add per disjoint run combination)."""
    vals = values.view(out.shape[0], *grid.counts, *values.shape[1:])
    for view, index in grid.views(out, grid.scatter_runs):
        view.addcmul_(vals[(slice(None), *index)], importance)


def _reduce_torch(
    windows: torch.Tensor, recons: Sequence[torch.Tensor], reduce: Reduce, with_mean: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(value before importance and weight, mean reconstruction or ``None``), float32, shaped
    like ``windows``; ``residual_mean``'s value is the *sum* of the residuals (the ``1/M``
    rides on the importance).

    Computed :data:`_CHUNK` elements per torch thread at a time: a chunk's temporaries stay
    in the cores' caches, so each member's subtract, abs and add run on cached data and the
    windows and reconstructions are read from memory once (whole-tensor passes re-read them
    per op).
    """
    m = len(recons)
    x = windows.reshape(-1)
    rs = [r.reshape(-1) for r in recons]
    value = torch.empty(x.numel(), dtype=torch.float32, device=x.device)
    mean = torch.empty_like(value) if with_mean else None
    chunk = _CHUNK * torch.get_num_threads()  # each thread's share of a chunk fits its cache
    scratch = torch.empty(min(x.numel(), chunk), dtype=torch.float32, device=x.device)
    for a in range(0, x.numel(), chunk):
        b = min(a + chunk, x.numel())
        xs, v = x[a:b], value[a:b]
        if mean is not None:
            mc = mean[a:b].copy_(rs[0][a:b])
            for r in rs[1:]:
                mc += r[a:b]
            if m > 1:
                mc.mul_(1.0 / m)
        if reduce == "residual_mean":
            torch.sub(xs, rs[0][a:b], out=v).abs_()
            s = scratch[: b - a]
            for r in rs[1:]:
                v += torch.sub(xs, r[a:b], out=s).abs_()
        elif reduce == "reconstruction_mean":
            torch.sub(xs, mc, out=v).abs_()
    if reduce == "prediction":
        value = mean
    shape = windows.shape
    return value.view(shape), None if mean is None else mean.view(shape)


def accumulate_windows_torch(
    windows: torch.Tensor,
    recons: Sequence[torch.Tensor],
    weight: torch.Tensor | None,
    grid: WindowGrid,
    out_map: torch.Tensor,
    out_rec: torch.Tensor | None = None,
    *,
    reduce: Reduce = "residual_mean",
) -> None:
    """Torch twin of :func:`accumulate_windows_triton` (same arguments, same result)."""
    _check_args(windows, recons, weight, grid, out_map, out_rec, reduce)
    m = len(recons)
    value, mean = _reduce_torch(
        windows, recons, reduce, with_mean=reduce != "residual_mean" or out_rec is not None
    )
    imp = grid.importance.to(value.dtype)
    if out_rec is not None:
        _scatter_add(out_rec, mean, grid, imp)
    if weight is not None:
        value.mul_(weight.view(-1, *([1] * (value.ndim - 1))).to(value.dtype))
    # residual_mean: the 1/M of the mean rides on the importance (one pass less)
    _scatter_add(out_map, value, grid, imp * (1.0 / m) if reduce == "residual_mean" else imp)


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _accumulate_kernel(
        win_ptr,
        rec_ptr,
        imp_ptr,
        weight_ptr,
        origin_ptr,
        offset_ptr,
        map_ptr,
        out_rec_ptr,
        n_members,
        member_stride,
        windows_per_image,
        image_numel,
        window_numel,
        roi_numel,
        channel_stride,
        inv_m,
        REDUCE: tl.constexpr,  # 0 residual_mean, 1 reconstruction_mean, 2 prediction
        HAS_WEIGHT: tl.constexpr,
        HAS_REC: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        n = tl.program_id(0)
        idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inb = idx < window_numel
        chan = idx // roi_numel
        p = idx - chan * roi_numel
        src = n.to(tl.int64) * window_numel + idx
        x = tl.load(win_ptr + src, mask=inb, other=0.0).to(tl.float32)
        res = tl.zeros([BLOCK], dtype=tl.float32)
        mean = tl.zeros([BLOCK], dtype=tl.float32)
        for m in range(n_members):
            r = tl.load(rec_ptr + m * member_stride + src, mask=inb, other=0.0).to(tl.float32)
            mean += r
            if REDUCE == 0:
                res += tl.abs(x - r)
        mean = mean * inv_m
        if REDUCE == 0:
            value = res * inv_m
        elif REDUCE == 1:
            value = tl.abs(x - mean)
        else:
            value = mean
        imp = tl.load(imp_ptr + p, mask=inb, other=0.0)
        value = value * imp
        if HAS_WEIGHT:
            value = value * tl.load(weight_ptr + n)
        image = n // windows_per_image
        dst = image.to(tl.int64) * image_numel + tl.load(origin_ptr + n % windows_per_image)
        dst += chan.to(tl.int64) * channel_stride + tl.load(offset_ptr + p, mask=inb, other=0)
        tl.atomic_add(map_ptr + dst, value, mask=inb)
        if HAS_REC:
            tl.atomic_add(out_rec_ptr + dst, mean * imp, mask=inb)


def accumulate_windows_triton(
    windows: torch.Tensor,
    recons: Sequence[torch.Tensor],
    weight: torch.Tensor | None,
    grid: WindowGrid,
    out_map: torch.Tensor,
    out_rec: torch.Tensor | None = None,
    *,
    reduce: Reduce = "residual_mean",
) -> None:
    """Fused residual + ensemble mean + weighting + atomic scatter of all windows of b images.

    Args:
        windows: (b·W, C, *roi) input windows, image-major (:func:`gather_windows`).
        recons: M tensors like ``windows``: each ensemble member's reconstruction.
        weight: (b·W,) per-window factor (foreground fraction), or ``None``.
        grid: the window layout (starts, roi, importance) of one image.
        out_map: (b, C, *padded) contiguous float32, accumulated into (``+=``).
        out_rec: like ``out_map``, for the blended mean reconstruction; or ``None``.
        reduce: ``"residual_mean"``, ``"reconstruction_mean"`` or ``"prediction"``.
    """
    _check_args(windows, recons, weight, grid, out_map, out_rec, reduce)
    n = windows.shape[0]
    if n == 0:
        return
    stacked = torch.stack([r.contiguous() for r in recons])
    win = windows.contiguous()
    window_numel = win[0].numel()
    if triton_interpreted():
        block = min(triton.next_power_of_2(window_numel), _INTERPRETER_MAX_BLOCK)
    else:
        block = _GPU_BLOCK
    imp = grid.importance.contiguous().to(torch.float32)
    _accumulate_kernel[(n, triton.cdiv(window_numel, block))](
        win,
        stacked,
        imp,
        weight.contiguous().to(torch.float32) if weight is not None else imp,
        grid.origins,
        grid.offsets,
        out_map,
        out_rec if out_rec is not None else out_map,
        len(recons),
        stacked[0].numel(),
        grid.num_windows,
        out_map[0].numel(),
        window_numel,
        imp.numel(),
        math.prod(grid.padded),
        1.0 / len(recons),
        REDUCE=REDUCE_MODES.index(reduce),
        HAS_WEIGHT=weight is not None,
        HAS_REC=out_rec is not None,
        BLOCK=block,
    )


accumulate_windows = KernelPair(
    "accumulate_windows", triton_fn=accumulate_windows_triton, torch_fn=accumulate_windows_torch
)
