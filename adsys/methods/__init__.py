"""Methods by name: each module has ``build(config)``; models have ``training_loss`` and
``restore``. ``build_method(name, config)`` and ``load_config(dict)`` dispatch on the name."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from adsys.methods import cddpm, ddpm

REGISTRY: dict[str, ModuleType] = {"ddpm": ddpm, "cddpm": cddpm}


def build_method(name: str, config: dict[str, Any] | None = None):
    """Build method ``name`` from a (partial) config dict; unknown names list the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name].build({**(config or {}), "method": name})


__all__ = ["REGISTRY", "build_method"]
