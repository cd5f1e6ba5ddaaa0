"""Fractal simplex noise as AnoDDPM / cDDPM / pDDPM use it, vectorised in torch.

The base noise is OpenSimplex (K. Spencer, 2014): a stretched (simplex) lattice, a random
gradient per lattice vertex chosen through a 256-entry permutation, and the radial kernel
``max(0, 2 − |d|²)⁴ · ⟨g, d⟩`` summed over the vertices in range, divided by 47 (2D) or
103 (3D). Every vertex in range is summed, so the field is continuous.

The fractal is the reference recipe (``rand_2d_octaves``): octave ``k`` samples the *same*
base noise at pixel coordinates divided by ``wavelength / 2**k`` (64, 32, 16, 8, 4, 2 px
for the defaults) with amplitude ``persistence**k`` (1, 0.8, ..., 0.33), and the sum is
**not** normalised. By default one map is drawn per call and shared by the whole batch,
as the reference does; ``per_sample=True`` draws one per (sample, channel), and
``normalize=True`` standardises each map to zero mean and unit variance.

Speed: the noise is linear in the vertex gradients, so for a given grid and recipe the
geometry (which vertices reach which pixel, with which kernel weights, octave amplitudes
folded in) is a sparse matrix built once and cached; a call then only hashes the lattice
vertices of its permutation(s) and does one sparse × dense product.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence
from functools import cache, lru_cache

import torch

from adsys.seeding import SeedLike, as_generator

__all__ = ["octave_wavelengths", "simplex_noise"]

_RADIUS2 = 2.0
_NORM = {2: 47.0, 3: 103.0}
# OpenSimplex gradient tables (2D: 8 directions, 3D: 24 directions).
_GRADIENTS = {
    2: [(5, 2), (2, 5), (-5, 2), (-2, 5), (5, -2), (2, -5), (-5, -2), (-2, -5)],
    3: [
        (sx * a, sy * b, sz * c)
        for sz in (1, -1)
        for sy in (1, -1)
        for sx in (-1, 1)
        for a, b, c in ((11, 4, 4), (4, 11, 4), (4, 4, 11))
    ],
}
# Gradient index from the hashed permutation value h: (h >> shift) % len(table).
_HASH_SHIFT = {2: 1, 3: 0}
_ROWS_PER_CHUNK = 1 << 14  # pixels per sparse block
_CACHE_MAX_POINTS = 1 << 21  # grids × octaves up to this size keep their matrix cached


def _stretch(dim: int) -> float:
    return (1.0 / math.sqrt(dim + 1) - 1.0) / dim


def _squish(dim: int) -> float:
    return (math.sqrt(dim + 1) - 1.0) / dim


@cache
def _candidate_offsets(dim: int) -> torch.Tensor:
    """Offsets ``o`` from a point's skewed cell origin whose vertex can be within range.

    For each ``o``, the squared real-space distance from the unit skewed cell to the vertex
    is a convex quadratic; its minimum over the cell (projected gradient descent) decides.
    Returns (K, D) int64: K = 8 in 2D, 26 in 3D.
    """
    sq = _squish(dim)
    m = torch.eye(dim, dtype=torch.float64) + sq
    q = m.T @ m
    step = 1.0 / float(torch.linalg.eigvalsh(q).max())
    offs = torch.tensor(list(itertools.product(range(-2, 4), repeat=dim)), dtype=torch.float64)
    starts = torch.tensor(list(itertools.product((0.0, 0.5, 1.0), repeat=dim)), dtype=q.dtype)
    f = starts[None].expand(len(offs), -1, -1).clone()  # (O, S, D)
    for _ in range(200):  # condition number D + 1: converges geometrically
        f = (f - step * ((f - offs[:, None]) @ q)).clamp(0.0, 1.0)
    r = f - offs[:, None]
    dist2 = ((r @ q) * r).sum(-1).amin(dim=1)
    return offs[dist2 < _RADIUS2 - 1e-9].long()


def octave_wavelengths(octaves: int = 6, wavelength: float = 64.0) -> list[float]:
    """Spatial periods (px) of the octaves: ``wavelength / 2**k`` for ``k < octaves``."""
    return [wavelength / 2**k for k in range(octaves)]


def _vertex_box(spatial: tuple[int, ...], min_wavelength: float) -> tuple[list[int], list[int]]:
    """Lower corner and extent of the skewed-vertex box touched by any octave."""
    dim = len(spatial)
    st = _stretch(dim)
    hi_x = [(n - 1) / min_wavelength for n in spatial]
    offs = _candidate_offsets(dim)
    lo = [math.floor(st * sum(hi_x)) + int(offs[:, a].min()) for a in range(dim)]
    hi = [math.floor(hi_x[a] * (1 + st)) + int(offs[:, a].max()) for a in range(dim)]
    return lo, [h - low + 1 for h, low in zip(hi, lo, strict=True)]


def _entries(
    spatial: tuple[int, ...], octaves: int, wavelength: float, persistence: float, device: str
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Kernel weights of every (pixel, vertex) pair in range, in blocks of pixels.

    Yields ``(first_pixel, n_pixels, row, vid, w)``: ``row`` (E,) pixel index within the
    block, ``vid`` (E,) vertex id in :func:`_vertex_box` order, ``w`` (E, D) the kernel
    ``(2 − |d|²)⁴ · d`` times the octave amplitude over the norm, so that the noise of a
    pixel is the sum over its entries of ``⟨w, gradient[vid]⟩``.
    """
    dim = len(spatial)
    n_pix = math.prod(spatial)
    lo, extent = _vertex_box(spatial, wavelength / 2 ** (octaves - 1))
    lo_t = torch.tensor(lo, device=device)
    strides = torch.tensor([math.prod(extent[a + 1 :]) for a in range(dim)], device=device)
    offs = _candidate_offsets(dim).to(device)
    for start in range(0, n_pix, _ROWS_PER_CHUNK):
        rows = torch.arange(start, min(n_pix, start + _ROWS_PER_CHUNK), device=device)
        idx = torch.stack(torch.unravel_index(rows, spatial), dim=1).double()  # (R, D)
        row_l, vid_l, w_l = [], [], []
        for k, lam in enumerate(octave_wavelengths(octaves, wavelength)):
            x = idx / lam
            s = x + _stretch(dim) * x.sum(dim=1, keepdim=True)
            v = torch.floor(s).long()[:, None, :] + offs[None]  # (R, K, D)
            vr = v.double()
            d = x[:, None, :] - (vr + _squish(dim) * vr.sum(dim=2, keepdim=True))
            attn = (_RADIUS2 - (d * d).sum(dim=2)).clamp_min(0.0) ** 4
            hit = attn > 0
            w_l.append(d[hit] * (attn[hit] * persistence**k / _NORM[dim])[:, None])
            vid_l.append(((v[hit] - lo_t) * strides).sum(dim=1))
            row_l.append((rows - start)[:, None].expand(hit.shape)[hit])
        yield start, len(rows), torch.cat(row_l), torch.cat(vid_l), torch.cat(w_l)


