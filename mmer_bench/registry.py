"""Name -> class registries for corpora, methods, stackers and feature extractors.

Modules register themselves with a decorator. The registry knows no concrete module: it asks
each plugin package (``PACKAGES``) to import its own modules (the package's ``register_all``)
before a registry is listed or looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorate(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            obj.registry_name = name
            return obj

        return decorate

    def get(self, name: str) -> Any:
        load_builtins()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        load_builtins()
        return sorted(self._entries.items())


CORPORA = Registry("corpus")
METHODS = Registry("method")
STACKERS = Registry("stacker")  # late fusion of other methods' posteriors (stacking.py runs them)
EXTRACTORS = Registry("extractor")

# Packages whose ``register_all()`` imports their modules; a new module adds one line there.
PACKAGES = ("mmer_bench.corpora", "mmer_bench.features", "mmer_bench.methods")
_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for package in PACKAGES:
        importlib.import_module(package).register_all()
    _loaded = True


def registered_modules() -> set[str]:
    """The modules that registered something (what each package's ``register_all`` imported)."""
    load_builtins()
    return {obj.__module__ for registry in (CORPORA, METHODS, STACKERS, EXTRACTORS) for _, obj in registry.items()}
