"""Typed, validated configurations (pydantic), loadable from YAML with ``yaml.safe_load``.

Each config is small and explicit, like a diffusers constructor: what it holds is exactly what
is recorded next to the outputs it produced, so a run can be repeated from its record.

This module holds the base (:class:`StrictModel`), the YAML loader and the ``use_gpu``
setting; each config lives with what it configures (e.g. :mod:`adsys.preprocess.config`).
"""

from __future__ import annotations

import copy
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


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML file holds (``yaml.safe_load``; empty file → ``{}``); errors name
    the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read YAML config ({exc})", "fix the file's syntax") from exc
    if not isinstance(raw, dict):
        raise InputError(path, "a config file must hold a mapping of keys to values")
    return raw


def load_yaml_config(cls: type[C], path: str | Path, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a YAML file (safe_load) plus ``overrides``; errors name the file."""
    raw = {**read_yaml(path), **(overrides or {})}
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise InputError(path, f"invalid {cls.__name__}:\n{exc}", "correct the keys above") from exc


def deep_merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Later layers override earlier ones key by key; nested mappings merge recursively
    (a preset < a YAML file < flags). The result shares nothing with the inputs, so
    editing it never changes a preset."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
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
