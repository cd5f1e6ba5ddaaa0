"""The inference configuration: which models, which cohort, how to score, where to write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from adsys.config import GpuSetting, StrictModel
from adsys.metrics.protocols import get_protocol

__all__ = ["InferConfig", "MapConfig", "WindowConfig"]


class WindowConfig(StrictModel):
    """Sliding windows over the model's input (:func:`adsys.scoring.sliding_window_ensemble`).

    ``roi`` ``None`` = the whole axial slice (2D models) or volume (3D models): one window,
    as cDDPM does on 96×96 slices. ``sw_batch_size`` ``None`` = every window of a volume in
    one call, so cDDPM's one simplex map is shared by all slices of the volume.
    """

    roi: tuple[int, ...] | None = None
    overlap: float = 0.25
    overlap_mode: Literal["monai", "step"] = "monai"
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int | None = None
    foreground_weight: bool = False


class MapConfig(StrictModel):
    """How the raw anomaly map is formed from input and reconstruction(s).

    ``kind``: ``l1`` (|x − x̂|), ``ssim`` (1 − SSIM; ``ssim_data_range=255`` and
    ``ssim_padding="zeros"`` reproduce UPD/ICDM), ``shift`` (CondDiff's shift-tolerant
    residual, ``shift_k`` voxels, ``edge`` or ``circular`` padding). ``ensemble`` across
    several models: ``residual_mean`` (mean of the models' maps, ICDM's fold ensemble) or
    ``reconstruction_mean`` (the map of the mean reconstruction).
    """

    kind: Literal["l1", "ssim", "shift"] = "l1"
    ensemble: Literal["residual_mean", "reconstruction_mean"] = "residual_mean"
    ssim_data_range: float = 1.0
    ssim_padding: Literal["reflect", "zeros"] = "reflect"
    shift_k: int = 2
    shift_padding: Literal["edge", "circular"] = "edge"

    @property
    def score_range(self) -> tuple[float, float]:
        """The range of raw scores (fixes the pooled histograms): 1 − SSIM lies in [0, 2]."""
        return (0.0, 2.0) if self.kind == "ssim" else (0.0, 1.0)


class InferConfig(StrictModel):
    """Everything a batch-inference run needs; recorded in ``OUT/run.json``.

    ``models``: exported model folders (several = an ensemble); ``cohort``: a Zarr cohort
    store (a shard build's output folder or its ``cohort.zarr``) or a manifest CSV of NIfTI
    volumes, preprocessed on the fly with the models' recorded preprocessing; ``splits``: the
    manifest splits to run; ``threshold``: see
    :func:`adsys.metrics.protocols.choose_cohort_threshold` (``val``, ``val-fpr=0.05``, a
    number or ``none``); ``num_workers``: actors, ``auto`` = one per GPU on a GPU cluster,
    else one per ``cpus_per_worker`` CPUs of the cluster.
    """

    models: list[Path]
    cohort: Path
    out: Path = Path("runs/infer")
    splits: tuple[str, ...] = ("val", "test")
    protocol: str = "behrendt"
    threshold: str = "val"
    map: MapConfig = MapConfig()
    window: WindowConfig = WindowConfig()
    seed: int = 0
    num_workers: int | Literal["auto"] = "auto"
    cpus_per_worker: int = 1
    use_gpu: GpuSetting = "auto"
    batch_size: int = 1
    native: bool = True
    zarr: bool = False
    overlays: bool = True

    @field_validator("models")
    @classmethod
    def _some_model(cls, v: list[Path]) -> list[Path]:
        if not v:
            raise ValueError("give at least one exported model folder")
        return v

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        get_protocol(v)  # an unknown name lists the known ones
        return v

    @field_validator("num_workers", "cpus_per_worker", "batch_size")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _foreground_weight_needs_l1(self) -> InferConfig:
        if self.window.foreground_weight and self.map.kind != "l1":
            raise ValueError(
                "window.foreground_weight weights each window's residual (DISYRE) and needs "
                f"map.kind 'l1', not {self.map.kind!r}"
            )
        return self

    def scoring_digest(self, model_configs: list[dict[str, Any]]) -> str:
        """Identity of a subject's outputs: models (their config.json and weights' sizes),
        map, window, protocol, seed, output options. A subject written under another digest
        is recomputed."""
        blob = json.dumps(
            {
                "models": model_configs,
                "map": self.map.model_dump(mode="json"),
                "window": self.window.model_dump(mode="json"),
                "protocol": self.protocol,
                "seed": self.seed,
                "native": self.native,
                "zarr": self.zarr,
                "overlays": self.overlays,
            },
            sort_keys=True,
        ).encode()
        return hashlib.sha256(blob).hexdigest()
