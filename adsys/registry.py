"""Lazy registries by name: methods, online corruptions.

A module registers an object with ``@registry.register("name")``. To name what exists without
importing every module (and its dependencies), a :class:`Registry` reads its package's source
files (its subpackages' too) once for those decorator lines and maps each name to its module;
:meth:`Registry.get` imports only that module. So adding a method (or a corruption) is adding one
file. Objects registered from elsewhere at run time (``registry.register("x")(obj)``) join the
table too.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no module of the registry registers; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Names → objects of one ``kind``, registered in the modules of ``package``.

    Args:
        kind: what is registered (for messages: "method", "corruption").
        package: the package whose modules, subpackages' included, hold the
            ``@<attribute>.register("name")`` or ``@<decorator>("name")`` lines.
        decorator: the decorator's name as written in those modules (e.g. ``"register"``).
    """

    def __init__(self, kind: str, package: str, decorator: str) -> None:
        self.kind, self.package = kind, package
        self._pattern = re.compile(
            rf"^@(?:\w+\.)?{re.escape(decorator)}\(\s*[\"']([A-Za-z0-9_.-]+)[\"']", re.M
        )
        self._objects: dict[str, T] = {}

    @functools.cached_property
    def _modules(self) -> dict[str, str]:
        """Name → module path, from the package's source files (read once)."""
        spec = importlib.util.find_spec(self.package)
        found: dict[str, str] = {}
        for folder in spec.submodule_search_locations or []:
            for path in sorted(Path(folder).rglob("*.py")):
                parts = path.relative_to(folder).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                for name in self._pattern.findall(path.read_text(encoding="utf-8")):
                    if name in found:
                        raise RuntimeError(f"{self.kind} {name!r} is registered twice")
                    found[name] = ".".join((self.package, *parts))
        return found

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name``."""

        def wrap(obj: T) -> T:
            if self._objects.get(name, obj) is not obj:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._objects[name] = obj
            return obj

        return wrap

    def names(self) -> list[str]:
        """Every registered name, sorted (nothing is imported)."""
        return sorted(set(self._modules) | set(self._objects))

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing its module on first use."""
        if name not in self._objects and name in self._modules:
            importlib.import_module(self._modules[name])
        try:
            return self._objects[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None
