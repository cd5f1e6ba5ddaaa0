"""Fluid-driven pseudo-pathology (CondDiff §2.2, UNA): advect and diffuse a lesion map,
then encode it into a healthy image.

Pipeline for one sample (every draw derives from ``seed``; :func:`replay` re-runs it):

1. ``P0``: a lesion probability map picked at random from ``lesion_maps`` (NIfTI on the
   image's grid, soft values kept), or a Perlin shape: 3D Perlin noise (``shape_res``
   periods) kept above its q-th percentile over the brain, q ~ U(90, 99.6), scaled to max 1.
2. ``T_max = (nt − 1) · dt_out`` with nt ~ U{nt_min..nt_max} (UNA training: T ∈ {0.1..0.9}).
3. ``P_T``: the PDE ``∂P/∂t = −V·∇P + ∇·(D∇P)`` up to ``T_max`` (:mod:`adsys.synth.flow`,
   :mod:`adsys.synth.solver`); ``mode="una_compat"`` solves UNA's advection-only system.
4. Lesion = ``P_T > threshold · max P_T`` inside the brain; an empty lesion (fraction
   ≤ ``empty_tol``) gives ``None``: the caller skips the sample (or tries another seed).
5. Intensity, ``x_p = max(0, x + P_T · Δ)``:

   * ``paper`` (default): Δ ~ N(−μ_w/2, (μ_w/2)²) per voxel inside the lesion, 0 outside;
     its sign flipped for the whole sample with probability ``flip_prob`` (0.2). μ_w: mean
     image intensity in white matter (``wm`` probability ≥ 0.5, or the brightest — with
     ``wm_tissue="dark"`` the darkest — of 3 k-means intensity clusters in the brain).
   * ``conddiff``: Δ = μ + σ·N(0, 1) per voxel wherever P_T > 0, μ = −(0.75 + 0.25·U)·I_μ,
     σ = (I_μ/4)·U′, I_μ = mean image intensity inside the lesion (CondDiff code).
   * ``una``: as ``conddiff`` with μ = ±(1 + U)·I_μ, + for hyperintense contrasts
     (T2/FLAIR, ``una_polarity="hyper"``), − for T1/CT (UNA code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adsys.errors import GeometryMismatchError, InputError
from adsys.seeding import child_seeds
from adsys.synth.flow import grid_factor, make_fields, una_velocity
from adsys.synth.perlin import perlin_noise
from adsys.synth.solver import solve, solve_una
from adsys.synth.tissue import tissue_centroids

__all__ = [
    "FluidConfig",
    "FluidSample",
    "encode_intensity",
    "generate",
    "render",
    "replay",
    "sample_params",
    "white_matter_mean",
]

logger = logging.getLogger(__name__)

PARAMS_VERSION = 1
_SEED_NAMES = ("draws", "psi_x", "psi_y", "psi_z", "phi", "shape", "intensity")


class FluidConfig(BaseModel):
    """Settings of the fluid generator (defaults: the paper's PDE, UNA's ranges)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["paper", "una_compat"] = "paper"
    res: int = Field(2, ge=1, description="Perlin periods per axis of Ψ and Φ")
    velocity_scale: float = Field(500.0, ge=0, description="s in V = s·curl Ψ (UNA: 500)")
    reference_size: int | None = Field(
        200, ge=1, description="grid size on which s and d_max apply; None: no scaling"
    )
    independent_potentials: bool | None = Field(
        None, description="three independent Ψ components; None: True (paper), False (una)"
    )
    d_max: float = Field(
        5.0, ge=0, description="max diffusivity on the reference grid, voxels²/unit time"
    )
    boundary_width: float = Field(
        0.25, gt=0, description="χ ramp width as a fraction of the Perlin period"
    )
    scheme: Literal["ssprk2", "ssprk3", "ssprk42"] = "ssprk2"
    safety: float = Field(0.9, gt=0, le=1)
    dt: float | None = Field(None, gt=0, description="force a time step (must be stable)")
    nt_min: int = Field(2, ge=1)
    nt_max: int = Field(10, ge=1)
    dt_out: float = Field(0.1, ge=0, description="T_max = (nt − 1) · dt_out")
    shape_res: int = Field(2, ge=1)
    percentile_min: float = Field(90.0, ge=0, le=100)
    percentile_max: float = Field(99.6, ge=0, le=100)
    threshold: float = Field(0.2, gt=0, lt=1, description="lesion = P_T > threshold·max P_T")
    empty_tol: float = Field(1e-6, ge=0)
    intensity: Literal["paper", "conddiff", "una"] = "paper"
    flip_prob: float = Field(0.2, ge=0, le=1)
    una_polarity: Literal["hyper", "hypo"] = "hyper"
    wm_tissue: Literal["bright", "dark"] = "bright"

    @model_validator(mode="after")
    def _ranges(self) -> FluidConfig:
        if self.nt_min > self.nt_max:
            raise ValueError(f"nt_min={self.nt_min} > nt_max={self.nt_max}")
        if self.percentile_min > self.percentile_max:
            raise ValueError(f"percentile_min={self.percentile_min} > {self.percentile_max}")
        return self

    @property
    def independent(self) -> bool:
        if self.independent_potentials is None:
            return self.mode == "paper"
        return self.independent_potentials


