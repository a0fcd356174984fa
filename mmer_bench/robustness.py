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


class ConditionDataModule(CorpusDataModule):
    """A fold's data module whose test part is under ``condition``; train and val (and the
    scalers fitted on train) are exactly the clean ones."""

    def __init__(self, *args, condition: Condition, condition_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.condition, self.condition_seed = condition, condition_seed

    def features(self) -> dict[str, FeatureSet]:
        clean = super().features()
        test_ids = set(self.fold.test)
        test_manifest = self.manifest[self.manifest["clip_id"].isin(test_ids)].reset_index(drop=True)
        test_hash = self.corpus.manifest_hash(test_manifest)
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
                       condition_seed: int = 0) -> tuple[str, str, dict | None]:
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


def _done(job_dir: Path) -> set[tuple[str, str]]:
    path = job_dir / ROBUSTNESS_FILE
    if not path.exists():
        return set()
    table = pd.read_parquet(path, columns=["condition", "condition_version"])
    return set(zip(table["condition"], table["condition_version"]))


def _append(job_dir: Path, rows: list[dict], preds: list[pd.DataFrame]) -> None:
    from mmer_bench.results import write_parquet

    for name, new in ((ROBUSTNESS_FILE, pd.DataFrame(rows)), (CONDITION_PREDICTIONS, pd.concat(preds) if preds else None)):
        if new is None or new.empty:
            continue
        path = job_dir / name
        old = pd.read_parquet(path) if path.exists() else None
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


def score_run(run_dir: str | Path, conditions: list[str] | None = None, data_root: str | None = None,
              workers: int | None = None) -> pd.DataFrame:
    """Score every finished job of a run under the conditions it lacks (training jobs first, then
    the stacking jobs that read them) and merge every job's records into RUN_DIR/robustness.parquet."""
    from mmer_bench.results import write_parquet

    run_dir = Path(run_dir)
    chosen = [perturb.get_condition(c) for c in conditions] if conditions else default_conditions(run_dir)
    jobs = _job_dirs(run_dir)
    if not jobs:
        raise RobustnessError(f"{run_dir}: no finished job (jobs/<method>/<fold>-seed<seed>/DONE)")
    stacking = [d for d in jobs if json.loads((d / "job.json").read_text()).get("job", {}).get("kind") == "stack"]
    for d in jobs:
        if d not in stacking:
            score_training_job(d, chosen, data_root, workers)
    for d in stacking:
        score_stacking_job(d, chosen, data_root)
    # Every condition the jobs were scored under (earlier calls with other --conditions too), in
    # its current version: records of a condition since changed are left out, not mixed in.
    frames = [pd.read_parquet(d / ROBUSTNESS_FILE) for d in jobs if (d / ROBUSTNESS_FILE).exists()]
    merged = pd.concat(frames, ignore_index=True)
    current = {(c.name, c.version) for c in perturb.CONDITIONS.values()}
    merged = merged[[(c, v) in current for c, v in zip(merged["condition"], merged["condition_version"])]]
    write_parquet(merged.reset_index(drop=True), run_dir / ROBUSTNESS_FILE)
    return merged
