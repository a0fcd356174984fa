"""Jobs as data: the spec of one job, the planner that makes them and the entry that runs one.

A ``JobSpec`` is a small JSON-serialisable record (corpus, method, fold, seed, the resolved
configuration, its hash, the job folder, the jobs it reads). ``run_spec(spec)`` depends on the
spec alone and writes only the spec's folder, so a launcher may run it in this process (the
runner's default), a process pool or another machine. Two kinds: "train" (train.py, a Lightning
run) and "stack" (stacking.py, a late fusion of other jobs' posteriors; it depends on them).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mmer_bench
from mmer_bench.features.store import stable_hash
from mmer_bench.protocols import inner_folds
from mmer_bench.registry import CORPORA, EXTRACTORS, METHODS, STACKERS
from mmer_bench.results import write_text
from mmer_bench.settings import SettingsError, TrainRecipe, build, check_variants, unknown_message

log = logging.getLogger(__name__)

KINDS = ("train", "stack")


@dataclass(frozen=True)
class JobSpec:
    kind: str  # "train" | "stack"
    corpus: str
    method: str  # the row: a method or a variant's name (train; config["base_method"]: its class) or a stacker's
    fold: str
    seed: int
    config: dict  # resolved configuration (see plan_jobs); JSON values only
    config_hash: str
    out: str  # the job folder: the only place the job writes
    job_id: str  # "<row>/<fold>-seed<seed>"
    depends_on: tuple[str, ...] = field(default=())  # job_ids whose records this job reads

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> JobSpec:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        data["depends_on"] = tuple(data.get("depends_on", ()))
        return cls(**data)


# --- corpus and settings resolution ------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_corpus(name: str, data_root: str | None, options_json: str):
    """(corpus, manifest, folds), cached per process: the leakage check runs in ``plan``."""
    corpus = CORPORA.get(name)(data_root, **json.loads(options_json))
    manifest = corpus.manifest()
    return corpus, manifest, corpus.plan(manifest)


def corpus_of(config: dict):
    c = config["corpus"]
    return load_corpus(c["name"], c["data_root"], json.dumps(c["options"], sort_keys=True))


def fold_of(config: dict, name: str):
    corpus, manifest, folds = corpus_of(config)
    if corpus.manifest_hash(manifest) != config["manifest_hash"]:
        raise RuntimeError(f"the {corpus.name} data under {corpus.data_root} changed since the job was planned")
    inner = config.get("inner")
    if inner:  # a fold of the inner cross-validation of an outer fold's training subjects
        outer = next(f for f in folds if f.name == inner["outer"])
        return corpus, manifest, next(f for f in inner_folds_of(corpus, manifest, outer, inner) if f.name == name)
    return corpus, manifest, next(f for f in folds if f.name == name)


def inner_folds_of(corpus, manifest, outer, inner: dict) -> list:
    """The inner folds of ``outer`` (``inner``: {"folds": k, "split_seed": seed}), over the corpus's
    leakage unit (subjects, dialogues, videos; clips when it has none)."""
    group = corpus.group_columns[0] if corpus.group_columns else "clip_id"
    return inner_folds(manifest, outer, int(inner["folds"]), group, seed=int(inner["split_seed"]))


# --- leaderboard rows: registered methods and named variants of them -----------------------------
def base_method(name: str, variants: dict | None = None) -> str:
    """The registered method behind a row name: the name itself, or a variant's base method
    (``variants``: the benchmark's {row name: {"method": base, **overrides}})."""
    return (variants or {}).get(name, {}).get("method", name)


def method_class(row, variants: dict | None = None):
    """The registered class behind a row: a name (a method, or a variant in ``variants``) or a
    training JobSpec (whose config records its base method). Every lookup of a row's class goes
    through here, so a variant behaves as its base method everywhere."""
    if isinstance(row, JobSpec):
        return METHODS.get(row.config.get("base_method", row.method))
    return METHODS.get(base_method(row, variants))


def row_overrides(name: str, hparams: dict, variants: dict | None = None) -> dict:
    """A row's setting and recipe overrides. A variant takes its base's ``hparams:`` entry, then its
    own overrides from ``variants:``, then an ``hparams:`` entry under its own name, if any: so
    ``X+moddrop`` is X as this benchmark configures it, plus what the variant changes."""
    variant = (variants or {}).get(name)
    if variant is None:
        return dict(hparams.get(name) or {})
    own = {k: v for k, v in variant.items() if k != "method"}
    return {**(hparams.get(variant["method"]) or {}), **own, **(hparams.get(name) or {})}


def method_inputs(name: str, overrides: dict[str, dict] | None = None, available: set[str] | None = None,
                  variants: dict | None = None) -> dict[str, str]:
    """A method's input name -> extractor name: its class defaults, with the benchmark config's
    ``inputs`` overrides (which may only rename the extractor of an input the method has; a
    variant takes its base's, then its own). With ``available`` (the extractors a corpus offers),
    the method's ``optional_inputs`` whose features are not there are left out."""
    cls = method_class(name, variants)
    base = base_method(name, variants)
    override = {**(overrides or {}).get(base, {}), **((overrides or {}).get(name, {}) if base != name else {})}
    unknown = set(override) - set(cls.inputs)
    if unknown:
        raise ValueError(f"{name}: the benchmark config sets inputs {sorted(unknown)}, but the method's inputs "
                         f"are {sorted(cls.inputs)}")
    for extractor in override.values():
        EXTRACTORS.get(extractor)  # an unknown extractor fails here, with the known names
    inputs = {**cls.inputs, **override}
    if available is not None:
        inputs = {k: e for k, e in inputs.items() if e in available or k not in cls.optional_inputs}
    return inputs


def compatible_methods(corpus, manifest, overrides: dict[str, dict] | None = None,
                       variants: dict | None = None) -> list[str]:
    """Methods (and the benchmark's variants of them) whose features this manifest offers (and
    whose batches it can make), then the stackers that fit the corpus's tasks."""
    available = corpus.available_features(manifest)
    has_dialogues = corpus.dialogue_columns is not None
    rows = [name for name, _ in METHODS.items()] + list(variants or {})
    methods = [name for name in rows
               if set(method_inputs(name, overrides, available, variants).values()) <= available
               and (not method_class(name, variants).reads_dialogues or has_dialogues)]
    return methods + [name for name, cls in STACKERS.items() if cls.fits(corpus)]


def resolve_settings(name: str, overrides: dict | None, max_epochs: int | None = None, where: str = "",
                     variants: dict | None = None) -> dict:
    """The resolved settings of a method or variant ({"model": ..., "recipe": ...}) or a stacker
    ({"stacker": ...}), as JSON values."""
    if name in (variants or {}):
        where = f"{where}: variants: {name}" if where else f"variants: {name}"
    else:
        where = f"{where}: hparams: {name}" if where else f"hparams: {name}"
    if name in STACKERS.names():
        return {"stacker": asdict(build(STACKERS.get(name).Settings, overrides, where))}
    settings, recipe = method_class(name, variants).resolve(overrides, where)
    if max_epochs:
        recipe = build(TrainRecipe, {"max_epochs": max_epochs}, "--max-epochs", base=recipe)
    return {"model": asdict(settings), "recipe": asdict(recipe)}


def flat_hparams(settings: dict) -> dict:
    """One dict of every setting (job.json's ``hparams``; a model's constructor keywords)."""
    return {k: v for part in settings.values() for k, v in part.items()}


# --- the planner --------------------------------------------------------------------------------
def plan_jobs(cfg) -> list[JobSpec]:
    """corpus x method x fold x seed -> specs, training jobs first, then the stacking jobs that
    read them. ``cfg`` is a runner.BenchConfig. The corpus's leakage check runs here, before
    anything trains."""
    options = dict(cfg.corpus_options)
    load_corpus.cache_clear()  # a planner reads the data as it is now
    corpus, manifest, folds = load_corpus(cfg.corpus, cfg.data_root, json.dumps(options, sort_keys=True))
    where = cfg.config_file or "benchmark config"
    if cfg.folds:
        unknown = set(cfg.folds) - {f.name for f in folds}
        if unknown:
            raise ValueError(f"unknown folds {sorted(unknown)}; {corpus.name} has {[f.name for f in folds]}")
        folds = [f for f in folds if f.name in cfg.folds]
    variants = check_variants(dict(cfg.variants), where)
    known = METHODS.names() + STACKERS.names() + list(variants)
    for key in ("hparams", "inputs"):
        for name in getattr(cfg, key):
            if name not in known:
                raise SettingsError(unknown_message(name, known, f"{where}: {key}", "method"))
    compatible = compatible_methods(corpus, manifest, cfg.inputs, variants)
    names = cfg.methods or compatible
    for name in names:
        if name not in known:
            raise SettingsError(unknown_message(name, known, f"{where}: methods", "method"))
        if name not in compatible:
            if name in STACKERS.names():
                raise ValueError(f"{name} fuses class posteriors; {corpus.name} has tasks that are not classification")
            if method_class(name, variants).reads_dialogues and not corpus.dialogue_columns:
                raise ValueError(f"{name} reads whole dialogues; {corpus.name} has none")
            needs = sorted(method_inputs(name, cfg.inputs, corpus.available_features(manifest), variants).values())
            raise ValueError(f"{name} needs features {needs}; {corpus.name} here offers "
                             f"{sorted(corpus.available_features(manifest))}")
    methods = [n for n in names if n not in STACKERS.names()]  # registered methods and variants
    stackers = [n for n in names if n in STACKERS.names()]
    base = {
        "corpus": {"name": corpus.name, "data_root": cfg.data_root, "options": options},
        "manifest_hash": corpus.manifest_hash(manifest),
        "trainer": {"accelerator": cfg.accelerator, "devices": cfg.devices, "strategy": cfg.strategy,
                    "precision": cfg.precision, "num_nodes": cfg.num_nodes},
        "loggers": list(cfg.loggers), "skip_missing": cfg.skip_missing, "cache_dir": cfg.cache_dir,
        "workers": cfg.workers, "command": cfg.command, "run_out": str(cfg.out), "version": mmer_bench.__version__,
    }
    specs, method_jobs, inner_specs = [], {}, {}
    for name in methods + stackers:
        settings = resolve_settings(name, row_overrides(name, cfg.hparams, variants), cfg.max_epochs, where, variants)
        if name in STACKERS.names():
            sources = settings["stacker"]["fuse"] or methods
            if not sources:
                raise ValueError(f"{name} has no methods to fuse in this run")
            job = {**base, "settings": settings, "sources": list(sources)}
            if settings["stacker"].get("recipe") == "inner-cv":
                missing = [s for s in sources if s not in method_jobs]
                if missing:
                    raise ValueError(f"{name} fuses {missing}, which this run does not train")
                for fold in folds:
                    for seed in cfg.seeds:
                        inner = {"outer": fold.name, "folds": settings["stacker"]["inner_folds"], "split_seed": seed}
                        oof = {}
                        for source in sources:
                            source_job = {**method_jobs[source], "inner": inner}
                            for inner_fold in inner_folds_of(corpus, manifest, fold, inner):
                                job_id = f"{source}/inner/{inner_fold.name}-seed{seed}"
                                inner_specs[job_id] = JobSpec(
                                    "train", corpus.name, source, inner_fold.name, seed, source_job,
                                    config_hash(source, source_job, inner_fold, seed),
                                    str(Path(cfg.out) / "jobs" / job_id), job_id)
                                oof.setdefault(source, []).append(job_id)
                        job.setdefault("oof_jobs", {})[f"{fold.name}-seed{seed}"] = oof
        else:
            inputs = method_inputs(name, cfg.inputs, corpus.available_features(manifest), variants)
            cls = method_class(name, variants)
            check_modality_dropout(name, cls, inputs, settings, f"{where}: {'variants' if name in variants else 'hparams'}")
            job = {**base, "settings": settings, "inputs": inputs, "features": dict(cfg.features),
                   "dialogues": cls.reads_dialogues,
                   "overrides_inputs": name in cfg.inputs or base_method(name, variants) in cfg.inputs,
                   # the registered class the row trains (a variant's base), and what the variant changes
                   "base_method": cls.registry_name, "variant": variants.get(name)}
            method_jobs[name] = job
        for fold in folds:
            for seed in cfg.seeds:
                job_id = f"{name}/{fold.name}-seed{seed}"
                kind = "stack" if name in STACKERS.names() else "train"
                depends = tuple(f"{s}/{fold.name}-seed{seed}" for s in job.get("sources", ()))
                depends += tuple(i for ids in job.get("oof_jobs", {}).get(f"{fold.name}-seed{seed}", {}).values()
                                 for i in ids)
                specs.append(JobSpec(kind, corpus.name, name, fold.name, seed, job, config_hash(name, job, fold, seed),
                                     str(Path(cfg.out) / "jobs" / job_id), job_id, depends))
    # The inner-fold trainings (jobs/<method>/inner/, not merged into the results) run before the
    # stacking jobs that read them.
    first_stack = next((i for i, spec in enumerate(specs) if spec.kind == "stack"), len(specs))
    return specs[:first_stack] + list(inner_specs.values()) + specs[first_stack:]


def check_modality_dropout(name: str, cls, inputs: dict[str, str], settings: dict, where: str) -> None:
    """Refuse, before anything trains, modality dropout for a row that cannot take it: a method
    without a path for absent inputs, or one reading fewer than two modalities on this corpus."""
    if not settings["model"].get("modality_dropout"):
        return
    modalities = [g for g, names in cls.modality_groups().items() if set(names) & set(inputs)]
    if not cls.handles_absent_inputs:
        raise SettingsError(f"{where}: {name}: modality_dropout: {cls.registry_name} has no path for absent inputs "
                            "(handles_absent_inputs is False)")
    if len(modalities) < 2:
        raise SettingsError(f"{where}: {name}: modality_dropout: {cls.registry_name} reads only {modalities} here; "
                            "modality dropout needs two or more modalities")


def config_hash(name: str, job: dict, fold, seed: int) -> str:
    """What changes a job's numbers, and nothing else: other methods' settings do not enter it.
    A stacking job depends on which methods it fuses: a run adding a method must redo it."""
    hp = flat_hparams(job["settings"])
    key = {"corpus": job["corpus"]["name"], "options": job["corpus"]["options"], "method": name, "hp": hp,
           "fold": [fold.train, fold.val, fold.test], "seed": seed, "precision": job["trainer"]["precision"],
           "manifest": job["manifest_hash"], "version": job["version"]}
    if "sources" not in job:
        # How the job is spread changes its numbers: DDP over N devices x nodes trains with an
        # N times larger effective batch (each rank takes batch_size clips) and other shuffles.
        trainer = job["trainer"]
        key["trainer"] = {k: trainer.get(k, 1 if k == "num_nodes" else None)
                          for k in ("devices", "strategy", "num_nodes")}
        key["effective_batch_size"] = effective_batch_size(hp.get("batch_size"), trainer)
    if "sources" in job:
        key["fused"] = job["sources"]
        return stable_hash(key)
    features = {e: job["features"][e] for e in sorted(set(job["inputs"].values())) if e in job["features"]}
    if job["overrides_inputs"]:
        key["inputs"] = job["inputs"]
    if features:
        key["features"] = features
    return stable_hash(key)


def effective_batch_size(batch_size, trainer: dict):
    """Clips per optimiser step: batch_size on each of devices x nodes ranks (a count of devices;
    "auto" / -1 stay symbolic, since what they resolve to depends on the machine)."""
    devices = trainer.get("devices", 1)
    if batch_size is None or not isinstance(devices, int) or devices < 1:
        return f"{batch_size} x {devices} x {trainer.get('num_nodes', 1)}"
    return batch_size * devices * int(trainer.get("num_nodes", 1))


# --- running one job ----------------------------------------------------------------------------
def rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))