@dataclass
class FluidSample:
    """One pseudo-pathological variant, arrays (X, Y, Z) on the input grid.

    ``image``: float32, ≥ 0; ``p_t``: float32 soft map P_T; ``lesion``: uint8 binary mask;
    ``params``: JSON-serialisable record from which :func:`replay` rebuilds the sample.
    """

    image: np.ndarray
    p_t: np.ndarray
    lesion: np.ndarray
    params: dict[str, Any]


def white_matter_mean(
    image: np.ndarray, mask: np.ndarray, wm: np.ndarray | None = None, tissue: str = "bright"
) -> float:
    """μ_w: mean intensity where ``wm ≥ 0.5`` in the brain, else of the brightest (or
    darkest, ``tissue="dark"``) of 3 k-means intensity clusters of the brain."""
    brain = mask > 0
    if wm is not None:
        region = brain & (wm >= 0.5)
        if not region.any():
            raise InputError(
                None,
                "the white-matter map has no voxel ≥ 0.5 inside the brain",
                "pass the WM probability map of this subject, or omit it",
            )
        return float(image[region].astype(np.float64).mean())
    centres = tissue_centroids(image[brain], k=3)
    return float(centres[-1] if tissue == "bright" else centres[0])


def _load_lesion_map(path: Path, shape: tuple[int, ...], affine: np.ndarray | None) -> np.ndarray:
    from adsys.io import load_volume

    vol = load_volume(path)
    if vol.data.shape != shape or (
        affine is not None and not np.allclose(vol.affine, affine, atol=1e-3)
    ):
        raise GeometryMismatchError(
            path,
            f"lesion probability map of shape {vol.data.shape} is not on the image grid {shape}",
            "register/resample the lesion maps onto the preprocessed image grid first",
        )
    return np.clip(vol.data, 0.0, None)


