"""Scoring trained models under test-time conditions (features/perturb.py), without retraining.

The model, its fold, its scalers (fitted on its training clips) and its validation choice stay as
they were; only the test part's inputs change: perturbed media go through the same extractors,
a removed modality arrives as an absent input (all-false mask). The rules:

- a condition on a modality the method does not read leaves it ``unaffected`` (not scored: its
  score is the clean one);
- a removal that takes away every input of a method, or an input of a method that has no path for
  absent inputs (``handles_absent_inputs`` False), gives ``n/a``: never a score computed on the
  placeholder zeros;
- a perturbation that cannot act on a feature (frames dropped from a table of per-clip means)
  gives ``not applicable``;
- a stacker (posterior fusion) fuses the sources' test posteriors under the condition (clean for
  sources the condition does not touch); sources that are ``n/a`` are left out and the stacker is
  refitted on the training posteriors of the sources it still has (training clips are clean, so
  nothing of the test part is used); with no source left it is ``n/a``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.data import CorpusDataModule
from mmer_bench.features import perturb
from mmer_bench.features.perturb import Condition, NotApplicable
from mmer_bench.features.store import FeatureSet
from mmer_bench.fusion import Stacker, align
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)

SCORED, NA, UNAFFECTED, NOT_APPLICABLE = "scored", "n/a", "unaffected", "not applicable"
CONDITION_SEED = 0  # the base seed of every perturbation (perturb.clip_seed)


def _test_part(corpus, manifest: pd.DataFrame, fold) -> tuple[pd.DataFrame, str]:
    """The fold's test clips and their manifest hash (the perturbed features' store key reads it)."""
    test_manifest = manifest[manifest["clip_id"].isin(set(fold.test))].reset_index(drop=True)
    return test_manifest, corpus.manifest_hash(test_manifest)


class ConditionDataModule(CorpusDataModule):
    """A fold's data module whose test part is under ``condition``; train and val (and the
    scalers fitted on train) are exactly the clean ones."""

    def __init__(self, *args, condition: Condition, condition_seed: int = CONDITION_SEED, **kwargs):
        super().__init__(*args, **kwargs)
        self.condition, self.condition_seed = condition, condition_seed

    def features(self) -> dict[str, FeatureSet]:
        clean = super().features()
        test_ids = set(self.fold.test)
        test_manifest, test_hash = _test_part(self.corpus, self.manifest, self.fold)
        out = {}
        for name, extractor_name in self.inputs.items():
            extractor = EXTRACTORS.get(extractor_name)(**self.extractor_params.get(extractor_name, {}))
            if not perturb.applies(self.condition, extractor):
                out[name] = clean[name]
                continue
            changed = perturb.perturbed_features(self.condition, extractor, test_manifest, test_hash, self.store,
                                                 clean[name], self.condition_seed, self.workers)
            arrays = {c: a for c, a in clean[name].arrays.items() if c not in test_ids}
            errors = {c: e for c, e in clean[name].errors.items() if c not in test_ids}
            if changed is None:  # removed: absent for every test clip (setup gives an all-false mask)
                arrays.update({c: None for c in test_ids})
            else:
                arrays.update({c: a for c, a in changed.arrays.items() if c in test_ids})
                errors.update({c: e for c, e in changed.errors.items() if c in test_ids})
            out[name] = FeatureSet(arrays, errors)
        return out


def condition_status(method_cls, inputs: dict[str, str], condition: Condition,
                     extractor_params: dict[str, dict] | None = None) -> tuple[str, str]:
    """(status, reason) of a trained method under a condition, before anything is computed."""
    # The extractor classes declare their source: nothing is built (some load models when built).
    hit = [name for name, e in inputs.items() if perturb.applies(condition, EXTRACTORS.get(e))]
    if not hit:
        return UNAFFECTED, f"reads no {condition.modality} input"
    if condition.removes:
        if len(hit) == len(inputs):
            return NA, f"its only modality ({condition.modality}) is removed"
        if not getattr(method_cls, "handles_absent_inputs", False):
            return NA, f"has no path for an absent {condition.modality} input"
    return SCORED, f"inputs {hit} under {condition.name}"


def evaluate_condition(model, corpus, manifest, fold, inputs: dict[str, str], scaling: dict[str, str], store,
                       condition: Condition, batch_size: int = 32, extractor_params: dict | None = None,
                       skip_missing: bool = False, workers: int | None = None, dialogues: bool = False,
                       condition_seed: int = CONDITION_SEED) -> tuple[str, str, dict | None]:
    """(status, reason, test predictions {task: {clip_id, probs, target}} or None) of a trained
    model on its fold's test part under the condition. ``fold`` is the fold the model's scalers
    were fitted on (train + val when it was refit)."""
    from mmer_bench.train import predict  # the training job's prediction loop, so clean scores match exactly

    status, reason = condition_status(type(model), inputs, condition, extractor_params)
    if status != SCORED:
        return status, reason, None
    dm = ConditionDataModule(corpus, manifest, fold, inputs, scaling, store, batch_size=batch_size,
                             skip_missing=skip_missing, workers=workers, extractor_params=extractor_params,
                             dialogues=dialogues, condition=condition, condition_seed=condition_seed)
    try:
        dm.setup()
    except NotApplicable as exc:
        return NOT_APPLICABLE, str(exc), None
    return SCORED, reason, predict(model, dm.part_dataloader("test"))


def stack_condition(task, sources: dict[str, tuple[str, pd.DataFrame, pd.DataFrame | None]], train_labels: pd.Series,
                    stacker=None, seed: int = 0) -> tuple[str, str, np.ndarray | None, list[str]]:
    """The stacker under a condition. ``sources``: name -> (status, clean training posteriors,
    test posteriors under the condition or clean when unaffected, None when n/a); posterior frames
    have ``clip_id`` and one column per class. Returns (status, reason, test probabilities in the
    order of the aligned test clips, the test clip ids)."""
    kept = {name: s for name, s in sources.items() if s[0] in (SCORED, UNAFFECTED)}
    if not kept:
        return NA, "no fused source is left under this condition", None, []
    dropped = sorted(set(sources) - set(kept))
    if all(s[0] == UNAFFECTED for s in kept.values()) and not dropped:
        return UNAFFECTED, "no fused source is affected", None, []
    train = align({n: s[1] for n, s in kept.items()}, task.classes, "train")
    test = align({n: s[2] for n, s in kept.items()}, task.classes, "test")
    stacker = stacker or Stacker()
    probs = stacker.fit_predict(train, train_labels.loc[train.index].to_numpy(), {"test": test}, seed=seed)["test"]
    reason = f"fuses {sorted(kept)}" + (f"; refitted without {dropped} (n/a)" if dropped else "")
    return SCORED, reason, probs, list(test.index)


# --- a run's finished jobs under every condition (`mmer robustness RUN_DIR`) -------------------
ROBUSTNESS_FILE = "robustness.parquet"  # per job folder and, merged, per run
CONDITION_PREDICTIONS = "robustness_predictions.parquet"  # per job: test posteriors per condition
EXTRA_COLUMNS = ["condition", "condition_version", "status", "reason"]


def _job_dirs(run_dir: Path) -> list[Path]:
    return [d for d in sorted(run_dir.glob("jobs/*/*")) if (d / "DONE").exists() and (d / "job.json").exists()]


def _load_context(job_dir: Path, data_root: str | None):
    """(the job's spec, corpus, manifest, fold, the fold its scalers were fitted on, store)."""
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.jobs import JobSpec, fold_of
    from mmer_bench.protocols import Fold

    details = json.loads((job_dir / "job.json").read_text())
    if "job" not in details:
        raise RobustnessError(f"{job_dir}: job.json holds no job spec (a job from before jobs were specs): re-run "
                              "the benchmark into a new --out")
    spec = JobSpec.from_json(details["job"])
    config = spec.config
    if data_root is not None:
        config = {**config, "corpus": {**config["corpus"], "data_root": data_root}}
    corpus, manifest, fold = fold_of(config, spec.fold)  # refuses data that changed since training
    refit = spec.kind == "train" and spec.config["settings"]["recipe"]["refit"]
    trained = Fold(fold.name, fold.train + fold.val, fold.val, fold.test, fold.info) if refit else fold
    cache_dir = config.get("cache_dir")
    store = FeatureStore(Path(cache_dir) / "features" if cache_dir else None)
    return spec, corpus, manifest, fold, trained, store


class RobustnessError(RuntimeError):
    """A run cannot be scored under conditions; the message names the job folder and why."""


def _provenance(job_dir: Path) -> dict:
    results = pd.read_parquet(job_dir / "results.parquet")
    first = results.iloc[0].to_dict()
    return {k: v for k, v in first.items() if k not in ("split", "task", "metric", "value")}


def _rows(key: dict, condition: Condition, status: str, reason: str, tasks, predictions: dict | None) -> list[dict]:
    base = {**key, "split": "test", "condition": condition.name, "condition_version": condition.version,
            "status": status, "reason": reason}
    if predictions is None:
        return [{**base, "task": t.name, "metric": None, "value": float("nan")} for t in tasks]
    return [{**base, "task": t.name, "metric": metric, "value": value}
            for t in tasks for metric, value in t.scores(predictions[t.name]["probs"], predictions[t.name]["target"]).items()]


def _job_hash(job_dir: Path) -> str | None:
    return json.loads((job_dir / "DONE").read_text()).get("config_hash")


def _current_records(job_dir: Path) -> pd.DataFrame | None:
    """The job's robustness records of its current model: a stacking job re-run since it was
    scored (its sources changed) keeps the old records on disk, and they must not count."""
    path = job_dir / ROBUSTNESS_FILE
    if not path.exists():
        return None
    table = pd.read_parquet(path)
    return table[table["config_hash"] == _job_hash(job_dir)]


def _done(job_dir: Path) -> set[tuple[str, str]]:
    table = _current_records(job_dir)
    if table is None:
        return set()
    return set(zip(table["condition"], table["condition_version"]))


def _append(job_dir: Path, rows: list[dict], preds: list[pd.DataFrame]) -> None:
    from mmer_bench.results import write_parquet

    # Records of an earlier model of this job folder (a stacking job re-run since it was scored)
    # give way entirely, predictions included; else only those of the conditions scored again.
    records = job_dir / ROBUSTNESS_FILE
    earlier_model = records.exists() and not (
        pd.read_parquet(records, columns=["config_hash"])["config_hash"] == _job_hash(job_dir)).all()
    for name, new in ((ROBUSTNESS_FILE, pd.DataFrame(rows)), (CONDITION_PREDICTIONS, pd.concat(preds) if preds else None)):
        if new is None or new.empty:
            continue
        path = job_dir / name
        old = pd.read_parquet(path) if path.exists() and not earlier_model else None
        if old is not None:
            old = old[~old["condition"].isin(set(new["condition"]))]
        write_parquet(pd.concat([old, new], ignore_index=True) if old is not None else new, path)


def score_training_job(job_dir: Path, conditions: list[Condition], data_root: str | None = None,
                       workers: int | None = None) -> int:
    """Score one finished training job under the conditions it has not been scored under;
    returns how many conditions were added. Results go to the job's robustness.parquet."""
    import torch

    from mmer_bench.jobs import flat_hparams, method_class
    from mmer_bench.train import CHECKPOINT

    todo = [c for c in conditions if (c.name, c.version) not in _done(job_dir)]
    if not todo:
        return 0
    spec, corpus, manifest, fold, trained, store = _load_context(job_dir, data_root)
    cls = method_class(spec)  # a variant's base class (handles_absent_inputs, scaling)
    checkpoint = job_dir / CHECKPOINT
    if not checkpoint.exists():
        raise RobustnessError(f"{job_dir}: no {CHECKPOINT} (the job finished before checkpoints were kept): "
                              "re-run the benchmark into a new --out")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = cls(corpus.tasks, state["input_dims"], state["class_counts"], **flat_hparams(spec.config["settings"]))
    model.load_state_dict(state["state_dict"])
    config = spec.config
    key = {**_provenance(job_dir), "corpus": corpus.name, "method": spec.method, "fold": fold.name, "seed": spec.seed}
    rows, preds = [], []
    for condition in todo:
        status, reason, predictions = evaluate_condition(
            model, corpus, manifest, trained, config["inputs"], cls.scaling, store, condition,
            batch_size=config["settings"]["recipe"]["batch_size"], extractor_params=config["features"],
            skip_missing=config["skip_missing"], workers=workers, dialogues=config["dialogues"])
        log.info("%s %s: %s (%s)", spec.job_id, condition.name, status, reason)
        rows += _rows(key, condition, status, reason, corpus.tasks, predictions)
        for task, p in (predictions or {}).items():
            preds.append(pd.DataFrame({"condition": condition.name, "task": task, "clip_id": p["clip_id"],
                                       "probs": list(np.asarray(p["probs"], np.float32)),
                                       "target": np.asarray(p["target"]).tolist()}))
    _append(job_dir, rows, preds)
    return len(todo)


def score_stacking_job(job_dir: Path, conditions: list[Condition], data_root: str | None = None) -> int:
    """A stacking job under each condition, from its sources' records (see ``stack_condition``)."""
    todo = [c for c in conditions if (c.name, c.version) not in _done(job_dir)]
    if not todo:
        return 0
    from mmer_bench.registry import STACKERS

    spec, corpus, manifest, fold, _, _ = _load_context(job_dir, data_root)
    run_jobs = job_dir.parent.parent
    sources = {s: run_jobs / job_id for s, job_id in zip(spec.config["sources"], spec.depends_on)}
    cls = STACKERS.get(spec.method)
    stacker = cls(cls.Settings(**spec.config["settings"]["stacker"]))
    task = corpus.tasks[0]
    labels = manifest.set_index("clip_id")[task.name]
    clean = {s: pd.read_parquet(d / "predictions.parquet") for s, d in sources.items()}
    rob = {s: pd.read_parquet(d / ROBUSTNESS_FILE) if (d / ROBUSTNESS_FILE).exists() else None for s, d in sources.items()}
    rob_preds = {s: pd.read_parquet(d / CONDITION_PREDICTIONS) if (d / CONDITION_PREDICTIONS).exists() else None
                 for s, d in sources.items()}

    def frame(rows):
        return pd.DataFrame(np.stack(rows["probs"].to_numpy()), columns=list(task.classes)).assign(
            clip_id=rows["clip_id"].to_numpy())

    key = {**_provenance(job_dir), "corpus": corpus.name, "method": spec.method, "fold": fold.name, "seed": spec.seed}
    rows, preds = [], []
    # The stacker's own training posteriors: out-of-fold ones of the inner-fold jobs ("inner-cv"),
    # else the sources' posteriors of their training clips (stacking.py reads the same).
    fit_on = {}
    if spec.config["settings"]["stacker"].get("recipe", "in-sample") == "inner-cv":
        for s, job_ids in spec.config["oof_jobs"][f"{fold.name}-seed{spec.seed}"].items():
            tables = [pd.read_parquet(run_jobs / j / "predictions.parquet") for j in job_ids]
            out_of_fold = pd.concat([t[(t["split"] == "test") & (t["task"] == task.name)] for t in tables],
                                    ignore_index=True)
            fit_on[s] = frame(out_of_fold)
    for condition in todo:
        inputs = {}
        for s in sources:
            table = clean[s]
            train = fit_on[s] if s in fit_on else frame(table[(table["split"] == "train") & (table["task"] == task.name)])
            mine = rob[s][rob[s]["condition"] == condition.name] if rob[s] is not None else pd.DataFrame()
            if mine.empty:
                raise RobustnessError(f"{sources[s]}: not scored under {condition.name} yet (score the training "
                                      "jobs before the stacking jobs)")
            status = mine["status"].iloc[0]
            if status == SCORED:
                p = rob_preds[s]
                test = frame(p[(p["condition"] == condition.name) & (p["task"] == task.name)])
            elif status == UNAFFECTED:
                test = frame(table[(table["split"] == "test") & (table["task"] == task.name)])
            else:
                test = None
            inputs[s] = (status, train, test)
        if any(v[0] == NOT_APPLICABLE for v in inputs.values()):
            status, reason, probs, ids = NOT_APPLICABLE, "a fused source cannot take this condition", None, []
        else:
            status, reason, probs, ids = stack_condition(task, inputs, labels, stacker, seed=spec.seed)
        predictions = ({task.name: {"clip_id": ids, "probs": probs, "target": labels.loc[ids].to_numpy()}}
                       if probs is not None else None)
        rows += _rows(key, condition, status, reason, [task], predictions)
        if predictions:
            preds.append(pd.DataFrame({"condition": condition.name, "task": task.name, "clip_id": ids,
                                       "probs": list(np.asarray(probs, np.float32)),
                                       "target": labels.loc[ids].to_numpy().tolist()}))
    _append(job_dir, rows, preds)
    return len(todo)


def default_conditions(run_dir: Path) -> list[Condition]:
    """Every condition (a condition that touches no method of the run only adds 'unaffected' rows)."""
    return list(perturb.CONDITIONS.values())


# --- scoring through the launchers (one unit per finished job) -----------------------------------
UNIT_DIR = "robustness"  # inside a job folder: the unit's lock, HOLDER, DONE, FAILED and log
LAUNCH_DIR = "robustness-launch"  # inside the run folder: the launcher's plan (and SLURM logs)


@dataclass(frozen=True)
class ScoringUnit:
    """One finished job to score under ``conditions``: a launcher spec (launchers.py), picklable.
    It writes only its job folder's robustness.parquet and robustness_predictions.parquet (and
    its marker folder ``<job>/robustness/``); a stacking unit runs after its sources' units."""

    job_id: str  # the job's own id, "<method>/<fold>-seed<seed>"
    kind: str  # train | stack
    job_dir: str
    conditions: tuple[str, ...]
    config_hash: str  # of the conditions and their versions: DONE of another set does not count
    out_dir: str  # <job_dir>/robustness
    depends_on: tuple[str, ...] = ()
    data_root: str | None = None
    workers: int | None = None


def run_unit(unit: ScoringUnit) -> dict:
    """Score one job (the launchers' run function), then mark the unit done."""
    from mmer_bench.results import write_text

    conditions = [perturb.get_condition(c) for c in unit.conditions]
    if unit.kind == "stack":
        added = score_stacking_job(Path(unit.job_dir), conditions, unit.data_root)
    else:
        added = score_training_job(Path(unit.job_dir), conditions, unit.data_root, unit.workers)
    write_text(Path(unit.out_dir) / "DONE", json.dumps({"config_hash": unit.config_hash}))
    return {"conditions_added": added}


def plan_units(run_dir: Path, conditions: list[Condition], data_root: str | None = None,
               workers: int | None = None) -> list[ScoringUnit]:
    """A unit per finished job of the run, training jobs first, each stacking job depending on the
    units of its sources."""
    from mmer_bench.features.store import stable_hash

    jobs = _job_dirs(run_dir)
    if not jobs:
        raise RobustnessError(f"{run_dir}: no finished job (jobs/<method>/<fold>-seed<seed>/DONE)")
    names = tuple(c.name for c in conditions)
    digest = stable_hash(sorted((c.name, c.version) for c in conditions))
    specs = {d: json.loads((d / "job.json").read_text()).get("job", {}) for d in jobs}
    ids = {d: f"{d.parent.name}/{d.name}" for d in jobs}
    units = []
    for d in sorted(jobs, key=lambda d: specs[d].get("kind") == "stack"):
        unit = ScoringUnit(ids[d], "stack" if specs[d].get("kind") == "stack" else "train", str(d), names, digest,
                           str(d / UNIT_DIR), tuple(s for s in specs[d].get("depends_on", ()) if s in ids.values()),
                           data_root, workers)
        if {(c.name, c.version) for c in conditions} - _done(d):
            # Its records lack a condition its DONE claims (the records were deleted or replaced):
            # the unit runs again and adds only what is missing.
            (d / UNIT_DIR / "DONE").unlink(missing_ok=True)
        units.append(unit)
    return units


def prepare_conditions(units: list[ScoringUnit], conditions: list[Condition], workers: int | None = None) -> int:
    """Extract, here and once, every perturbed feature set the units will read, so that units
    running side by side never extract the same key (the runner's ``prepare_features`` for the
    clean ones). Returns how many entries were extracted. A condition that cannot act on a feature
    is left to the unit, which records it."""
    from mmer_bench.features.base import extract
    from mmer_bench.jobs import method_class

    seen: set = set()
    clean_sets: dict = {}
    extracted = 0
    for unit in units:
        if unit.kind != "train":
            continue
        job_dir = Path(unit.job_dir)
        todo = [c for c in conditions if (c.name, c.version) not in _done(job_dir)]
        if not todo:
            continue
        spec, corpus, manifest, fold, _, store = _load_context(job_dir, unit.data_root)
        config = spec.config
        cls = method_class(spec)  # a variant: its base class
        manifest_hash = corpus.manifest_hash(manifest)
        test_manifest, test_hash = _test_part(corpus, manifest, fold)
        scored = [c for c in todo if condition_status(cls, config["inputs"], c)[0] == SCORED]
        extractors = [EXTRACTORS.get(e)(**config["features"].get(e, {})) for e in sorted(set(config["inputs"].values()))]
        if scored:  # the clean features the unit reads: in the store since the bench, as a rule
            for extractor in extractors:
                clean_key = (str(store.root), extractor.name, extractor.cache_key(manifest_hash))
                if clean_key not in seen and not store.has(extractor.name, clean_key[2]):
                    extract(extractor, manifest, manifest_hash, store, workers)
                seen.add(clean_key)
        for condition in scored:
            if condition.removes:
                continue
            for extractor in extractors:
                if not perturb.applies(condition, extractor):
                    continue
                key = extractor.cache_key(test_hash, perturbation=condition.key(CONDITION_SEED))
                if (str(store.root), extractor.name, key) in seen:
                    continue
                seen.add((str(store.root), extractor.name, key))
                clean_key = (str(store.root), extractor.name, extractor.cache_key(manifest_hash))
                if clean_key not in clean_sets:  # read back from the store
                    clean_sets[clean_key] = extract(extractor, manifest, manifest_hash, store, workers)
                if not store.has(extractor.name, key):
                    log.info("extracting %s under %s for %s %s", extractor.name, condition.name, corpus.name, fold.name)
                try:  # a stored entry is read back and verified here (a damaged one is extracted again)
                    perturb.perturbed_features(condition, extractor, test_manifest, test_hash, store,
                                               clean_sets[clean_key], CONDITION_SEED, workers)
                except NotApplicable:
                    continue
                extracted += 1
    return extracted


def merge_run(run_dir: Path, job_dirs: list[Path]) -> pd.DataFrame:
    """Every job's records in one RUN_DIR/robustness.parquet, written under the run's merge lock.
    Every condition the jobs were scored under (earlier calls with other --conditions too), in its
    current version: records of a condition since changed are left out, not mixed in."""
    from mmer_bench.collect import merge_lock
    from mmer_bench.results import write_parquet

    with merge_lock(run_dir):
        frames = [t for t in (_current_records(d) for d in job_dirs) if t is not None and not t.empty]
        if not frames:
            raise RobustnessError(f"{run_dir}: no job holds robustness records")
        merged = pd.concat(frames, ignore_index=True)
        current = {(c.name, c.version) for c in perturb.CONDITIONS.values()}
        merged = merged[[(c, v) in current for c, v in zip(merged["condition"], merged["condition_version"])]]
        merged = merged.reset_index(drop=True)
        write_parquet(merged, run_dir / ROBUSTNESS_FILE)
    return merged


def score_run(run_dir: str | Path, conditions: list[str] | None = None, data_root: str | None = None,
              workers: int | None = None, jobs: int = 1, launcher: str = "local", slurm=None,
              progress=None, threads: int | None = 1) -> pd.DataFrame:
    """Score every finished job of a run under the conditions it lacks and merge every job's
    records into RUN_DIR/robustness.parquet. One unit per job goes through a launcher
    (launchers.py: ``jobs`` = 1 in this process, one after another; more, a local pool; or
    SLURM), training jobs before the stacking jobs that read them; the perturbed features are
    extracted here first. Where a unit runs never changes its records."""
    from mmer_bench.launchers import make_launcher

    run_dir = Path(run_dir)
    chosen = [perturb.get_condition(c) for c in conditions] if conditions else default_conditions(run_dir)
    units = plan_units(run_dir, chosen, data_root, workers)
    prepare_conditions(units, chosen, workers)
    # Scoring runs the models on the CPU (the checkpoints load there) and every feature it reads
    # is in the store by now: local workers get CPU threads, no GPU.
    runner = make_launcher(launcher, run_dir / LAUNCH_DIR, jobs=jobs, slurm=slurm, progress=progress, gpus_per_job=0,
                           threads=threads)
    outcomes = runner.run(units, run_unit)
    merged = merge_run(run_dir, [Path(u.job_dir) for u in units])
    failures = [o for o in outcomes.values() if o.status == "failed"]
    if failures:
        lines = "\n".join(f"  {f.job_id}: {f.error}" + (f" (log: {f.log})" if f.log else "") for f in failures)
        raise RobustnessError(f"{len(failures)} of {len(units)} jobs could not be scored (the records of the others "
                              f"are merged into {run_dir / ROBUSTNESS_FILE}):\n{lines}")
    return merged