# keys of a job's config that say where and how it ran, not what it computes: left out of the
# message, which lists only differences that can explain another config hash
_RUN_CONTEXT = {"command", "run_out", "loggers", "workers", "cache_dir"}


def _what_differs(job_dir: Path, spec: JobSpec) -> str:
    """": " and the settings of the finished job in ``job_dir`` that differ from ``spec``'s
    (dotted keys, then -> now), for the error message; "" when job.json cannot tell."""
    try:
        old = json.loads((job_dir / "job.json").read_text())["job"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""

    def differences(a, b, prefix=""):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if not prefix and key in _RUN_CONTEXT:
                    continue
                yield from differences(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix[:-1]}: {str(a)[:60]} -> {str(b)[:60]}"

    found = list(differences(old, spec.config))
    if not found:
        return ""
    if old.get("manifest_hash") != spec.config.get("manifest_hash"):
        found.append("(the manifest hash covers each media file's path as the data root spells it, its size "
                     "and any transcript: the same data under another spelling of --data-root counts as changed)")
    return ": " + "; ".join(found[:6])


def run_spec(spec: JobSpec | str | dict) -> dict:
    """Run one job from its spec (a JobSpec, its JSON or its dict) and return its outcome:
    {"job_id", "status": "done" | "skipped" | "failed", "error"}. A finished job with the same
    config hash is skipped; a failure writes FAILED in the job folder and is returned, not raised
    (except on non-zero DDP ranks, which must fail together)."""
    if not isinstance(spec, JobSpec):
        spec = JobSpec.from_json(spec)
    job_dir = Path(spec.out)
    done = job_dir / "DONE"
    if done.exists():
        if json.loads(done.read_text())["config_hash"] == spec.config_hash:
            log.info("skip finished job %s", spec.job_id)
            return {"job_id": spec.job_id, "status": "skipped", "error": None}
        if spec.kind == "train":
            raise RuntimeError(
                f"{job_dir} holds a finished job with another configuration (corpus data, hyperparameters "
                f"or code version changed{_what_differs(job_dir, spec)}); use a new --out directory or delete "
                "that job folder")
        done.unlink()  # a stacking job is derived from other jobs' predictions: redo it when they change
    log.info("run %s", spec.job_id)
    try:
        if spec.kind == "train":
            from mmer_bench.train import run_train

            run_train(spec)
        elif spec.kind == "stack":
            from mmer_bench.stacking import run_stack

            run_stack(spec)
        else:
            raise ValueError(f"unknown job kind {spec.kind!r}; kinds: {KINDS}")
    except Exception as exc:
        if rank() != 0:
            raise
        write_text(job_dir / "FAILED", traceback.format_exc())
        log.error("job %s failed: %s", spec.job_id, exc)
        return {"job_id": spec.job_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"job_id": spec.job_id, "status": "done", "error": None}
