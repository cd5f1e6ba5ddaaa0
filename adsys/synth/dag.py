"""Disentangled anomaly generation (DAG; DISYRE v2, Naval Marimont et al. 2024) as an online
corruption: one synthetic anomaly per item, its severity and the cold-diffusion step t.

Three independently drawn attributes (paper §3.1), with the public code's constants
(implementations.md §4.3):

1. **Location**: a window of ``window`` px (64) per axis, centred on a random brain pixel c
   with h ≤ c ≤ n − h on every axis (h = window/2, n the image size: the window fits); uniform
   over that range when no brain pixel is there.
2. **Shape** S ∈ [0, 1], drawn in the window: 1/3 each
   a rectangle (sides ~ U{10..window − 20} per axis, centre ~ U{a/2..window − a/2}; rotated
   by U(±15°) with p 0.5), a disk (a ball in 3D; diameter ~ U{10..window − 20}, ≥ 10 px from
   the window's edges) or a library shape (:class:`ShapeLibrary`; its central plane in 2D;
   rotated by U(±15°) per axis and scaled by s ~ U(0.5, 0.75), inversely: it grows by 1/s).
   With p 0.7 it is then Gaussian-blurred with σ ~ U(0, 5) px (soft edges, SciPy's
   ``reflect`` border), and it is zeroed on the background (mask == 0).
3. **Texture** (FPI): a foreign patch fp (below), min–max matched inside S > 0 to the image
   there: fp' = clip((fp − min fp)/(max fp − min fp + 1e-3)·(max x − min x) + min x, 0, 1);
   x_tex = x·(1 − α_tex·S) + fp'·α_tex·S, α_tex ~ U(``alpha_texture``) = U(0, 1).
4. **Intensity bias** on tissue clusters: each pixel of x_tex goes to its nearest centroid; a
   selection C of clusters; the indicator of C, blurred with σ = 1 px, times S gives S_b;
   x_sc = clip(x_tex + sign·α_b·S_b, 0, 1) (the paper's (1 − S_b)·x + S_b·(x ± α_b) as one
   add), α_b ~ U(``alpha_bias``) = U(0, 1), sign ±1 (p ½).

   * ``tissue="kmeans"`` (paper, default): ``centroids`` are K = 5 k-means centres of the
     training cohort's brain intensities (:func:`adsys.synth.tissue.tissue_centroids`,
     computed when the shards are built and stored with them, so every worker uses the same);
     C is one cluster, uniform among those with pixels inside S > 0.
   * ``tissue="codebook"`` (public code): its fixed centroids :data:`CODEBOOK`; cluster k
     joins C with probability n_k / (Σn + 1000), n_k its pixels inside S > 0; C = all
     clusters when none joins.
5. **Severity** α = max(α_tex′, α_b′): α_tex′ = α_tex, or 0 when the texture changed no
   pixel; α_b′ = max |x_sc − x_tex|, the bias's effective size (as the code records it).
   t = argmin_t |√ᾱ_t − α| (:func:`adsys.diffusion.cold.severity_timestep`, linear schedule
   with T = ``timesteps``): small t is severe.

The anomaly mask is max(α_tex′·S, |x_sc − x_tex|): 0 on the background, and everywhere when
α_tex = α_b = 0, where the image comes back bit for bit.

**Foreign patches come from the batch.** The public code cuts them from a worker-local cache
of up to 512 crops of earlier batches: state that a record cannot name. Here item i's patch
is cut from another item j ≠ i of the same batch (uniform; i itself in a batch of one), as a
window-sized crop inside j's brain bounding box (a crop covering the box when the box is
smaller; zeros beyond the image). The record names j and the crop's origin, so
:meth:`DAG.replay` on the same batch — which the loader regenerates from its keys — and the
generator from the same seed both reproduce every item bit for bit. Batches are shuffled
across subjects, so the sources are other images, as in FPI.

Items are (B, 1, x, y) slices or patches; (B, 1, x, y, z) volumes work the same way, with
boxes, balls, whole library shapes and one rotation angle per axis.

**Records** (one JSON dict per item). Draws: ``center`` (window centre, D ints), ``kind``
(``"square"`` | ``"disk"`` | ``"library"``); squares: ``size``, ``offset`` (centre in the
window), D ints each; disks: ``diameter``, ``offset``; library: ``index``; ``angles``
(degrees, one per rotation plane; [] = none), ``scale``, ``sigma`` (0 = no blur),
``source`` (batch index), ``source_origin`` (D ints), ``alpha_texture``, ``alpha_bias``,
``sign`` (±1), ``cluster_u`` (K uniforms that choose C). Results: ``clusters`` (C),
``texture_effective`` (α_tex′), ``bias_effective`` (α_b′), ``severity`` (α), ``t``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy import ndimage

from adsys.config import StrictModel
from adsys.diffusion.cold import severity_timestep
from adsys.diffusion.schedules import NoiseSchedule
from adsys.seeding import as_generator
from adsys.synth.corruption import Corruption, CorruptionResult, register_corruption

__all__ = ["CODEBOOK", "DAG", "DAGOptions", "ShapeLibrary"]

CODEBOOK = (0.00565079, 0.38283867, 0.61224216, 0.76920754, 0.9385473)
"""The public code's tissue centroids (fixed; ``tissue="codebook"``)."""

