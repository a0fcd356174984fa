"""The results schema, atomic Parquet writes and aggregation over folds x seeds.

``results.parquet``: one row per (job, split, task, metric) with columns
    corpus, method, fold, seed, split (train|val|test), task, metric, value,
    and the job's provenance: protocol, git_commit, config_hash, wall_time_s, train_time_s,
    n_params, n_train, n_val, n_test, n_skipped, precision, devices, finished_at, command, variant
    (the pretrained encoder of an encoder-based method, else empty), recipe (a stacker's), base_method
    (the registered method a named variant row trains, else empty; ``method`` is the row name).
``predictions.parquet``: one row per (job, split, task, clip) with columns
    corpus, method, fold, seed, split, task, clip_id, target, pred, probs, target_values.
    ``probs`` is the task's output vector in the order of its outputs (stored in the file
    metadata as ``classes``): class probabilities for a classification task, predicted values
    (clamped to the label range) for a regression task (e.g. the six CMU-MOSEI emotion
    intensities, or the one sentiment value). ``target_values`` is the target as a list of
    floats (the regressed values; the class index for classification). ``target`` and ``pred``
    are class indices for classification and -1 for regression tasks, so the schema is the same
    for every task kind.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

RESULT_COLUMNS = ["corpus", "method", "fold", "seed", "split", "task", "metric", "value"]
PREDICTION_COLUMNS = ["corpus", "method", "fold", "seed", "split", "task", "clip_id", "target", "pred", "probs",
                      "target_values"]


def write_parquet(frame: pd.DataFrame, path: Path, meta: dict | None = None) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written table."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"mmer": json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")  # unique across hosts too
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_parquet_meta(path: Path) -> dict:
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(b"mmer", b"{}"))


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std, and the t-interval half-width and count over folds x seeds."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n))
    return mean, std, half, n


def summarize(results: pd.DataFrame, task: str, metrics: tuple[str, ...], split: str = "test") -> pd.DataFrame:
    """Per method: mean, std, CI half-width and run count of each metric over folds x seeds."""
    rows = []
    subset = results[(results["split"] == split) & (results["task"] == task)]
    for method, group in subset.groupby("method", sort=True):
        row = {"method": method}
        for metric in metrics:
            values = group.loc[group["metric"] == metric, "value"].to_numpy()
            if len(values):
                row[metric], row[f"{metric}_std"], row[f"{metric}_ci"], row["runs"] = mean_ci(values)
        jobs = group.drop_duplicates(["fold", "seed"])
        row["n_params"] = int(jobs["n_params"].median())
        row["train_time_s"] = float(jobs["train_time_s"].mean())
        row["folds"] = jobs["fold"].nunique()
        row["seeds"] = jobs["seed"].nunique()
        rows.append(row)
    return pd.DataFrame(rows)
