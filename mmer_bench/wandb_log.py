"""W&B dashboards: one run per job and one summary run per bench.

A job's run (Lightning's ``WandbLogger`` for trained methods, a plain run for stacking jobs) is
grouped by corpus (``group``) and method (``job_type``), carries the job's fully resolved config
(corpus, method, fold, seed, hyperparameters, feature extractors and their parameters, config
hash) and, once the test part is predicted, the test metrics in its summary and the test
confusion matrix as a W&B plot. The bench's summary run logs each task's leaderboard as a
``wandb.Table``. Offline by default (``wandb/offline-run-*`` under the run directory; ``wandb
sync`` uploads them); ``WANDB_MODE=online`` streams.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PROJECT_DEFAULT = "mmer-bench"


def settle_environment() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")  # offline unless the user configured W&B
    os.environ.setdefault("WANDB_SILENT", "true")


def project() -> str:
    return os.environ.get("WANDB_PROJECT", PROJECT_DEFAULT)


def job_config(corpus: str, method: str, fold: str, seed: int, hparams: dict, inputs: dict[str, str],
               features: dict[str, dict], corpus_options: dict, config_hash: str | None = None, **extra) -> dict:
    """The job's resolved configuration, as the run's config."""
    return {"corpus": corpus, "method": method, "fold": fold, "seed": seed, "hparams": dict(hparams),
            "features": {name: {"extractor": e, **features.get(e, {})} for name, e in inputs.items()},
            "corpus_options": dict(corpus_options), "config_hash": config_hash, **extra}


def spec_init(spec) -> dict:
    """``wandb.init`` arguments of a job's run from its spec (jobs.JobSpec)."""
    cfg = spec.config
    settings = cfg["settings"]
    hparams = {k: v for part in settings.values() for k, v in part.items()}
    extra = {"settings": settings, "precision": cfg["trainer"]["precision"], "devices": str(cfg["trainer"]["devices"]),
             "kind": spec.kind}
    if "sources" in cfg:
        extra["fused"] = list(cfg["sources"])
    config = job_config(spec.corpus, spec.method, spec.fold, spec.seed, hparams, cfg.get("inputs", {}),
                        cfg.get("features", {}), cfg["corpus"]["options"], spec.config_hash, **extra)
    return run_kwargs(spec.corpus, spec.method, f"{spec.corpus}/{spec.job_id}", cfg["run_out"], config)


def run_kwargs(corpus: str, method: str, name: str, save_dir: str | Path, config: dict) -> dict:
    """Arguments of ``wandb.init`` (and so of Lightning's ``WandbLogger``) for a job's run."""
    return {"project": project(), "name": name, "group": corpus, "job_type": method, "tags": [corpus, method],
            "config": config, "dir": str(save_dir)}


def finish_open_run() -> None:
    """Close a run left open (a refit's selection run) so that the next job starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def log_job(test_scores: dict[str, dict[str, float]], confusions: dict[str, tuple[np.ndarray, np.ndarray, list]],
            run_init: dict, info: dict) -> None:
    """Write a finished job's test metrics (``{task: {metric: value}}``) into its run's summary and
    each classification task's test confusion matrix (``{task: (target, pred, class names)}``) as a
    W&B plot, then finish the run. Uses the job's open run (its Trainer's logger) or starts one."""
    import wandb

    settle_environment()
    run = wandb.run or wandb.init(**run_init)
    run.config.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, list, dict))},
                      allow_val_change=True)
    run.summary.update({f"test/{task}/{metric}": value for task, scores in test_scores.items()
                        for metric, value in scores.items()})
    for task, (target, pred, classes) in confusions.items():
        run.log({f"test/{task}/confusion": wandb.plot.confusion_matrix(
            y_true=np.asarray(target).tolist(), preds=np.asarray(pred).tolist(), class_names=list(classes),
            title=f"{task} test confusion")})
    wandb.finish()


def log_leaderboard(corpus: str, save_dir: str | Path, verdicts: dict, command: str = "") -> None:
    """A summary run of the bench (``job_type`` "leaderboard") with each task's leaderboard rows as
    a ``wandb.Table`` (method, metric means and intervals, p vs the best, tie flag, calibration)."""
    import wandb

    settle_environment()
    finish_open_run()
    run = wandb.init(project=project(), name=f"{corpus}/leaderboard", group=corpus, job_type="leaderboard",
                     tags=[corpus, "leaderboard"], dir=str(save_dir), config={"corpus": corpus, "command": command})
    for task, verdict in verdicts.items():
        frame = verdict.rows.reset_index().assign(best=lambda f, b=verdict.best: f["method"] == b)
        frame["tied"] = frame["tied"].astype(bool)
        run.log({f"leaderboard/{task}": wandb.Table(dataframe=frame)})
        run.summary[f"leaderboard/{task}/best"] = verdict.best
        run.summary[f"leaderboard/{task}/interval"] = verdict.description
    wandb.finish()
