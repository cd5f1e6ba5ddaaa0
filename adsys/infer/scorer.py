"""Turn one preprocessed volume into a reconstruction and a raw anomaly map.

A :class:`VolumeScorer` holds the loaded methods (an ensemble when several) and runs them
through :func:`adsys.scoring.sliding_window_ensemble` as their inference recipe says
(:func:`ensemble_recipe`): 2D methods see the volume's axial slices ``(Z, 1, X, Y)``, 3D
methods the volume ``(1, 1, X, Y, Z)``. With the recipe's ``members: models`` each model is
one ensemble member; its ``restore`` already averages its own ``t_values``. With ``members:
steps`` every (model, t) pair of the models' ``t_values`` is a member, restored by the
model's ``restore_step``, so one pass of the ensemble averages the residuals over every t of
every model in every window. With map kind ``method`` the members' own
``anomaly_map`` is blended instead and there is no reconstruction. Every member draws its
noise from a generator seeded by (seed, subject id, member index) — seeding domain
``member`` — so a subject's map does not depend on which worker or in which order it was
computed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from adsys.errors import InputError
from adsys.methods.base import InferenceRecipe, Method, MethodConfig
from adsys.scoring import (
    l1_residual,
    shift_tolerant_residual,
    slices_to_volume,
    sliding_window_ensemble,
    ssim_anomaly_map,
    volume_to_slices,
)
from adsys.seeding import generator

log = logging.getLogger(__name__)

__all__ = ["VolumeScorer", "ensemble_recipe"]

_SHARED = ("map", "window", "protocol", "members")  # recipe keys one ensemble must agree on


def ensemble_recipe(configs: list[MethodConfig]) -> InferenceRecipe:
    """The recipe an ensemble of methods runs with: their map, window and protocol, which
    must agree (each member keeps its own ``t_values``), and one spatial dimensionality."""
    first = configs[0]
    for key in _SHARED:
        other = next((c for c in configs if getattr(c.inference, key) !=
                      getattr(first.inference, key)), None)
        if other is not None:
            raise InputError(None, f"the ensemble's models disagree on inference.{key}: "
                             f"{getattr(first.inference, key)!r} vs "
                             f"{getattr(other.inference, key)!r}",
                             f"set inference.{key} for the run")
    dims = {c.data.dims for c in configs}
    if len(dims) != 1:
        raise InputError(None, f"an ensemble must be all 2D or all 3D models, got {dims}",
                         "pass models of one dimensionality")
    return first.inference


class VolumeScorer:
    """``scorer(image, subject_id) -> (reconstruction, raw_map)``, numpy (x, y, z) float32;
    the reconstruction is ``None`` for map kind ``method``.

    Args:
        models: methods (:class:`~adsys.methods.base.Method`) on ``device``, with the
            recipes they run with (overrides applied when they were loaded).
        seed: the run's seed (members' noise).
        device: where the models run.
    """

    def __init__(self, models: list[Method], seed: int, device: torch.device) -> None:
        self.recipe = ensemble_recipe([m.config for m in models])
        self.models = models
        self.dims = models[0].config.data.dims
        self.seed = seed
        self.device = device

    def _inputs(self, image: np.ndarray) -> torch.Tensor:
        vol = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        return volume_to_slices(vol) if self.dims == 2 else vol[None, None]

    def _volume(self, t: torch.Tensor) -> np.ndarray:
        vol = slices_to_volume(t) if self.dims == 2 else t[0, 0]
        return vol.float().cpu().numpy()

    def _map(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        cfg = self.recipe.map
        if cfg.kind == "ssim":
            return ssim_anomaly_map(x, rec, spatial_dims=self.dims,
                                    data_range=cfg.ssim_data_range, padding=cfg.ssim_padding)
        if cfg.kind == "shift":
            return shift_tolerant_residual(x, rec, k=cfg.shift_k, spatial_dims=self.dims,
                                           padding=cfg.shift_padding)
        return l1_residual(x, rec)

    @torch.no_grad()
    def __call__(
        self, image: np.ndarray, subject_id: str
    ) -> tuple[np.ndarray | None, np.ndarray]:
        x = self._inputs(image)
        gens = [generator("member", self.seed, subject_id, i) for i in range(len(self.models))]
        kind = self.recipe.map.kind

        def predictor(windows: torch.Tensor, member: int | tuple[int, int]) -> torch.Tensor:
            if isinstance(member, tuple):  # (model, t): members "steps"
                i, t = member
                return self.models[i].restore_step(windows, t, gens[i]).to(windows.dtype)
            model = self.models[member]
            run = model.anomaly_map if kind == "method" else model.restore
            return run(windows, gens[member]).to(windows.dtype)

        w = self.recipe.window
        roi = w.roi if w.roi is not None else (-1,) * self.dims
        window_args: dict[str, Any] = {
            "overlap": w.overlap, "overlap_mode": w.overlap_mode, "mode": w.mode,
            "sigma_scale": w.sigma_scale, "sw_batch_size": w.sw_batch_size,
            "foreground_weight": w.foreground_weight,
        }
        members: list[Any] = list(range(len(self.models)))
        if self.recipe.members == "steps":
            members = [(i, t) for i, m in enumerate(self.models)
                       for t in m.config.inference.t_values]
        if kind == "method":  # the members' own maps, blended and averaged
            out = sliding_window_ensemble(x, predictor, roi, members=members,
                                          reduce="prediction", **window_args)
            return None, self._volume(out.map)
        if kind == "l1":  # the fused kernel forms the residual itself
            out = sliding_window_ensemble(
                x, predictor, roi, members=members, reduce=self.recipe.map.ensemble,
                return_reconstruction=True, **window_args,
            )
            return self._volume(out.reconstruction), self._volume(out.map)
        recs = [
            sliding_window_ensemble(x, predictor, roi, members=[m], reduce="prediction",
                                    **window_args).map
            for m in members
        ]
        mean_rec = torch.stack(recs).mean(0)
        if self.recipe.map.ensemble == "reconstruction_mean":
            raw = self._map(x, mean_rec)
        else:
            raw = torch.stack([self._map(x, r) for r in recs]).mean(0)
        return self._volume(mean_rec), self._volume(raw)
