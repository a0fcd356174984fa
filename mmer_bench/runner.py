"""The leaderboard runner: jobs = corpus x method x fold x seed, each a Lightning Trainer run.

Every job writes its records under ``OUT/jobs/<method>/<fold>-seed<seed>/`` (results,
predictions, a DONE marker) with atomic writes; a re-run of the same command skips finished
jobs, and ``OUT/results.parquet``, ``OUT/predictions.parquet`` and ``OUT/leaderboard.md`` are
rebuilt from the job records after each job, so a crash loses nothing already finished.
Validation data (training subjects) selects the epoch; the test part is only predicted.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

import mmer_bench
from mmer_bench.corpora.base import Corpus, CorpusDataModule
from mmer_bench.features.store import FeatureStore, stable_hash
from mmer_bench.fusion import align, fuse
from mmer_bench.protocols import Fold
from mmer_bench.registry import CORPORA, EXTRACTORS, METHODS
from mmer_bench.report import leaderboard_markdown
from mmer_bench.results import write_parquet, write_text
from mmer_bench.robustness_report import robustness_section

log = logging.getLogger(__name__)
# Lightning announces hardware and tips at INFO for every Trainer: one line per job is enough.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


@dataclass
class BenchConfig:
    corpus: str
    methods: list[str] | None = None  # None: every compatible method
    folds: list[str] | None = None  # None: every fold of the protocol
    seeds: list[int] = field(default_factory=lambda: [0])
    data_root: str | None = None
    out: str = "runs/bench"
    corpus_options: dict = field(default_factory=dict)
    hparams: dict[str, dict] = field(default_factory=dict)  # method -> overrides
    # method -> {input name: extractor name}: feed a method other features than its defaults
    inputs: dict[str, dict] = field(default_factory=dict)
    features: dict[str, dict] = field(default_factory=dict)  # extractor name -> its parameters
    devices: int | str = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    loggers: list[str] = field(default_factory=lambda: ["csv", "wandb"])
    skip_missing: bool = False
    cache_dir: str | None = None
    workers: int | None = None
    publish: str | None = None  # directory for <corpus>.md and <corpus>.parquet
    max_epochs: int | None = None  # overrides every trained method's epoch budget (quick runs)
    command: str = ""


def git_commit() -> str:
    root = Path(mmer_bench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        # leaderboard/ is what `--publish` rewrites during the run itself: not a code change.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!leaderboard"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def is_fusion(cls) -> bool:
    return getattr(cls, "is_fusion", False)


def reads_dialogues(cls) -> bool:
    return getattr(cls, "reads_dialogues", False)


def numeric(value):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string: take a string that is a number as the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def method_inputs(name: str, overrides: dict[str, dict] | None = None) -> dict[str, str]:
    """A method's input name -> extractor name: its class defaults, with the benchmark config's
    ``inputs`` overrides (which may only rename the extractor of an input the method has)."""
    cls = METHODS.get(name)
    override = (overrides or {}).get(name, {})
    unknown = set(override) - set(cls.inputs)
    if unknown:
        raise ValueError(f"{name}: the benchmark config sets inputs {sorted(unknown)}, but the method's inputs "
                         f"are {sorted(cls.inputs)}")
    for extractor in override.values():
        EXTRACTORS.get(extractor)  # an unknown extractor fails here, with the known names
    return {**cls.inputs, **override}


def compatible_methods(corpus: Corpus, manifest: pd.DataFrame, overrides: dict[str, dict] | None = None) -> list[str]:
    available = corpus.available_features(manifest)
    # Posterior fusion fuses class probabilities: only for corpora whose tasks are all classification.
    fusable = all(t.kind == "classification" for t in corpus.tasks)
    has_dialogues = corpus.dialogue_columns is not None
    return [name for name, cls in METHODS.items()
            if (fusable if is_fusion(cls) else set(method_inputs(name, overrides).values()) <= available)
            and (not reads_dialogues(cls) or has_dialogues)]


class BestWeights(L.Callback):
    """Keep the weights of the best validation epoch in memory and restore them after fit.
    ``mode`` "max" keeps the highest value of ``monitor``, "min" the lowest (an error such as MAE)."""

    def __init__(self, monitor: str, mode: str = "max"):
        self.monitor, self.mode, self.state, self.best_epoch = monitor, mode, None, -1
        self.best = -float("inf") if mode == "max" else float("inf")

    def on_validation_end(self, trainer, module):
        value = trainer.callback_metrics.get(self.monitor)
        better = value is not None and (float(value) > self.best if self.mode == "max" else float(value) < self.best)
        if better:
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())

    def on_fit_end(self, trainer, module):
        if self.state is not None:
            module.load_state_dict(self.state)


@torch.no_grad()
def predict(model, loader) -> dict[str, dict]:
    """Per-task probabilities and clip ids, in a plain loop (no DDP sampler padding)."""
    model.eval()
    out: dict[str, dict] = {}
    device = next(model.parameters()).device
    for batch in loader:
        batch = move_to(batch, device)
        pred = model.predict_step(batch)
        for task in model.tasks:
            entry = out.setdefault(task.name, {"clip_id": [], "probs": [], "target": []})
            entry["clip_id"] += list(pred["clip_id"])
            entry["probs"].append(pred[task.name].cpu().numpy())
            entry["target"].append(batch["targets"][task.name].cpu().numpy())
    return {t: {"clip_id": e["clip_id"], "probs": np.concatenate(e["probs"]), "target": np.concatenate(e["target"])}
            for t, e in out.items()}


def predict_fold(model, dm: CorpusDataModule, fold: Fold) -> dict[str, dict]:
    """Predictions per part of the *original* fold, also when the model was refit on train + val
    (its data module then merges them), so every method of a run predicts the same clips."""
    by_clip: dict[str, dict[str, tuple]] = {}
    for part in ("train", "val", "test"):
        for task, p in predict(model, dm.part_dataloader(part)).items():
            for clip, probs, target in zip(p["clip_id"], p["probs"], p["target"]):
                by_clip.setdefault(task, {})[clip] = (probs, target)
    out: dict[str, dict] = {}
    for part, ids in fold.parts().items():
        for task, clips in by_clip.items():
            kept = [c for c in ids if c in clips]  # clips skipped for missing features are absent
            out.setdefault(part, {})[task] = {
                "clip_id": kept,
                "probs": np.stack([clips[c][0] for c in kept]),
                "target": np.array([clips[c][1] for c in kept]),
            }
    return out


CHECKPOINT = "model.pt"


def save_checkpoint(model, dm: CorpusDataModule, path: Path) -> None:
    """The model's weights with what rebuilds it (input sizes, training class counts)."""
    counts = {t.name: dm.class_counts(t.name).tolist() for t in model.tasks if t.kind == "classification"}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "input_dims": dm.input_dims(), "class_counts": counts}, tmp)
    os.replace(tmp, path)


