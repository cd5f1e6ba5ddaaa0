"""Turn one preprocessed volume into a reconstruction and a raw anomaly map.

A :class:`VolumeScorer` holds the exported models (an ensemble when several) and runs them
through :func:`adsys.scoring.sliding_window_ensemble`: 2D models see the volume's axial
slices ``(Z, 1, X, Y)``, 3D models the volume ``(1, 1, X, Y, Z)``. Each model is one
ensemble member; its ``restore`` already averages its own t values (cDDPM: the mean of the
one-step reconstructions at t ∈ {250, 500, 750}). Every member draws its noise from a
generator seeded by ``(seed, subject id, member index)``, so a subject's map does not depend
on which worker or in which order it was computed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from adsys.infer.config import InferConfig
from adsys.scoring import (
    l1_residual,
    shift_tolerant_residual,
    slices_to_volume,
    sliding_window_ensemble,
    ssim_anomaly_map,
    volume_to_slices,
)

log = logging.getLogger(__name__)

__all__ = ["VolumeScorer", "member_seed"]


def member_seed(seed: int, subject_id: str, member: int) -> int:
    """A 63-bit seed for one ensemble member on one subject (stable across runs)."""
    words = [int(seed), member, *subject_id.encode()]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


class VolumeScorer:
    """``scorer(image, subject_id) -> (reconstruction, raw_map)``, numpy (x, y, z) float32.

    Args:
        models: restoration methods (``restore(images, generator)`` on (B, 1, *spatial) in
            [0, 1]), all 2D or all 3D, on ``device``.
        config: the run's :class:`InferConfig` (map and window settings, seed).
        device: where the models run.
    """

    def __init__(self, models: list[torch.nn.Module], config: InferConfig,
                 device: torch.device) -> None:
        dims = {m.config.unet.dims for m in models}
        if len(dims) != 1:
            raise ValueError(f"an ensemble must be all 2D or all 3D models, got dims {dims}")
        self.models = models
        self.dims = dims.pop()
        self.config = config
        self.device = device

    def _inputs(self, image: np.ndarray) -> torch.Tensor:
        vol = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        return volume_to_slices(vol) if self.dims == 2 else vol[None, None]

    def _volume(self, t: torch.Tensor) -> np.ndarray:
        vol = slices_to_volume(t) if self.dims == 2 else t[0, 0]
        return vol.float().cpu().numpy()

    def _map(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        cfg = self.config.map
        if cfg.kind == "ssim":
            return ssim_anomaly_map(x, rec, spatial_dims=self.dims,
                                    data_range=cfg.ssim_data_range, padding=cfg.ssim_padding)
        if cfg.kind == "shift":
            return shift_tolerant_residual(x, rec, k=cfg.shift_k, spatial_dims=self.dims,
                                           padding=cfg.shift_padding)
        return l1_residual(x, rec)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, subject_id: str) -> tuple[np.ndarray, np.ndarray]:
        x = self._inputs(image)
        gens = [
            torch.Generator().manual_seed(member_seed(self.config.seed, subject_id, i))
            for i in range(len(self.models))
        ]

        def predictor(windows: torch.Tensor, member: int) -> torch.Tensor:
            return self.models[member].restore(windows, gens[member]).to(windows.dtype)

        w = self.config.window
        roi = w.roi if w.roi is not None else (-1,) * self.dims
        window_args: dict[str, Any] = {
            "overlap": w.overlap, "overlap_mode": w.overlap_mode, "mode": w.mode,
            "sigma_scale": w.sigma_scale, "sw_batch_size": w.sw_batch_size,
            "foreground_weight": w.foreground_weight,
        }
        members = list(range(len(self.models)))
        if self.config.map.kind == "l1":  # the fused kernel forms the residual itself
            out = sliding_window_ensemble(
                x, predictor, roi, members=members, reduce=self.config.map.ensemble,
                return_reconstruction=True, **window_args,
            )
            return self._volume(out.reconstruction), self._volume(out.map)
        recs = [
            sliding_window_ensemble(x, predictor, roi, members=[m], reduce="prediction",
                                    **window_args).map
            for m in members
        ]
        mean_rec = torch.stack(recs).mean(0)
        if self.config.map.ensemble == "reconstruction_mean":
            raw = self._map(x, mean_rec)
        else:
            raw = torch.stack([self._map(x, r) for r in recs]).mean(0)
        return self._volume(mean_rec), self._volume(raw)