KINDS = ("square", "disk", "library")


class ShapeLibrary:
    """``size`` smooth random 3D blobs, deterministic from ``seed`` (ours, not the public
    code's 300 shipped lesion masks).

    Blob i is a union of 2–6 metaballs: the points where Σ_k exp(−|p − c_k|² / (2 r_k²)) ≥
    e^(−1/2) (a lone ball: its radius r_k). Ball 0 sits at the origin with r_0 ~ U(3, 8) px;
    the others at distances U(0.3, 1)·r_0 in random directions, r_k ~ U(0.4, 0.8)·r_0. So a
    blob spans about 10–25 px, 13–50 px after the DAG's inverse scaling (like its rectangles
    and disks), and its central plane (z = 0) is never empty.
    """

    max_balls = 6

    def __init__(self, size: int = 300, seed: int = 0) -> None:
        g, f64, m = as_generator(seed), torch.float64, self.max_balls
        count = torch.randint(2, m + 1, (size, 1), generator=g)
        r0 = 3 + 5 * torch.rand(size, 1, generator=g, dtype=f64)
        direction = torch.randn(size, m, 3, generator=g, dtype=f64)
        distance = (0.3 + 0.7 * torch.rand(size, m, 1, generator=g, dtype=f64)) * r0[..., None]
        radii = (0.4 + 0.4 * torch.rand(size, m, generator=g, dtype=f64)) * r0
        centres = direction / direction.norm(dim=-1, keepdim=True) * distance
        centres[:, 0], radii[:, 0] = 0.0, r0[:, 0]
        used = torch.arange(m) < count
        self.centres = [c[k].numpy() for c, k in zip(centres, used, strict=True)]
        self.radii = [r[k].numpy() for r, k in zip(radii, used, strict=True)]

    def __len__(self) -> int:
        return len(self.radii)

    def contains(self, index: int, points: np.ndarray) -> np.ndarray:
        """Whether ``points`` (3, *grid), px from the blob's centre, lie in blob ``index``:
        bool (*grid)."""
        field = np.zeros(points.shape[1:])
        for centre, radius in zip(self.centres[index], self.radii[index], strict=True):
            d2 = sum((p - c) ** 2 for p, c in zip(points, centre, strict=True))
            field += np.exp(-d2 / (2 * radius**2))
        return field >= math.exp(-0.5)