def move_to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


class Runner:
    def __init__(self, config: BenchConfig):
        self.cfg = config
        self.out = Path(config.out)
        self.corpus = CORPORA.get(config.corpus)(config.data_root, **config.corpus_options)
        self.store = FeatureStore(Path(config.cache_dir) / "features" if config.cache_dir else None)
        self.rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))

    # --- planning ---------------------------------------------------------------------------
    def plan(self):
        manifest = self.corpus.manifest()
        folds = self.corpus.plan(manifest)  # leakage check: before anything trains
        if self.cfg.folds:
            unknown = set(self.cfg.folds) - {f.name for f in folds}
            if unknown:
                raise ValueError(f"unknown folds {sorted(unknown)}; {self.corpus.name} has {[f.name for f in folds]}")
            folds = [f for f in folds if f.name in self.cfg.folds]
        compatible = compatible_methods(self.corpus, manifest, self.cfg.inputs)
        methods = self.cfg.methods or compatible
        for name in methods:
            if name not in compatible:
                available = sorted(self.corpus.available_features(manifest))
                if reads_dialogues(METHODS.get(name)) and not self.corpus.dialogue_columns:
                    raise ValueError(f"{name} reads whole dialogues; {self.corpus.name} has none")
                needs = sorted(method_inputs(name, self.cfg.inputs).values())
                raise ValueError(f"{name} needs features {needs}; {self.corpus.name} "
                                 f"here offers {available}")
        # Fusion jobs read the other methods' predictions, so they run last.
        methods = sorted(methods, key=lambda m: is_fusion(METHODS.get(m)))
        jobs = [(m, f, s) for m in methods for f in folds for s in self.cfg.seeds]
        return manifest, folds, methods, jobs

    def job_dir(self, method: str, fold: Fold, seed: int) -> Path:
        return self.out / "jobs" / method / f"{fold.name}-seed{seed}"

    def hparams(self, method: str) -> dict:
        cls = METHODS.get(method)
        overrides = self.cfg.hparams.get(method, {})
        unknown = set(overrides) - set(cls.hparam_defaults())
        if unknown:
            raise ValueError(f"{method}: unknown hyperparameters {sorted(unknown)} in the benchmark config")
        hp = {**cls.hparam_defaults(), **{k: numeric(v) for k, v in overrides.items()}}
        if self.cfg.max_epochs and "max_epochs" in hp:
            hp["max_epochs"] = self.cfg.max_epochs
        return hp

    def fusion_sources(self, method: str, methods: list[str]) -> list[str]:
        return self.hparams(method)["fuse"] or [m for m in methods if not is_fusion(METHODS.get(m))]

    def config_hash(self, method: str, fold: Fold, seed: int, manifest_hash: str, methods: list[str]) -> str:
        # A fusion job depends on which methods it fuses: a run adding a method must redo it.
        sources = self.fusion_sources(method, methods) if is_fusion(METHODS.get(method)) else None
        inputs = {} if sources else method_inputs(method, self.cfg.inputs)
        # Only what changes this method's features enters its hash: other methods' settings do not.
        features = {e: self.cfg.features[e] for e in sorted(set(inputs.values())) if e in self.cfg.features}
        extra = {"inputs": inputs} if method in self.cfg.inputs else {}
        if features:
            extra["features"] = features
        return stable_hash({"corpus": self.corpus.name, "options": self.cfg.corpus_options, "method": method,
                            "hp": self.hparams(method), "fold": [fold.train, fold.val, fold.test], "seed": seed,
                            "precision": self.cfg.precision, "manifest": manifest_hash,
                            "version": mmer_bench.__version__, **({"fused": sources} if sources else {}), **extra})

    # --- running ----------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        manifest, folds, methods, jobs = self.plan()
        manifest_hash = self.corpus.manifest_hash(manifest)
        failures = []
        for method, fold, seed in jobs:
            job_dir = self.job_dir(method, fold, seed)
            config_hash = self.config_hash(method, fold, seed, manifest_hash, methods)
            if (job_dir / "DONE").exists():
                done = json.loads((job_dir / "DONE").read_text())
                if done["config_hash"] == config_hash:
                    log.info("skip finished job %s %s seed %d", method, fold.name, seed)
                    continue
                if not is_fusion(METHODS.get(method)):
                    raise RuntimeError(
                        f"{job_dir} holds a finished job with another configuration (corpus data, hyperparameters "
                        "or code version changed); use a new --out directory or delete that job folder")
                # A fusion job is derived from the other jobs' predictions: redo it when they change.
                (job_dir / "DONE").unlink()
            log.info("run %s %s seed %d", method, fold.name, seed)
            try:
                if is_fusion(METHODS.get(method)):
                    self.run_fusion(method, methods, manifest, fold, seed, job_dir, config_hash)
                else:
                    self.run_training(method, manifest, fold, seed, job_dir, config_hash)
            except Exception as exc:
                if self.rank != 0:
                    raise
                failures.append((method, fold.name, seed, exc))
                write_text(job_dir / "FAILED", traceback.format_exc())
                log.error("job %s %s seed %d failed: %s", method, fold.name, seed, exc)
            if self.rank == 0:
                self.collect()
        if failures:
            lines = "\n".join(f"  {m} {f} seed {s}: {type(e).__name__}: {e}" for m, f, s, e in failures)
            raise RuntimeError(f"{len(failures)} of {len(jobs)} jobs failed (finished jobs are kept):\n{lines}")
        return pd.read_parquet(self.out / "results.parquet") if self.rank == 0 else pd.DataFrame()

    def _loggers(self, job_dir: Path, job_name: str):
        loggers = []
        if "csv" in self.cfg.loggers:
            loggers.append(L.pytorch.loggers.CSVLogger(job_dir, name="csv", version=""))
        if "wandb" in self.cfg.loggers:
            os.environ.setdefault("WANDB_MODE", "offline")  # offline unless the user configured W&B
            os.environ.setdefault("WANDB_SILENT", "true")
            loggers.append(L.pytorch.loggers.WandbLogger(
                project=os.environ.get("WANDB_PROJECT", "mmer-bench"), name=job_name, group=self.corpus.name,
                save_dir=str(self.out), config={"corpus": self.corpus.name, "job": job_name}))
        return loggers or False

    def run_training(self, method, manifest, fold, seed, job_dir, config_hash):
        cls = METHODS.get(method)
        hp = self.hparams(method)
        started = time.time()
        if hp["patience"] is None:
            # A fixed epoch budget, as papers without a validation set train: on train + val
            # when refit is set (every training subject), else on train alone.
            trained = Fold(fold.name, fold.train + fold.val, fold.val, fold.test, fold.info) if hp["refit"] else fold
            model, dm, trainer = self.fit(cls, hp, manifest, trained, seed, job_dir, hp["max_epochs"], [])
            info = {"epochs_run": trainer.current_epoch, "selection": "fixed epoch budget"}
        else:
            monitor, mode = self.monitor(hp)
            best = BestWeights(monitor, mode)
            callbacks = [best, L.pytorch.callbacks.EarlyStopping(monitor, mode=mode, patience=hp["patience"])]
            model, dm, trainer = self.fit(cls, hp, manifest, fold, seed, job_dir, hp["max_epochs"], callbacks)
            info = {"best_epoch": best.best_epoch, "epochs_run": trainer.current_epoch, "best_val": best.best,
                    "selection": f"best {monitor}"}
            if hp["refit"]:
                # Validation chose the epoch count; now train on every training subject for it.
                merged = Fold(fold.name, fold.train + fold.val, fold.val, fold.test, fold.info)
                model, dm, trainer = self.fit(cls, hp, manifest, merged, seed, job_dir / "refit",
                                              best.best_epoch + 1, [])
                info["refit_epochs"] = best.best_epoch + 1
        info["train_time_s"] = time.time() - started
        if trainer.global_rank != 0:
            return
        predictions = predict_fold(model, dm, fold)
        n_params = sum(p.numel() for p in model.parameters())
        # The selected (or refit) weights: `mmer robustness` scores them under test-time conditions.
        save_checkpoint(model, dm, job_dir / CHECKPOINT)
        info["trained_on"] = "train+val" if hp["refit"] else "train"
        self.write_job(method, fold, seed, job_dir, config_hash, predictions, n_params, dm, started, info)

    def monitor(self, hp: dict) -> tuple[str, str]:
        """The validation quantity that selects the epoch, and whether higher ("max") is better."""
        if hp.get("monitor") is None:
            return f"val/{self.corpus.tasks[0].name}/{self.corpus.primary_metric}", self.corpus.primary_mode
        if hp["monitor"] == "loss":
            return "val/loss", "min"
        raise ValueError(f"unknown monitor {hp['monitor']!r}: None (the corpus's primary metric) or 'loss'")

    def fit(self, cls, hp, manifest, fold, seed, log_dir, max_epochs, callbacks):
        L.seed_everything(seed, workers=True, verbose=False)
        dm = CorpusDataModule(self.corpus, manifest, fold, method_inputs(cls.registry_name, self.cfg.inputs),
                              cls.scaling, self.store, batch_size=hp["batch_size"],
                              skip_missing=self.cfg.skip_missing, workers=self.cfg.workers,
                              extractor_params=self.cfg.features, dialogues=reads_dialogues(cls))
        dm.setup()
        counts = {t.name: dm.class_counts(t.name).tolist() for t in self.corpus.tasks if t.kind == "classification"}
        model = cls(self.corpus.tasks, dm.input_dims(), counts, **hp)
        job_name = f"{self.corpus.name}/{cls.registry_name}/{fold.name}-seed{seed}"
        loggers = self._loggers(log_dir, job_name)
        trainer = L.Trainer(
            max_epochs=max_epochs, accelerator=self.cfg.accelerator, devices=self.cfg.devices,
            strategy=self.cfg.strategy, precision=self.cfg.precision, logger=loggers, callbacks=callbacks,
            gradient_clip_val=hp["gradient_clip_val"], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
            # Without epoch selection, validating every epoch only costs time: score it once at the end.
            check_val_every_n_epoch=1 if callbacks else max_epochs,
        )
        trainer.fit(model, datamodule=dm)
        if loggers and "wandb" in self.cfg.loggers and trainer.global_rank == 0:
            import wandb

            wandb.finish()
        return model, dm, trainer

    def run_fusion(self, method, methods, manifest, fold, seed, job_dir, config_hash):
        hp = self.hparams(method)
        sources = self.fusion_sources(method, methods)
        if not sources:
            raise ValueError(f"{method} has no methods to fuse in this run")
        if self.rank != 0:
            return
        started = time.time()
        tables = {}
        for source in sources:
            path = self.job_dir(source, fold, seed) / "predictions.parquet"
            if not path.exists():
                raise FileNotFoundError(f"{method} needs the predictions of {source} {fold.name} seed {seed}: {path}")
            tables[source] = pd.read_parquet(path)
        labels = manifest.set_index("clip_id")
        predictions = {}
        task = self.corpus.tasks[0]
        aligned = {}
        for part in ("train", "val", "test"):
            frames = {}
            for source, table in tables.items():
                rows = table[(table["split"] == part) & (table["task"] == task.name)]
                probs = np.stack(rows["probs"].to_numpy())
                frames[source] = pd.DataFrame(probs, columns=list(task.classes)).assign(clip_id=rows["clip_id"].to_numpy())
            aligned[part] = align(frames, task.classes, f"{fold.name} {part}")
        train_labels = labels.loc[aligned["train"].index, task.name].to_numpy()
        # Stacking learns from the sources' training-part posteriors; a source that fits its training
        # clips perfectly looks flawless there and takes all the weight, whatever it does on test.
        overfit = {}
        for source in sources:
            columns = aligned["train"][[f"{source}:{c}" for c in task.classes]].to_numpy()
            train_accuracy = float((columns.argmax(1) == train_labels).mean())
            if train_accuracy >= 0.99:
                overfit[source] = train_accuracy
                log.warning("%s %s: %s is %.1f%% accurate on its own training clips; stacking on in-sample "
                            "posteriors over-weights it (leave it out with hparams %s: {fuse: [...]})",
                            method, fold.name, source, 100 * train_accuracy, method)
        for part in ("train", "val", "test"):
            probs = fuse(aligned["train"], train_labels, aligned[part], C=hp["C"], seed=seed)
            ids = list(aligned[part].index)
            predictions[part] = {task.name: {"clip_id": ids, "probs": probs,
                                             "target": labels.loc[ids, task.name].to_numpy()}}
        n_params = (len(sources) * task.num_classes + 1) * task.num_classes
        info = {"fused": sources, "train_time_s": time.time() - started, "sources_fitting_train": overfit}
        self.write_job(method, fold, seed, job_dir, config_hash, predictions, n_params, None, started, info)

    def write_job(self, method, fold, seed, job_dir, config_hash, predictions, n_params, dm, started, info):
        tasks = {t.name: t for t in self.corpus.tasks}
        key = {"corpus": self.corpus.name, "method": method, "fold": fold.name, "seed": seed}
        result_rows, pred_frames = [], []
        for part, per_task in predictions.items():
            for task_name, p in per_task.items():
                task = tasks[task_name]
                for metric, value in task.scores(p["probs"], p["target"]).items():
                    result_rows.append({**key, "split": part, "task": task_name, "metric": metric, "value": value})
                pred_frames.append(prediction_frame(task, key, part, p))
        sizes = {part: len(next(iter(per_task.values()))["clip_id"]) for part, per_task in predictions.items()}
        provenance = {
            "protocol": self.corpus.protocol, "git_commit": git_commit(), "config_hash": config_hash,
            "wall_time_s": time.time() - started, "train_time_s": info["train_time_s"], "n_params": int(n_params),
            "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
            "n_skipped": len(dm.skipped) if dm else 0, "precision": self.cfg.precision,
            "devices": str(self.cfg.devices), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.cfg.command,
        }
        results = pd.DataFrame(result_rows).assign(**provenance)
        write_parquet(pd.concat(pred_frames, ignore_index=True), job_dir / "predictions.parquet",
                      {"classes": {t: list(tasks[t].classes) for t in tasks}})
        write_parquet(results, job_dir / "results.parquet")
        test = predictions["test"]
        confusions = {t: tasks[t].confusion(p["probs"], p["target"]) for t, p in test.items()}
        features = {name: {"extractor": e, **self.cfg.features.get(e, {})}
                    for name, e in (dm.inputs.items() if dm else [])}
        run = {"corpus": self.corpus.name, "data_root": self.cfg.data_root, "corpus_options": self.cfg.corpus_options,
               "inputs": dict(dm.inputs) if dm else {}, "skip_missing": self.cfg.skip_missing,
               "cache_dir": self.cfg.cache_dir}
        details = {**provenance, **info, "hparams": self.hparams(method), "features": features, "run": run,
                   "test_confusion": confusions,
                   "skipped": dm.skipped if dm else {}, "fold_info": fold.info}
        write_text(job_dir / "job.json", json.dumps(details, indent=1, default=str))
        write_text(job_dir / "DONE", json.dumps({"config_hash": config_hash}))  # last: marks the job finished

    # --- collecting -------------------------------------------------------------------------
    def collect(self) -> None:
        result_files = sorted(self.out.glob("jobs/*/*/results.parquet"))
        result_files = [p for p in result_files if (p.parent / "DONE").exists()]
        if not result_files:
            return
        results = pd.concat([pd.read_parquet(p) for p in result_files], ignore_index=True)
        write_parquet(results, self.out / "results.parquet")
        preds = pd.concat([pd.read_parquet(p.parent / "predictions.parquet") for p in result_files], ignore_index=True)
        write_parquet(preds, self.out / "predictions.parquet",
                      {"classes": {t.name: list(t.classes) for t in self.corpus.tasks}})
        # Jobs resumed across commits: name every commit that produced a row.
        provenance = {"command": self.cfg.command, "git_commit": ", ".join(sorted(results["git_commit"].unique())),
                      "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        # Robustness scores of an earlier `mmer robustness` stay in the table (mmer_bench/robustness_report.py).
        markdown = leaderboard_markdown(results, self.corpus, provenance) + robustness_section(
            self.out, results, self.corpus, self.cfg.publish)
        write_text(self.out / "leaderboard.md", markdown)
        if self.cfg.publish:
            publish = Path(self.cfg.publish)
            write_text(publish / f"{self.corpus.name}.md", markdown)
            write_parquet(results, publish / f"{self.corpus.name}.parquet")


def prediction_frame(task, key: dict, part: str, p: dict) -> pd.DataFrame:
    """Rows of predictions.parquet, one schema for every task kind (see results.py): ``probs`` is
    the output vector, ``target_values`` the target as floats; ``target`` / ``pred`` are class
    indices for classification and -1 for regression."""
    outputs = np.asarray(p["probs"], dtype=np.float32)
    n = len(p["clip_id"])
    if task.kind == "classification":
        target, pred = np.asarray(p["target"], dtype=np.int64), outputs.argmax(1)
        target_values = target.astype(np.float32).reshape(n, 1)
    else:
        target, pred = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        target_values = np.asarray(p["target"], dtype=np.float32).reshape(n, -1)
    return pd.DataFrame({**key, "split": part, "task": task.name, "clip_id": p["clip_id"], "target": target,
                         "pred": pred, "probs": list(outputs), "target_values": list(target_values)})


def run_bench(config: BenchConfig) -> pd.DataFrame:
    if not config.command:
        config.command = " ".join(["mmer", *sys.argv[1:]]) if sys.argv else ""
    return Runner(config).run()
