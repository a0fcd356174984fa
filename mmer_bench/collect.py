"""Job folders in and out: the records a job writes, and merging every finished job folder of a
run into ``results.parquet``, ``predictions.parquet`` and ``leaderboard.md``.

Merging reads only the job folders (a job counts once its DONE marker exists) and writes each
table atomically, so it can be redone at any time: the runner does after each job, ``mmer
leaderboard`` does on demand.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import mmer_bench
from mmer_bench.jobs import method_class
from mmer_bench.registry import CORPORA, METHODS
from mmer_bench.report import leaderboard_markdown
from mmer_bench.results import write_parquet, write_text
from mmer_bench.robustness_report import robustness_for, robustness_section


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


def method_variant(spec) -> str:
    """The pretrained encoder a job's method ran with ("" for methods without one): the
    leaderboard shows it beside the method and picks an encoder-dependent paper number by it. A
    method names it by a setting (``encoder_hparam``) or by the extractor of one input
    (``encoder_input``), whose ``model`` parameter it is."""
    if spec.kind != "train" or spec.config.get("base_method", spec.method) not in METHODS.names():
        return ""
    cls = method_class(spec)
    settings = {k: v for part in spec.config.get("settings", {}).values() for k, v in part.items()}
    inputs, features = spec.config.get("inputs", {}), spec.config.get("features", {})
    if getattr(cls, "encoder_hparam", None):
        return str(settings.get(cls.encoder_hparam) or "")
    if getattr(cls, "encoder_input", None) in inputs:
        return str(features.get(inputs[cls.encoder_input], {}).get("model") or "")
    return ""


def write_records(spec, corpus, fold, predictions: dict, n_params: int, started: float, info: dict,
                  features: dict | None = None, skipped: dict | None = None) -> None:
    """A finished job's folder: results.parquet, predictions.parquet, job.json, then DONE."""
    import torch  # the job's own process: its torch thread count is part of how the numbers came

    job_dir = Path(spec.out)
    tasks = {t.name: t for t in corpus.tasks}
    key = {"corpus": corpus.name, "method": spec.method, "fold": fold.name, "seed": spec.seed}
    result_rows, pred_frames = [], []
    for part, per_task in predictions.items():
        for task_name, p in per_task.items():
            task = tasks[task_name]
            for metric, value in task.scores(p["probs"], p["target"]).items():
                result_rows.append({**key, "split": part, "task": task_name, "metric": metric, "value": value})
            pred_frames.append(prediction_frame(task, key, part, p))
    sizes = {part: len(next(iter(per_task.values()))["clip_id"]) for part, per_task in predictions.items()}
    trainer = spec.config["trainer"]
    provenance = {
        "protocol": corpus.protocol, "git_commit": git_commit(), "config_hash": spec.config_hash,
        "wall_time_s": time.time() - started, "train_time_s": info["train_time_s"], "n_params": int(n_params),
        "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
        "n_skipped": len(skipped or {}), "precision": trainer["precision"],
        "devices": str(trainer["devices"]), "threads": torch.get_num_threads(), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": spec.config["command"], "variant": method_variant(spec),
        "recipe": info.get("recipe", ""),  # a stacker's: "inner-cv" or "in-sample"
        # A named variant's row: the registered method it trains ("" for other rows); job.json
        # also keeps the variant's overrides.
        "base_method": spec.config.get("base_method", "") if spec.config.get("variant") else "",
    }
    results = pd.DataFrame(result_rows).assign(**provenance)
    write_parquet(pd.concat(pred_frames, ignore_index=True), job_dir / "predictions.parquet",
                  {"classes": {t: list(tasks[t].classes) for t in tasks}})
    write_parquet(results, job_dir / "results.parquet")
    confusions = {t: tasks[t].confusion(p["probs"], p["target"]) for t, p in predictions["test"].items()}
    hparams = {k: v for part in spec.config["settings"].values() for k, v in part.items()}
    variant = spec.config.get("variant")
    if variant:
        info = {**info, "variant_of": variant["method"], "variant_overrides": {k: v for k, v in variant.items()
                                                                             if k != "method"}}
    details = {**provenance, **info, "hparams": hparams, "features": features or {}, "test_confusion": confusions,
               "skipped": skipped or {}, "fold_info": fold.info, "job": json.loads(spec.to_json())}
    write_text(job_dir / "job.json", json.dumps(details, indent=1, default=str))
    write_text(job_dir / "DONE", json.dumps({"config_hash": spec.config_hash}))  # last: marks the job finished
    if "wandb" in spec.config["loggers"] and not spec.config.get("inner"):
        from mmer_bench import wandb_log

        test = predictions["test"]
        scores = {t: {r["metric"]: r["value"] for r in result_rows if r["split"] == "test" and r["task"] == t}
                  for t in test}
        plots = {t: (p["target"], np.asarray(p["probs"]).argmax(1), tasks[t].classes)
                 for t, p in test.items() if tasks[t].kind == "classification"}
        wandb_log.log_job(scores, plots, wandb_log.spec_init(spec),
                          {k: v for k, v in {**provenance, **info}.items() if k not in ("command", "train_time_s")})