class DAGOptions(StrictModel):
    """Settings of :class:`DAG` (module doc). Defaults: the paper; ``tissue="codebook"``:
    the public code's bias clusters."""

    tissue: Literal["kmeans", "codebook"] = "kmeans"
    centroids: list[float] | None = Field(
        None, description="tissue 'kmeans': the training cohort's K tissue centroids; unset: "
        "taken from the shards' statistics (tissue_centroids) by the stream"
    )
    alpha_texture: tuple[float, float] = (0.0, 1.0)
    alpha_bias: tuple[float, float] = (0.0, 1.0)
    window: int = Field(64, ge=30, description="anomaly window, px per axis (even)")
    library_size: int = Field(300, ge=1)
    library_seed: int = 0
    timesteps: int = Field(100, ge=2, description="T of the severity → t map")

    @model_validator(mode="after")
    def _consistent(self) -> DAGOptions:
        if self.tissue == "codebook" and self.centroids is not None:
            raise ValueError("tissue 'codebook' uses the code's fixed centroids: drop centroids")
        if self.centroids and self.centroids != sorted(set(self.centroids)):
            raise ValueError(f"centroids must increase, got {self.centroids}")
        for name in ("alpha_texture", "alpha_bias"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"{name} must be a range (lo, hi) in [0, 1], got {(lo, hi)}")
        if self.window % 2:
            raise ValueError(f"window must be even, got {self.window}")
        return self


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform on {lo..hi}, both included."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _centre_candidates(brain: torch.Tensor, window: int) -> tuple[torch.Tensor, ...]:
    """Per item of ``brain`` (B, 1, *spatial) bool, its brain pixels that may centre the
    window (module doc, step 1): (N_i, D) int64 each."""
    h = window // 2
    inner = brain[(slice(None), 0, *(slice(h, n - h + 1) for n in brain.shape[2:]))].nonzero()
    per_item = torch.bincount(inner[:, 0], minlength=len(brain)).tolist()
    return torch.split(inner[:, 1:] + h, per_item)


def _bounding_boxes(brain: torch.Tensor) -> list[tuple[list[int], list[int]]]:
    """Per item of ``brain`` (B, 1, *spatial) bool, its bounding box (lo, hi) per axis, hi
    excluded (the whole image when there is no brain)."""
    lo, hi = [], []
    for axis in range(2, brain.ndim):
        n = brain.shape[axis]
        occupied = brain.any(dim=[a for a in range(1, brain.ndim) if a != axis])
        has, occupied = occupied.any(1), occupied.to(torch.uint8)  # argmax: first 1
        lo.append(torch.where(has, occupied.argmax(1), 0))
        hi.append(torch.where(has, n - occupied.flip(1).argmax(1), n))
    lo_t, hi_t = torch.stack(lo, 1).tolist(), torch.stack(hi, 1).tolist()
    return list(zip(lo_t, hi_t, strict=True))