def sample_params(
    seed: int, config: FluidConfig, lesion_maps: Sequence[str | Path] | None = None
) -> dict[str, Any]:
    """All random choices of one sample from ``seed``, as a JSON-serialisable record:
    sub-seeds of the fields, shape and voxel noise; nt and T_max; the lesion map or the
    shape percentile; the intensity draws (``u_mu``, ``u_sigma``, ``flip``)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    seeds = child_seeds(int(seed), _SEED_NAMES)
    rng = np.random.default_rng(seeds["draws"])
    nt = int(rng.integers(config.nt_min, config.nt_max + 1))
    params: dict[str, Any] = {
        "generator": "fluid",
        "version": PARAMS_VERSION,
        "seed": int(seed),
        "config": config.model_dump(mode="json"),
        "seeds": seeds,
        "nt": nt,
        "t_max": (nt - 1) * config.dt_out,
        "lesion_map": None,
        "shape_percentile": None,
    }
    if lesion_maps:
        maps = sorted(str(p) for p in lesion_maps)
        params["lesion_map"] = maps[int(rng.integers(len(maps)))]
    else:
        params["shape_percentile"] = float(
            rng.uniform(config.percentile_min, config.percentile_max)
        )
    params["draws"] = {
        "u_mu": float(rng.random()),
        "u_sigma": float(rng.random()),
        "flip": bool(rng.random() < config.flip_prob),
    }
    return params


def _initial_map(
    params: dict,
    config: FluidConfig,
    mask: np.ndarray,
    affine: np.ndarray | None,
    lesion_maps: Sequence[str | Path] | None,
) -> np.ndarray:
    """P0 (float32): the chosen lesion map, or the thresholded Perlin shape."""
    brain = mask > 0
    if params["lesion_map"] is not None:
        path = Path(params["lesion_map"])
        if lesion_maps and not path.is_file():  # replay from a moved folder: match by name
            path = next((Path(p) for p in lesion_maps if Path(p).name == path.name), path)
        p0 = _load_lesion_map(path, mask.shape, affine)
        return (p0 * brain if config.mode == "paper" else p0).astype(np.float32)
    noise = perlin_noise(mask.shape, config.shape_res, seed=params["seeds"]["shape"]).numpy()
    thr = np.percentile(noise[brain], params["shape_percentile"])
    p0 = np.where((noise > thr) & brain, noise, 0.0)
    peak = p0.max()
    return (p0 / peak if peak > 0 else p0).astype(np.float32)


def _advance(
    p0: np.ndarray, mask: np.ndarray, params: dict, config: FluidConfig, device: str
) -> tuple[np.ndarray, dict]:
    """P_T and the solver record."""
    shape = tuple(mask.shape)
    s = params["seeds"]
    factor = grid_factor(shape, config.reference_size)
    speed = config.velocity_scale * factor
    psi_seeds = [s["psi_x"], s["psi_y"], s["psi_z"]] if config.independent else [s["psi_x"]] * 3
    p0_t = torch.from_numpy(p0)
    if config.mode == "paper":
        fields = make_fields(
            mask,
            res=config.res,
            speed=speed,
            d_max=config.d_max * factor,
            width=config.boundary_width * max(shape) / config.res,
            seeds=[*psi_seeds, s["phi"]],
            device=device,
        )
        p_t, info = solve(
            p0_t, fields, params["t_max"], scheme=config.scheme, safety=config.safety, dt=config.dt
        )
    else:
        velocity = una_velocity(shape, config.res, psi_seeds, speed).to(device)
        p_t, info = solve_una(
            p0_t,
            velocity,
            params["t_max"],
            torch.from_numpy(mask),
            scheme=config.scheme,
            safety=config.safety,
            dt=config.dt,
        )
    return p_t.cpu().numpy(), {**info.to_dict(), "speed": speed, "grid_factor": factor}


def encode_intensity(
    image: np.ndarray,
    mask: np.ndarray,
    p_t: np.ndarray,
    lesion: np.ndarray,
    *,
    config: FluidConfig,
    draws: dict[str, Any],
    seed: int,
    wm: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``max(0, image + p_t · Δ)`` (float32) for ``config.intensity`` (module docstring).

    ``draws``: ``u_mu``, ``u_sigma`` in [0, 1) and ``flip`` (see :func:`sample_params`);
    ``seed``: seed of the voxel-wise N(0, 1). Returns the image and the record of μ, σ and
    μ_w or I_μ.
    """
    z = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
    x = image.astype(np.float32)
    if config.intensity == "paper":
        mu_w = white_matter_mean(image, mask, wm, config.wm_tissue)
        sign = -1.0 if draws["flip"] else 1.0
        delta = sign * (np.float32(-mu_w / 2) + np.float32(mu_w / 2) * z) * lesion
        record = {
            "mode": "paper",
            "mu_w": mu_w,
            "mu": -sign * mu_w / 2,
            "sigma": mu_w / 2,
            "flip": draws["flip"],
        }
    else:
        i_mu = float(image[lesion > 0].astype(np.float64).mean())
        if config.intensity == "conddiff":
            mu = -(0.75 + 0.25 * draws["u_mu"]) * i_mu
        else:
            mu = (1.0 if config.una_polarity == "hyper" else -1.0) * (1.0 + draws["u_mu"]) * i_mu
        sigma = i_mu / 4 * draws["u_sigma"]
        delta = np.float32(mu) + np.float32(sigma) * z
        record = {"mode": config.intensity, "i_mu": i_mu, "mu": mu, "sigma": sigma}
    return np.maximum(x + p_t * delta, 0.0).astype(np.float32), record