@lru_cache(maxsize=8)
def _cached_matrices(
    spatial: tuple[int, ...], octaves: int, wavelength: float, persistence: float, device: str
) -> list[tuple[int, torch.Tensor]]:
    """The entries as sparse CSR blocks: pixels × (vertex, component)."""
    dim = len(spatial)
    _, extent = _vertex_box(spatial, wavelength / 2 ** (octaves - 1))
    blocks = []
    for start, n_rows, row, vid, w in _entries(spatial, octaves, wavelength, persistence, device):
        cols = vid[:, None] * dim + torch.arange(dim, device=device)
        coo = torch.sparse_coo_tensor(
            torch.stack([row[:, None].expand_as(cols).reshape(-1), cols.reshape(-1)]),
            w.reshape(-1),
            (n_rows, math.prod(extent) * dim),
            check_invariants=False,
        ).coalesce()  # merges the octaves that reach the same vertex
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we need mm only
            warnings.simplefilter("ignore", UserWarning)
            blocks.append((start, coo.to_sparse_csr()))
    return blocks


def _vertex_gradients(
    spatial: tuple[int, ...], min_wavelength: float, perms: torch.Tensor
) -> torch.Tensor:
    """Gradient of every vertex of the box for each permutation: (M, n_vertices · D)."""
    dim = len(spatial)
    lo, extent = _vertex_box(spatial, min_wavelength)
    device = perms.device
    axes = [torch.arange(lo[a], lo[a] + extent[a], device=device) for a in range(dim)]
    verts = torch.cartesian_prod(*axes).view(-1, dim)  # (V, D), row-major like the ids
    m = perms.shape[0]
    flat = perms.reshape(-1)
    row = (torch.arange(m, device=device) * 256)[:, None]
    h = flat[row + (verts[None, :, 0] & 255)]
    for a in range(1, dim):  # h = perm[(perm[v0] + v1) & 255] ... chained over axes
        h = flat[row + ((h + verts[None, :, a]) & 255)]
    table = torch.tensor(_GRADIENTS[dim], dtype=torch.float64, device=device)
    grads = table[(h >> _HASH_SHIFT[dim]) % len(table)]  # (M, V, D)
    return grads.reshape(m, -1)


