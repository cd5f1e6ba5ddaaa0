"""The methods, by name: one module each, registered with ``@register("name")``.

The registry is lazy (:class:`adsys.registry.Registry`): :func:`method_names` reads the
names from the modules' source and a method's module is imported only when it is used, so
importing :mod:`adsys.methods` does not import every method's dependencies. The contract a
method follows is :mod:`adsys.methods.base`; export and loading of trained models is
:mod:`adsys.methods.export`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adsys.errors import InputError
from adsys.registry import Registry

if TYPE_CHECKING:
    from adsys.methods.base import Method, MethodConfig

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "PRESET_NAMES",
    "Method",
    "MethodConfig",
    "MethodConfigError",
    "build_method",
    "method_class",
    "method_config",
    "method_names",
    "register",
]

PRESET_NAMES = ("smoke", "demo", "paper")
DEFAULT_METHOD = "cddpm"  # what `adsys train` trains when no method is named
METHODS: Registry[type[Method]] = Registry("method", "adsys.methods", "register")
register = METHODS.register


def __getattr__(name: str) -> Any:
    """``Method`` and ``MethodConfig`` from :mod:`adsys.methods.base`, imported on first use
    (it imports torch; the names of methods and presets do not need it)."""
    if name in ("Method", "MethodConfig"):
        return getattr(importlib.import_module("adsys.methods.base"), name)
    raise AttributeError(f"module 'adsys.methods' has no attribute {name!r}")


class MethodConfigError(InputError):
    """A method's configuration does not validate; one line naming the method and the keys."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(None, f"method {name!r}: {problem}",
                         f"see the keys of {name}'s config (adsys.methods.{name})")


def method_names() -> list[str]:
    """Every registered method name (nothing is imported)."""
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered as ``name`` (unknown names list the known)."""
    return METHODS.get(name)


def method_config(
    name: str, config: MethodConfig | dict[str, Any] | None = None, *, prefix: str = ""
) -> MethodConfig:
    """Method ``name``'s validated config from a (partial) dict of its keys, merged key by
    key onto the method's defaults (so ``{"data": {"min_brain_fraction": 0.1}}`` keeps the
    rest of the method's data spec).

    Raises :class:`MethodConfigError` in one line that names the method and each bad key
    (``prefix`` goes before the keys, e.g. ``"method_config."``).
    """
    from pydantic import BaseModel, ValidationError

    from adsys.config import deep_merge, error_line

    cls = method_class(name).config_cls
    data = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
    if data.get("method", name) != name:
        raise MethodConfigError(name, f"{prefix}method is {data['method']!r}")
    try:
        defaults = cls(method=name).model_dump(mode="json")
        return cls.model_validate(deep_merge(defaults, data, {"method": name}))
    except ValidationError as exc:
        raise MethodConfigError(name, error_line(exc, prefix)) from None


def build_method(name: str, config: MethodConfig | dict[str, Any] | None = None) -> Method:
    """Build method ``name`` from a (partial) config; see :func:`method_config`."""
    return method_class(name)(method_config(name, config))
