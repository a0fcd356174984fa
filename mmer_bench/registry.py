"""Name -> class registries for corpora, methods and feature extractors.

Modules register themselves with a decorator; ``load_builtins`` imports the built-in modules so
that every registry is complete before it is listed or looked up.
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
EXTRACTORS = Registry("extractor")

_BUILTIN_MODULES = (
    "mmer_bench.corpora.synthetic",
    "mmer_bench.corpora.ravdess",
    "mmer_bench.corpora.meld",
    "mmer_bench.corpora.mosei",
    "mmer_bench.corpora.cexprdb",
    "mmer_bench.corpora.merc2020",
    "mmer_bench.features.audio",
    "mmer_bench.features.audio_models",
    "mmer_bench.features.encoders",
    "mmer_bench.features.voice",
    "mmer_bench.features.face",
    "mmer_bench.features.text",
    "mmer_bench.features.text_frames",
    "mmer_bench.features.csd",
    "mmer_bench.features.video",
    "mmer_bench.methods.baselines",
    "mmer_bench.methods.frames",
    "mmer_bench.methods.lfan",
    "mmer_bench.methods.luna2022",
    "mmer_bench.methods.meld2019",
    "mmer_bench.methods.merc2020",
    "mmer_bench.methods.text_ft",
    "mmer_bench.methods.ssl",
    "mmer_bench.methods.williams2018",
)


def load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