def provenance_of(results: pd.DataFrame) -> dict:
    """The leaderboard header from the rows themselves: the latest job's command, every command
    and every commit that produced a row (jobs resumed across commits, or made by two commands
    on one run folder), the latest finish time."""
    ordered = results.sort_values("finished_at")
    latest = ordered.iloc[-1]
    return {"command": latest["command"], "commands": list(dict.fromkeys(ordered["command"])),
            "git_commit": ", ".join(sorted(results["git_commit"].unique())),
            "generated_at": results["finished_at"].max()}


def render(results: pd.DataFrame, corpus=None) -> str:
    """The leaderboard markdown of one corpus's rows (``corpus``: its instance, else a default one)."""
    corpus = corpus or CORPORA.get(results["corpus"].iloc[0])()
    return leaderboard_markdown(results, corpus, provenance_of(results))


def collect(out: Path | str, corpus=None, publish: str | None = None, final: bool = False,
            manifest: pd.DataFrame | None = None, loggers: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """Merge the finished job folders under ``out/jobs`` into out's tables and leaderboard
    (and ``publish/<corpus>.md|.parquet``). Returns the results, or None when no job finished.
    ``final`` (after a run's last job) adds the verdicts: protocol-aware intervals, ties and
    calibration in the markdown, the HTML pages (``<corpus>.html``, ``index.html``) beside it, and
    with "wandb" in ``loggers`` the leaderboard run; ``manifest`` gives the test clips' clusters
    for the official-split bootstrap (default: the corpus's own). Jobs of inner folds (under
    ``jobs/<method>/inner/``) only feed stackers and are not merged."""
    out = Path(out)
    # Jobs finishing at once in several processes (or on several nodes) each merge: one at a time,
    # and every table still goes through a temporary file and a rename, so a reader never sees a
    # torn file. Every merge reads all job folders, so the last one holds every finished job.
    with merge_lock(out):
        return _collect(out, corpus, publish, final, manifest, loggers)


def merge_lock(out: Path):
    """An OS file lock (flock, released if its holder dies) on ``out/.merge.lock``."""
    import filelock

    out.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(out / ".merge.lock", thread_local=False)


def _collect(out: Path, corpus, publish: str | None, final: bool, manifest, loggers) -> pd.DataFrame | None:
    result_files = [p for p in sorted(out.glob("jobs/*/*/results.parquet")) if (p.parent / "DONE").exists()]
    if not result_files:
        return None
    results = pd.concat([pd.read_parquet(p) for p in result_files], ignore_index=True)
    names = sorted(results["corpus"].unique())
    if len(names) != 1:
        raise ValueError(f"{out}: job folders of several corpora {names}; one run folder holds one corpus")
    corpus = corpus or CORPORA.get(names[0])()
    write_parquet(results, out / "results.parquet")
    preds = pd.concat([pd.read_parquet(p.parent / "predictions.parquet") for p in result_files], ignore_index=True)
    write_parquet(preds, out / "predictions.parquet", {"classes": {t.name: list(t.classes) for t in corpus.tasks},
                                                       "commands": provenance_of(results)["commands"]})
    if not final:
        # Robustness scores of an earlier `mmer robustness` stay in the table (robustness_report.py).
        markdown = render(results, corpus) + robustness_section(out, results, corpus, publish)
        write_text(out / "leaderboard.md", markdown)
        if publish:
            write_text(Path(publish) / f"{corpus.name}.md", markdown)
            write_parquet(results, Path(publish) / f"{corpus.name}.parquet")
        return results
    from mmer_bench.html_report import write_reports

    manifest = manifest if manifest is not None else corpus.manifest()
    provenance = provenance_of(results)
    # The robustness section of an earlier `mmer robustness` (None without one): one table object
    # renders both the markdown and the page, its plots written beside each of them.
    markdown, verdicts = write_reports(out, corpus, results, preds, provenance, manifest, markdown_name="leaderboard",
                                       robustness=robustness_for(out, results, corpus, out))
    if publish:
        write_parquet(results, Path(publish) / f"{corpus.name}.parquet")  # first: the index reads it
        write_reports(Path(publish), corpus, results, preds, provenance, manifest,
                      robustness=robustness_for(out, results, corpus, publish))
    if "wandb" in loggers:
        from mmer_bench import wandb_log

        wandb_log.log_leaderboard(corpus.name, out, verdicts, provenance["command"])
    return results
