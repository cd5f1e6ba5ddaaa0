"""Typed, validated configurations (pydantic), loadable from YAML with ``yaml.safe_load``.

Each config is small and explicit, like a diffusers constructor: what it holds is exactly what
is recorded next to the outputs it produced, so a run can be repeated from its record.

This module holds the base (:class:`StrictModel`), the YAML loader and the ``use_gpu``
setting; each config lives with what it configures (e.g. :mod:`adsys.preprocess.config`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

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


GpuSetting = Literal["auto", "true", "false"]


def wants_gpu(setting: GpuSetting, gpus_needed: int = 1) -> bool:
    """Resolve a ``use_gpu`` setting: ``auto`` = the running Ray cluster has ``gpus_needed``
    GPUs (one per worker/actor), else the explicit choice."""
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) >= gpus_needed
    return setting == "true"