def simplex_noise(
    shape: Sequence[int],
    *,
    seed: SeedLike,
    octaves: int = 6,
    persistence: float = 0.8,
    wavelength: float = 64.0,
    per_sample: bool = False,
    normalize: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fractal simplex noise of ``shape`` = ``(B, C, H, W)`` or ``(B, C, X, Y, Z)``.

    Args:
        seed: int seed or CPU ``torch.Generator``; one permutation is drawn per map.
        octaves, persistence, wavelength: octave ``k`` samples the base noise at
            ``pixel / (wavelength / 2**k)`` with amplitude ``persistence**k``.
        per_sample: draw an independent map per (sample, channel) instead of one map
            shared by the whole batch (the reference behaviour).
        normalize: standardise each map to zero mean and unit variance (the reference
            does not; its 2D octave sum has a std of about 0.5 with the defaults).

    Returns:
        A contiguous tensor of ``shape`` (values of one octave lie in about [−1, 1]).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"shape must be (B, C, H, W) or (B, C, X, Y, Z), got {shape}")
    if octaves < 1 or wavelength <= 0:
        raise ValueError(f"need octaves >= 1 and wavelength > 0, got {octaves}, {wavelength}")
    device = torch.device(device or "cpu")
    spatial = shape[2:]
    n_maps = shape[0] * shape[1] if per_sample else 1
    gen = as_generator(seed)
    perms = torch.argsort(torch.rand(n_maps, 256, generator=gen), dim=1).to(device)
    key = (spatial, int(octaves), float(wavelength), float(persistence), str(device))
    grads = _vertex_gradients(spatial, wavelength / 2 ** (octaves - 1), perms)  # (M, V*D)
    if math.prod(spatial) * octaves <= _CACHE_MAX_POINTS:  # sparse product, cached geometry
        maps = torch.empty(math.prod(spatial), n_maps, dtype=torch.float64, device=device)
        grads_t = grads.T.contiguous()
        for start, block in _cached_matrices(*key):
            maps[start : start + block.shape[0]] = block @ grads_t
        maps = maps.T
    else:  # large (3D) grids: stream the entries, gather the gradients directly
        dim = len(spatial)
        grads = grads.view(n_maps, -1, dim)
        maps = torch.zeros(n_maps, math.prod(spatial), dtype=torch.float64, device=device)
        for start, n_rows, row, vid, w in _entries(*key):
            vals = (grads[:, vid] * w).sum(dim=-1)  # (M, E)
            maps[:, start : start + n_rows].index_add_(1, row, vals)
    if normalize:
        maps = (maps - maps.mean(dim=1, keepdim=True)) / maps.std(dim=1, keepdim=True)
    maps = maps.to(dtype)
    if per_sample:
        return maps.reshape(shape).contiguous()
    return maps.reshape(1, 1, *spatial).expand(shape).contiguous()