def render(
    image: np.ndarray,
    mask: np.ndarray,
    params: dict[str, Any],
    *,
    wm: np.ndarray | None = None,
    lesion_maps: Sequence[str | Path] | None = None,
    affine: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> FluidSample | None:
    """Deterministic part of the generator: the sample described by ``params``."""
    config = FluidConfig(**params["config"])
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be the same 3D shape")
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    p0 = _initial_map(params, config, mask, affine, lesion_maps)
    if not (p0 * mask).any():
        logger.info(
            "fluid seed %s: the initial lesion map is empty in the brain; skipped", params["seed"]
        )
        return None
    p_t, solver = _advance(p0, mask, params, config, str(device))
    lesion = ((p_t > config.threshold * p_t.max()) & (mask > 0)).astype(np.uint8)
    if lesion.mean() <= config.empty_tol:
        logger.info("fluid seed %s: empty lesion after the PDE; skipped", params["seed"])
        return None
    out, intensity = encode_intensity(
        image,
        mask,
        p_t,
        lesion,
        config=config,
        draws=params["draws"],
        seed=params["seeds"]["intensity"],
        wm=wm,
    )
    record = {
        **params,
        "solver": solver,
        "intensity": intensity,
        "lesion_voxels": int(lesion.sum()),
    }
    return FluidSample(image=out, p_t=p_t.astype(np.float32), lesion=lesion, params=record)


def generate(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int,
    config: FluidConfig | None = None,
    lesion_maps: Sequence[str | Path] | None = None,
    wm: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> FluidSample | None:
    """One fluid pseudo-pathology variant of ``image`` (X, Y, Z) with brain ``mask``.

    Args:
        seed: non-negative int; every random choice derives from it.
        config: :class:`FluidConfig` (defaults: the paper's PDE and intensity model).
        lesion_maps: NIfTI lesion probability maps on the image grid (one is picked);
            ``None`` or empty: a thresholded Perlin shape.
        wm: white-matter probability map (X, Y, Z) for μ_w (``paper`` intensity); else a
            k-means estimate.
        affine: the image's affine; when given, lesion maps must share it (1e-3 mm).
        device: where the PDE runs (CUDA uses the Triton kernel).

    Returns:
        A :class:`FluidSample`, or ``None`` when the lesion is empty (logged; skip it).
    """
    params = sample_params(seed, config or FluidConfig(), lesion_maps)
    return render(image, mask, params, wm=wm, lesion_maps=lesion_maps, affine=affine, device=device)


def replay(
    image: np.ndarray,
    mask: np.ndarray,
    params: dict[str, Any],
    *,
    wm: np.ndarray | None = None,
    lesion_maps: Sequence[str | Path] | None = None,
    affine: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> FluidSample | None:
    """Rebuild the sample recorded in ``params`` (from :func:`generate`), bit for bit on the
    same device and backend. ``lesion_maps`` resolves a recorded lesion map by file name
    when its recorded path no longer exists."""
    if params.get("generator") != "fluid" or params.get("version") != PARAMS_VERSION:
        raise ValueError("params are not a fluid v1 record from adsys.synth.fluid.generate")
    return render(image, mask, params, wm=wm, lesion_maps=lesion_maps, affine=affine, device=device)
