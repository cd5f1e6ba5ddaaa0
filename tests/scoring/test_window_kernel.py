"""The fused window-accumulation Triton kernel (interpreter, TRITON_INTERPRET=1) vs its twin."""

import pytest
import torch

from adsys.kernels.window import (
    REDUCE_MODES,
    WindowGrid,
    accumulate_windows,
    accumulate_windows_torch,
    accumulate_windows_triton,
    gather_windows,
    window_boxes,
)
from adsys.scoring import importance_map, sliding_window_ensemble


def _case(padded, roi, starts, images, channels, members, seed):
    g = torch.Generator().manual_seed(seed)
    grid = WindowGrid(starts, roi, padded, importance_map(roi, "gaussian"))
    x = torch.rand((images, channels, *padded), generator=g)
    windows = gather_windows(x, grid)
    recons = [torch.rand(windows.shape, generator=g) for _ in range(members)]
    weight = torch.rand(windows.shape[0], generator=g)
    return grid, x, windows, recons, weight


CASES = [
    ((12, 10), (6, 4), ((0, 3, 6), (0, 2, 4, 6)), 2, 1, 3),  # 2D, overlapping
    ((9, 8, 7), (4, 4, 3), ((0, 2, 5), (0, 4), (0, 2, 4)), 1, 2, 2),  # 3D, irregular last
    ((8, 8), (8, 8), ((0,), (0,)), 3, 1, 1),  # one window per image
]


@pytest.mark.parametrize("reduce", REDUCE_MODES)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("padded,roi,starts,images,channels,members", CASES)
def test_triton_kernel_equals_twin(padded, roi, starts, images, channels, members, reduce,
                                   with_weight):
    grid, _, windows, recons, weight = _case(padded, roi, starts, images, channels, members, 0)
    outs = []
    for fn in (accumulate_windows_torch, accumulate_windows_triton):
        out_map = torch.zeros((images, channels, *padded))
        out_rec = torch.zeros_like(out_map)
        fn(windows, recons, weight if with_weight else None, grid, out_map, out_rec,
           reduce=reduce)
        outs.append((out_map, out_rec))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reduce", REDUCE_MODES)
def test_twin_reduces_in_chunks_as_in_one_pass(monkeypatch, reduce):
    """The twin's cache-sized chunks (here 7 elements, cutting through windows) change
    nothing: the same sums in the same order as one chunk over everything."""
    import adsys.kernels.window as kw

    grid, _, windows, recons, weight = _case(*CASES[1], 2)
    outs = []
    for chunk in (kw._CHUNK, 7):
        monkeypatch.setattr(kw, "_CHUNK", chunk)
        out_map = torch.zeros((1, 2, *CASES[1][0]))
        out_rec = torch.zeros_like(out_map)
        accumulate_windows_torch(windows, recons, weight, grid, out_map, out_rec, reduce=reduce)
        outs.append((out_map, out_rec))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_twin_scatter_matches_a_loop_over_windows():
    grid, _, windows, recons, _ = _case((13, 11), (5, 4), ((0, 2, 4, 6, 8), (0, 3, 6, 7)),
                                        2, 1, 1, 1)
    out = torch.zeros((2, 1, 13, 11))
    accumulate_windows_torch(windows, recons, None, grid, out, reduce="prediction")
    want = torch.zeros_like(out)
    n = 0
    for b in range(2):
        for s0 in grid.starts[0]:
            for s1 in grid.starts[1]:
                want[b, :, s0 : s0 + 5, s1 : s1 + 4] += recons[0][n] * grid.importance
                n += 1
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_sliding_window_ensemble_runs_on_the_kernel(monkeypatch):
    x = torch.rand(2, 1, 16, 13, generator=torch.Generator().manual_seed(3))
    kw = {"members": (0, 1), "overlap": 0.5, "foreground_weight": True,
          "return_reconstruction": True, "sw_batch_size": 7}

    def predictor(w, m):
        return torch.sigmoid(w * (m + 1))

    monkeypatch.setenv("ADSYS_KERNELS", "torch")
    twin = sliding_window_ensemble(x, predictor, (8, 6), **kw)
    monkeypatch.setenv("ADSYS_KERNELS", "triton")
    assert accumulate_windows.backend_for(x) == "triton"
    kernel = sliding_window_ensemble(x, predictor, (8, 6), **kw)
    torch.testing.assert_close(kernel.map, twin.map, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(kernel.reconstruction, twin.reconstruction, atol=1e-6, rtol=1e-6)


def test_shape_checks():
    grid, _, windows, recons, weight = _case((8, 8), (4, 4), ((0, 4), (0, 4)), 1, 1, 1, 0)
    with pytest.raises(ValueError, match="must be"):
        accumulate_windows_torch(windows[:2], [r[:2] for r in recons], None, grid,
                                 torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="reduce"):
        accumulate_windows_torch(windows, recons, None, grid, torch.zeros(1, 1, 8, 8),
                                 reduce="max")
    with pytest.raises(ValueError, match="contiguous float32"):
        accumulate_windows_torch(windows, recons, None, grid,
                                 torch.zeros(1, 1, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("counts", [(5,), (3, 4), (2, 3, 4)])
def test_window_boxes_cover_a_range_in_row_major_order(counts):
    """Every [start, stop) of a window grid splits into boxes whose sub-grids, gathered in
    order, are exactly those windows (what one predictor call of a batch covers)."""
    starts = tuple(tuple(range(0, 2 * n, 2)) for n in counts)
    roi = (3,) * len(counts)
    padded = tuple(2 * n + 1 for n in counts)
    grid = WindowGrid(starts, roi, padded, importance_map(roi, "gaussian"))
    x = torch.rand((1, 1, *padded), generator=torch.Generator().manual_seed(0))
    every = gather_windows(x, grid)
    total = grid.num_windows
    for start in range(total):
        for stop in range(start + 1, total + 1):
            boxes = window_boxes(counts, start, stop)
            assert len(boxes) <= 2 * len(counts) - 1
            parts = torch.cat([gather_windows(x, grid.subgrid(b)) for b in boxes])
            torch.testing.assert_close(parts, every[start:stop], rtol=0, atol=0)
    assert grid.subgrid(tuple((0, n) for n in counts)) is grid
