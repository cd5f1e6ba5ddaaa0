"""Typed, validated configurations (pydantic), loadable from YAML with ``yaml.safe_load``.

Each config is small and explicit, like a diffusers constructor: what it holds is exactly what
is recorded next to the outputs it produced, so a run can be repeated from its record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from adsys.errors import InputError

C = TypeVar("C", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def digest(self) -> str:
        """sha256 of the canonical JSON form; identifies outputs made with this config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def load_yaml_config(cls: type[C], path: str | Path, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a YAML file (safe_load) plus ``overrides``; errors name the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read YAML config ({exc})", "fix the file's syntax") from exc
    if not isinstance(raw, dict):
        raise InputError(path, "a config file must hold a mapping of keys to values")
    raw.update(overrides or {})
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise InputError(path, f"invalid {cls.__name__}:\n{exc}", "correct the keys above") from exc


def deep_merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Later layers override earlier ones key by key; nested mappings merge recursively
    (a preset < a YAML file < flags). Inputs are not modified."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = value
    return out


def dotted_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[2, 3]"]`` → ``{"a": {"b": 1}, "c": [2, 3]}``; values are YAML."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InputError(None, f"--set {pair!r} is not KEY=VALUE", "write e.g. --set lr=3e-4")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return out


def error_line(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line: ``where: what`` for each problem, joined by ``; ``
    (``prefix`` goes before each location, e.g. ``"method_config."``)."""
    parts = []
    for err in exc.errors():
        where = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        what = what.removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)


GpuSetting = Literal["auto", "true", "false"]


def wants_gpu(setting: GpuSetting, gpus_needed: int = 1) -> bool:
    """Resolve a ``use_gpu`` setting: ``auto`` = the running Ray cluster has ``gpus_needed``
    GPUs (one per worker/actor), else the explicit choice."""
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) >= gpus_needed
    return setting == "true"


Normalization = Literal["percentile", "quantile", "max"]


class PreprocessConfig(StrictModel):
    """How a raw volume becomes a model input.

    Order of steps: optional N4 → (optional subject→template affine + resampling to
    ``spacing``, one interpolation) → brain mask → crop/pad to ``shape`` around the brain →
    intensity normalisation → background set to 0.

    Normalisation recipes (``normalization``):
      * ``percentile`` — the ``percentiles`` (default 1st, 99th) of intensities *inside the
        brain mask* map to 0 and 1, clipped to [0, 1] (cDDPM / pDDPM; default).
      * ``quantile`` — negatives clipped to 0, then the ``quantiles`` (default 0, 0.98) of the
        *whole volume, background included* map to 0 and 1, clipped (DISYRE).
      * ``max`` — negatives clipped to 0, divided by the volume maximum (UPD / ICDM).
    """

    spacing: float | tuple[float, float, float] = 1.0
    shape: tuple[int, int, int] | None = (160, 192, 160)
    template: Path | None = None
    interpolation: Literal["bspline", "linear"] = "bspline"
    mask_threshold: float = 0.0
    normalization: Normalization = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    quantiles: tuple[float, float] = (0.0, 0.98)
    n4: bool = False

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: float | tuple[float, float, float]) -> float | tuple[float, ...]:
        values = (v,) if isinstance(v, int | float) else v
        if any(s <= 0 for s in values):
            raise ValueError(f"spacing must be > 0 mm, got {v}")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and any(s < 1 for s in v):
            raise ValueError(f"shape must be positive voxel counts, got {v}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> PreprocessConfig:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}"
            )
        lo, hi = self.quantiles
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"quantiles must satisfy 0 <= lo < hi <= 1, got {self.quantiles}")
        return self

    @property
    def spacing3(self) -> tuple[float, float, float]:
        s = self.spacing
        return (float(s),) * 3 if isinstance(s, int | float) else tuple(float(v) for v in s)
