"""Typed settings, by owner, and the benchmark YAML read into them.

- ``TrainRecipe``: what the runner and Lightning's Trainer read (epoch budget, early stopping,
  refit, batch size, gradient clipping). A method states its paper's recipe as its class's
  ``recipe``; the benchmark YAML may override it.
- A method's ``Settings`` (a dataclass subclassing ``methods.base.ModelSettings``): what its
  network and optimiser read. A stacker's ``Settings``: what its combiner reads.
- ``BenchFile``: the top level of a ``benchmarks/*.yaml`` file.

YAML values are converted to the declared field types (so ``5e-4``, which YAML 1.1 reads as a
string, becomes a float); a value that does not convert, an unknown key and a string where a list
is expected are errors that name the file, the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class TrainRecipe:
    """The training recipe the runner owns (one per method; the YAML's ``hparams`` may override)."""

    max_epochs: int = 100  # epoch budget (with patience: the most epochs)
    patience: int | None = 20  # epochs without improvement before stopping; None: train max_epochs
    # What validation selects the epoch on: None = the corpus's primary metric, "loss" = val loss.
    monitor: str | None = None
    batch_size: int = 32
    gradient_clip_val: float | None = None  # gradient norm clipping (Lightning); None: off
    # After validation chose the epoch count, train a fresh model on train + val for that many
    # epochs (with patience None: on train + val for max_epochs).
    refit: bool = False


def recipe_keys() -> set[str]:
    return {f.name for f in fields(TrainRecipe)}


# --- conversion ---------------------------------------------------------------------------------
def _describe(annotation) -> str:
    if annotation is Any:
        return "any value"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def convert(value, annotation, where: str):
    """``value`` as ``annotation`` (bool, int, float, str, None, unions, list/tuple of X, dict, Any),
    or a SettingsError naming ``where``."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        # Exact types first, so True stays a bool under ``bool | dict`` and 3 an int under ``int | float``.
        for option in sorted((o for o in options if o is not type(None)), key=lambda o: not _exact(value, o)):
            try:
                return convert(value, option, where)
            except SettingsError:
                continue
        raise SettingsError(f"{where}: expected {_describe(annotation)}, got {value!r}")
    if annotation is type(None):
        if value is None:
            return None
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
            items = [convert(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            return dict(value)
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{where}: unsupported settings type {annotation!r}")
    raise SettingsError(f"{where}: expected {_describe(annotation)}, got {value!r}")


def _exact(value, annotation) -> bool:
    plain = typing.get_origin(annotation) or annotation
    return isinstance(plain, type) and type(value) is plain


def unknown_message(key: str, known, where: str, what: str) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"{where}: unknown {what} {key!r}{hint}"


def build(cls, values: dict | None, where: str, base=None):
    """An instance of dataclass ``cls`` from ``base`` (an instance, or the class defaults) updated
    with ``values``, each converted to its field's type."""
    values = values or {}
    if not isinstance(values, dict):
        raise SettingsError(f"{where}: expected a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            raise SettingsError(unknown_message(key, names, where, "setting"))
    converted = {k: convert(v, hints[k], f"{where}: {k}") for k, v in values.items()}
    return dataclasses.replace(base, **converted) if base is not None else cls(**converted)


def split_known(values: dict, known: set[str]) -> tuple[dict, dict]:
    return {k: v for k, v in values.items() if k in known}, {k: v for k, v in values.items() if k not in known}


# --- the benchmark file -------------------------------------------------------------------------
@dataclass
class TrainerSettings:
    devices: int | str = 1  # a count, "auto" or -1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1  # one job over several nodes (Lightning's SLURM environment under --launcher slurm)


@dataclass
class BenchFile:
    """The keys of a ``benchmarks/*.yaml`` file."""

    methods: list[str] | None = None  # method and stacker names; None: every compatible one
    folds: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    data_root: str | None = None
    corpus_options: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)  # method -> overrides of its settings and recipe
    inputs: dict = field(default_factory=dict)  # method -> {input name: extractor name}
    # Row name -> {"method": a registered method, its setting / recipe overrides}: the same
    # method run again as another leaderboard row (check_variants).
    variants: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)  # extractor name -> its parameters
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    loggers: list[str] = field(default_factory=lambda: ["csv", "wandb"])
    skip_missing: bool = False
    # Test-time condition names `mmer robustness` scores (features/perturb.py); None: every one.
    robustness: list[str] | None = None


def load_bench_file(path: Path | None, text: str | None = None) -> BenchFile:
    """Read and check a benchmark YAML (method names under ``hparams`` and ``inputs`` are checked
    against the registry later, by the planner, which names the file too)."""
    import yaml

    where = str(path) if path else "benchmark config"
    raw = yaml.safe_load(text if text is not None else Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{where}: expected a mapping of keys at the top level, got {raw!r}")
    trainer = build(TrainerSettings, raw.get("trainer"), f"{where}: trainer")
    bench = build(BenchFile, {k: v for k, v in raw.items() if k != "trainer"}, where)
    bench.trainer = trainer
    for key in ("hparams", "inputs", "features", "variants"):
        for name, value in getattr(bench, key).items():
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: {key}: {name}: expected a mapping, got {value!r}")
    check_variants(bench.variants, where)
    return bench


def check_variants(variants: dict, where: str) -> dict:
    """Check a benchmark's ``variants`` ({row name: {"method": base, **overrides}}): each a
    mapping naming a registered method (not a stacker, not another variant) under a row name that
    no registered method or stacker has. The overrides are checked against the base's settings
    when the planner resolves them. Returns ``variants``."""
    from mmer_bench.registry import METHODS, STACKERS  # lazily: the registry loads every method

    for name, value in variants.items():
        key = f"{where}: variants: {name}"
        if not isinstance(value, dict):
            raise SettingsError(f"{key}: expected a mapping with a 'method' key, got {value!r}")
        if name in METHODS.names() or name in STACKERS.names():
            raise SettingsError(f"{key}: {name!r} is the name of a registered method or stacker; a variant needs a "
                                f"row name of its own (e.g. '{name}+moddrop')")
        base = value.get("method")
        if not isinstance(base, str):
            raise SettingsError(f"{key}: method: expected the name of a registered method, got {base!r}")
        if base in STACKERS.names():
            raise SettingsError(f"{key}: method: {base!r} is a stacker; variants are of trained methods "
                                "(set a stacker's sources with its 'fuse' setting)")
        if base not in METHODS.names():
            raise SettingsError(unknown_message(base, METHODS.names(), f"{key}: method", "method"))
    return variants