def _window_index(centres: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """(B, size) indices, along an axis of ``n`` pixels, of windows of ``size`` centred at
    ``centres`` (B,); beyond the edges mirrored as SciPy's ``reflect`` (−1 → 0, n → n − 1)."""
    idx = centres[:, None] - size // 2 + torch.arange(size)
    idx = torch.where(idx < 0, -idx - 1, idx)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _grid(index: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Advanced indices into (B, *spatial) from per-axis window indices (D tensors (B, n_a))."""
    d = len(index)
    items = torch.arange(len(index[0])).view(-1, *(1,) * d)
    shaped = [
        ix.view(-1, *(ix.shape[1] if j == a else 1 for j in range(d))) for a, ix in enumerate(index)
    ]
    return (items, *shaped)


def _crop(volume: torch.Tensor, origin: list[int], size: int) -> torch.Tensor:
    """``volume`` (*spatial) cut to (size,)*D from ``origin``; zeros beyond its edges."""
    out = volume.new_zeros((size,) * volume.ndim)
    src, dst = [], []
    for o, n in zip(origin, volume.shape, strict=True):
        lo, hi = max(o, 0), min(o + size, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    out[tuple(dst)] = volume[tuple(src)]
    return out


@functools.lru_cache(maxsize=4)
def _centred_grid(window: int, dims: int) -> np.ndarray:
    """Pixel coordinates of the window (D, *(window,)*D) float64, from its centre; read-only."""
    grid = np.indices((window,) * dims, dtype=np.float64) - (window - 1) / 2
    grid.flags.writeable = False
    return grid


def _rotation(angles: list[float]) -> np.ndarray:
    """(D, D) rotation by ``angles`` (degrees): one in 2D; in 3D about axis 0, then 1, 2."""
    d = 2 if len(angles) == 1 else 3
    planes = [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]
    rot = np.eye(d)
    for angle, (a, b) in zip(angles, planes, strict=True):
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        step = np.eye(d)
        step[a, a] = step[b, b] = c
        step[a, b], step[b, a] = -s, s
        rot = step @ rot
    return rot


def _column(params: list[dict[str, Any]], key: str, dims: int) -> torch.Tensor:
    """The items' ``key`` as float32 (B, 1, *(1,)*D), to broadcast over a batch."""
    return torch.tensor([float(p[key]) for p in params]).view(-1, 1, *(1,) * dims)


def _match_range(fp: torch.Tensor, x: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``fp`` min–max matched, per item, to ``x``'s range inside ``inside`` (all (B, 1,
    *spatial)) and clipped to [0, 1] (module doc, step 3); 0 for items with nothing inside."""
    has = inside.flatten(1).any(1)

    def stat(v: torch.Tensor, largest: bool) -> torch.Tensor:
        fill = -torch.inf if largest else torch.inf
        flat = torch.where(inside, v, fill).flatten(1)
        value = flat.amax(1) if largest else flat.amin(1)
        return torch.where(has, value, 0.0).view(-1, *(1,) * (v.ndim - 1))

    fmin, fmax, xmin, xmax = stat(fp, False), stat(fp, True), stat(x, False), stat(x, True)
    return ((fp - fmin) / (fmax - fmin + 1e-3) * (xmax - xmin) + xmin).clamp(0, 1)


@register_corruption("dag")
class DAG(Corruption):
    """See the module doc. Options: :class:`DAGOptions`."""

    Options = DAGOptions
    cohort_options = {"centroids": "tissue_centroids"}

    def __init__(self, options: DAGOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.library = ShapeLibrary(o.library_size, o.library_seed)
        self.schedule = NoiseSchedule("linear", o.timesteps)
        if o.tissue == "codebook" or o.centroids:
            self.centroids = torch.tensor(o.centroids if o.tissue == "kmeans" else CODEBOOK)
            self._cuts = (self.centroids[1:] + self.centroids[:-1]) / 2  # nearest-centroid cuts

    def unset_cohort_options(self) -> dict[str, str]:
        return super().unset_cohort_options() if self.options.tissue == "kmeans" else {}

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        brain = self._brain(images, masks)
        centres = _centre_candidates(brain, self.options.window)
        boxes = _bounding_boxes(brain)
        spatial = tuple(brain.shape[2:])
        params = [self._draw(i, spatial, centres, boxes, generator) for i in range(len(brain))]
        return self._apply(images, brain, params)

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        return self._apply(images, self._brain(images, masks), params)

    def _brain(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``masks > 0``, after checking the batch's shapes against the window."""
        if images.ndim not in (4, 5) or images.shape[1] != 1 or masks.shape != images.shape:
            raise ValueError(
                f"dag takes images and masks (B, 1, x, y[, z]) of one shape, got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        if min(images.shape[2:]) < self.options.window:
            raise ValueError(
                f"dag: images {tuple(images.shape[2:])} are smaller than the anomaly window "
                f"{self.options.window}; lower options.window"
            )
        if not hasattr(self, "centroids"):
            raise ValueError(
                "dag: tissue 'kmeans' has no centroids: stream from shards whose manifest "
                "holds statistics.tissue_centroids (rebuild the shards with this adsys), or "
                "set options.centroids (adsys.synth.tissue.tissue_centroids)"
            )
        return masks > 0

    def _draw(
        self,
        i: int,
        spatial: tuple[int, ...],
        centres: tuple[torch.Tensor, ...],
        boxes: list[tuple[list[int], list[int]]],
        g: torch.Generator,
    ) -> dict[str, Any]:
        """Item ``i``'s draws (module doc, records), given the batch's window-centre
        candidates and brain bounding boxes."""
        w, dims, batch = self.options.window, len(spatial), len(boxes)
        n_angles = 1 if dims == 2 else 3
        kind = KINDS[_randint(g, 0, 2)]
        if len(centres[i]):
            center = centres[i][_randint(g, 0, len(centres[i]) - 1)].tolist()
        else:
            center = [_randint(g, w // 2, n - w // 2) for n in spatial]
        p: dict[str, Any] = {"center": center, "kind": kind}
        if kind == "square":
            size = [_randint(g, 10, w - 20) for _ in range(dims)]
            rotate = _uniform(g) < 0.5
            p |= {
                "size": size,
                "offset": [_randint(g, a // 2, w - a // 2) for a in size],
                "angles": [_uniform(g, -15, 15) for _ in range(n_angles)] if rotate else [],
                "scale": 1.0,
            }
        elif kind == "disk":
            diameter = _randint(g, 10, w - 20)
            first, last = diameter // 2 + 10, w - diameter // 2 - 10
            p |= {
                "diameter": diameter,
                "offset": [_randint(g, first, last) for _ in range(dims)],
                "angles": [],
                "scale": 1.0,
            }
        else:
            p |= {
                "index": _randint(g, 0, len(self.library) - 1),
                "angles": [_uniform(g, -15, 15) for _ in range(n_angles)],
                "scale": _uniform(g, 0.5, 0.75),
            }
        smooth = _uniform(g) < 0.7
        p["sigma"] = _uniform(g, 0, 5) if smooth else 0.0
        source = (i + 1 + _randint(g, 0, batch - 2)) % batch if batch > 1 else i
        p |= {
            "source": source,
            "source_origin": [
                _randint(g, *sorted((lo, hi - w))) for lo, hi in zip(*boxes[source], strict=True)
            ],
            "alpha_texture": _uniform(g, *self.options.alpha_texture),
            "alpha_bias": _uniform(g, *self.options.alpha_bias),
            "sign": 1 if _uniform(g) < 0.5 else -1,
            "cluster_u": [_uniform(g) for _ in range(len(self.centroids))],
        }
        return p

    def _shape(self, p: dict[str, Any], dims: int) -> torch.Tensor:
        """Item ``p``'s soft shape in the window: (window,)*D float32 in [0, 1]."""
        w = self.options.window
        centre = (w - 1) / 2
        q = _centred_grid(w, dims)
        if p["angles"]:  # sample the shape at the rotated, scaled coordinates
            q = p["scale"] * np.einsum("ij,j...->i...", _rotation(p["angles"]), q)
        axes = (-1,) + (1,) * dims
        if p["kind"] == "square":
            half = np.array([a // 2 for a in p["size"]]).reshape(axes)
            mid = (np.array(p["offset"]) - 0.5 - centre).reshape(axes)  # pixel edges
            inside = ((q >= mid - half) & (q < mid + half)).all(0)
        elif p["kind"] == "disk":
            mid = (np.array(p["offset"]) - centre).reshape(axes)
            inside = ((q - mid) ** 2).sum(0) <= (p["diameter"] // 2) ** 2
        else:
            plane = q if dims == 3 else np.concatenate([q, np.zeros((1, *q.shape[1:]))])
            inside = self.library.contains(p["index"], plane)
        shape = inside.astype(np.float64)
        if p["sigma"] > 0:
            shape = ndimage.gaussian_filter(shape, p["sigma"])
        return torch.from_numpy(shape.astype(np.float32))

    def _select(self, counts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(B, K) bool: the clusters each item biases, from its pixel counts ``counts`` (B, K)
        inside the shape and uniforms ``u`` (B, K) (module doc, step 4)."""
        if self.options.tissue == "codebook":
            chosen = u < counts / (counts.sum(1, keepdim=True) + 1000)
        else:
            present = counts > 0
            pick = (u[:, 0] * present.sum(1)).floor().long()
            chosen = present & (present.cumsum(1) - 1 == pick[:, None])
        return chosen | ~chosen.any(1, keepdim=True)

    def _apply(
        self, images: torch.Tensor, brain: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        """The anomalies ``params`` describe (their draws), with their results recorded.

        Everything happens in each item's window plus the tissue blur's reach (SciPy's σ = 1
        kernel: 4 px; mirrored beyond the image as SciPy does), which gives the values a
        whole-image computation would, and only the window changes.
        """
        dims, w, k, reach = images.ndim - 2, self.options.window, len(self.centroids), 4
        x = images.float()
        centres = torch.tensor([p["center"] for p in params]).view(-1, dims)
        index = [_window_index(centres[:, a], w + 2 * reach, n) for a, n in enumerate(x.shape[2:])]
        grid = _grid(index)
        xw, bw = x[:, 0][grid].unsqueeze(1), brain[:, 0][grid].unsqueeze(1)
        inner = (slice(None), 0) + (slice(reach, reach + w),) * dims
        shape, fp = torch.zeros_like(xw), torch.zeros_like(xw)
        shape[inner] = torch.stack([self._shape(p, dims) for p in params])
        fp[inner] = torch.stack([_crop(x[p["source"], 0], p["source_origin"], w) for p in params])
        shape *= bw
        inside = shape > 0

        a_tex = _column(params, "alpha_texture", dims)
        x_tex = xw * (1 - a_tex * shape) + _match_range(fp, xw, inside) * a_tex * shape

        cluster = torch.bucketize(x_tex, self._cuts)  # nearest centroid; ties: the lower
        counts = torch.zeros(len(x), k).scatter_add_(
            1, cluster.flatten(1), inside.flatten(1).float()
        )  # (B, K) pixels of each cluster inside the shape
        u = torch.tensor([p["cluster_u"] for p in params], dtype=torch.float64)
        chosen = self._select(counts, u)
        indicator = chosen.gather(1, cluster.flatten(1)).view_as(cluster).float().numpy()
        tissue = torch.from_numpy(ndimage.gaussian_filter(indicator, (0, 0) + (1,) * dims))
        bias = _column(params, "alpha_bias", dims) * _column(params, "sign", dims)
        out_w = (x_tex + bias * shape * tissue).clamp(0, 1)

        bias_change = (out_w - x_tex).abs()
        changed = (x_tex != xw).flatten(1).any(1).tolist()
        texture = [p["alpha_texture"] if c else 0.0 for p, c in zip(params, changed, strict=True)]
        bias_eff = bias_change.flatten(1).amax(1).tolist()
        severity = torch.tensor(texture, dtype=torch.float64).maximum(
            torch.tensor(bias_eff, dtype=torch.float64)
        )
        steps = severity_timestep(self.schedule, severity).tolist()
        anomaly_w = torch.maximum(
            torch.tensor(texture, dtype=torch.float32).view_as(a_tex) * shape, bias_change
        )

        window = _grid([ix[:, reach : reach + w] for ix in index])
        out, anomaly = x.clone(), torch.zeros_like(x)
        out[:, 0][window] = out_w[inner]
        anomaly[:, 0][window] = anomaly_w[inner]
        records = [
            {**p, "clusters": c.nonzero().flatten().tolist(), "texture_effective": te,
             "bias_effective": be, "severity": s, "t": t}
            for p, c, te, be, s, t in zip(
                params, chosen, texture, bias_eff, severity.tolist(), steps, strict=True
            )
        ]  # fmt: skip
        return CorruptionResult(out.to(images.dtype), anomaly, records)
