"""Leaderboard tables rendered from results (never typed in)."""

from __future__ import annotations

import math

import pandas as pd

from mmer_bench import stats
from mmer_bench.registry import METHODS, STACKERS
from mmer_bench.results import summarize

METRIC_TITLES = {"accuracy": "Accuracy", "uar": "UAR", "macro_f1": "Macro-F1", "weighted_f1": "Weighted-F1",
                 "mae": "MAE", "wa": "Mean wA", "f1": "Mean F1", "acc2": "Acc2", "acc2_nonzero": "Acc2 (non-0)",
                 "acc7": "Acc7", "f1_2": "F1 (2-class)", "corr": "Pearson r", "acc5": "Acc5",
                 "f1_nonzero": "F1 (non-0)"}
# What each F1 column means: papers report several F1s under one name, so every table says which.
F1_DEFINITIONS = {
    "macro_f1": "Macro-F1: the unweighted mean of the per-class F1 scores",
    "weighted_f1": "Weighted-F1: the per-class F1 scores weighted by each class's number of test clips",
    "f1": "Mean F1: per emotion, the binary F1 of \"present\" (intensity > 0) against absent, averaged over "
          "the emotions (not the weighted F1 that some papers report)",
    "f1_2": "F1 (2-class): weighted F1 of negative (< 0) vs non-negative (>= 0), every clip",
    "f1_nonzero": "F1 (non-0): weighted F1 of negative (< 0) vs positive (> 0), over the clips whose label "
                  "is not 0 (the standard CMU-MOSI/MOSEI evaluation)",
}
# Scores on their own scale (errors, correlations): shown as they are, not as percentages.
RAW_PREFIXES = ("mae", "corr")


def _is_raw(metric: str) -> bool:
    return metric.startswith(RAW_PREFIXES)


def _title(metric: str) -> str:
    title = METRIC_TITLES.get(metric, metric)
    return title if _is_raw(metric) else f"{title} (%)"


def _cell(metric: str, mean: float, std: float, ci: float, interval: tuple[float, float] | None = None) -> str:
    """``mean ± std [low, high]``: the interval is the verdict's (protocol-aware) one when given,
    else the plain t-interval mean ± ci."""
    if interval is None:
        interval = (mean - ci, mean + ci)
    if math.isnan(std) and math.isnan(interval[0]):
        return f"{mean:.3f}" if _is_raw(metric) else f"{100 * mean:.2f}"
    spread = "" if math.isnan(std) else (f" ± {std:.3f}" if _is_raw(metric) else f" ± {100 * std:.2f}")
    if _is_raw(metric):
        return f"{mean:.3f}{spread} [{interval[0]:.3f}, {interval[1]:.3f}]"
    low, high = max(0.0, interval[0]), min(1.0, interval[1])  # a score cannot leave [0, 100]
    return f"{100 * mean:.2f}{spread} [{100 * low:.2f}, {100 * high:.2f}]"


def _paper_entry(method: str, corpus: str) -> dict:
    try:
        registry = STACKERS if method in STACKERS.names() else METHODS
        return getattr(registry.get(method), "paper", {}).get(corpus, {})
    except KeyError:
        return {}


def _paper(method: str, corpus: str, metric: str, notes: list[str], variant: str = "",
           metrics: tuple[str, ...] = ()) -> str:
    """The paper's number for the primary metric; else for another metric of the table, named.
    An entry whose number depends on the pretrained encoder (``by_encoder``: checkpoint name ->
    number, for the metric whose value is None) takes the one of the row's encoder, matched by
    the last part of its hub id or folder."""
    entry = dict(_paper_entry(method, corpus))
    if "by_encoder" in entry:
        key = next((m for m in entry if entry[m] is None), None)
        value = entry["by_encoder"].get(variant.rstrip("/").split("/")[-1].lower()) if variant else None
        if key is None or value is None:
            return ""
        entry[key] = value
    shown = metric if entry.get(metric) is not None else next((m for m in metrics if entry.get(m) is not None), None)
    if shown is None:
        return ""
    std = entry.get(f"{shown}_std")
    notes.append(f"{method}: {entry['source']}" + (f"; {entry['note']}" if "note" in entry else ""))
    label = "" if shown == metric else f" ({METRIC_TITLES.get(shown, shown)})"
    return f"{entry[shown]:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f"{label} [{len(notes)}]"


def _command_lines(provenance: dict) -> list[str]:
    commands = provenance.get("commands") or [provenance.get("command", "")]
    if len(commands) == 1:
        return [f"- Command: `{commands[0]}`"]
    # Jobs of one run folder made by several commands (a resumed or a concurrent run): name each.
    return ["- Commands (each made some of the rows): " + "; ".join(f"`{c}`" for c in commands)]


RECIPE_TITLES = {"inner-cv": "stacked on inner-CV posteriors", "in-sample": "stacked on in-sample posteriors"}


def task_metrics(corpus, task) -> tuple[tuple[str, ...], str]:
    """The leaderboard metrics of a task (classification tasks show the corpus's, regression tasks
    bring their own) and its primary metric (the corpus's for the first task)."""
    metrics = task.report_metrics or corpus.report_metrics
    first = task.name == corpus.tasks[0].name
    primary = corpus.primary_metric if first or not task.primary_metric else task.primary_metric
    return metrics, primary


def cluster_unit(corpus) -> str:
    """What the official-split bootstrap resamples: the corpus's leakage unit (dialogue, video, ...)."""
    return corpus.group_columns[0] if corpus.group_columns else "clip_id"


def corpus_verdicts(results: pd.DataFrame, predictions: pd.DataFrame | None, corpus,
                    manifest: pd.DataFrame | None = None) -> dict[str, stats.TaskVerdicts]:
    """Intervals, ties, rankings and calibration of every task with test results (see stats.py).
    ``manifest`` gives the test clips' clusters for the official-split bootstrap."""
    unit = cluster_unit(corpus)
    clusters = None
    if manifest is not None and unit != "clip_id" and unit in manifest.columns:  # clip_id: each clip alone
        clusters = manifest.set_index("clip_id")[unit]
    out = {}
    for task in corpus.tasks:
        if results[(results["split"] == "test") & (results["task"] == task.name)].empty:
            continue
        metrics, primary = task_metrics(corpus, task)
        out[task.name] = stats.task_verdicts(results, predictions, task, metrics, primary,
                                             task.metric_mode(primary) == "max", clusters,
                                             unit if clusters is not None else "clip")
    return out


def leaderboard_markdown(results: pd.DataFrame, corpus, provenance: dict, verdicts: dict | None = None,
                         page: str | None = None) -> str:
    """One table per task of the corpus (the first is the primary one), ranked by the primary metric.
    With ``verdicts`` (corpus_verdicts), the intervals respect the protocol and each row says whether
    it is tied with the best; ``page`` links the HTML page."""
    return "\n".join(markdown_lines(results, corpus, provenance, verdicts, page)[0]) + "\n"


def markdown_lines(results, corpus, provenance, verdicts=None, page=None):
    """The markdown lines and, per task, the table as (header, rows) for the HTML page."""
    cells = ("test-part scores, mean ± std over folds x seeds [95% interval, as each table says]" if verdicts
             else "test-part scores, mean ± std over folds x seeds [95% t-interval]")
    lines = [
        f"# {corpus.name} leaderboard",
        "",
        "Generated by `mmer bench`; do not edit by hand.",
        "",
        f"- Protocol: {corpus.protocol}",
        f"- Cells: {cells}",
        *_command_lines(provenance),
        f"- Commit: {provenance.get('git_commit', '')}; generated {provenance.get('generated_at', '')}",
    ]
    shown = [m for task in corpus.tasks for m in (task.report_metrics or corpus.report_metrics)]
    lines += [f"- {F1_DEFINITIONS[m]}" for m in dict.fromkeys(shown) if m in F1_DEFINITIONS]
    if page:
        lines.append(f"- Plots, per-run scores, confusion matrices, calibration: [{page}]({page})")
    notes: list[str] = []
    tables = {}
    for task in corpus.tasks:
        lines += ["", f"## {task.name} ({task.describe()})", ""]
        verdict = (verdicts or {}).get(task.name)
        if verdict is not None:
            lines += [f"{verdict.description}.", ""]
            if verdict.friedman:
                lines += [f"Friedman test over {len(verdict.blocks)} (fold, seed) blocks: chi2 = "
                          f"{verdict.friedman[0]:.2f}, p = {verdict.friedman[1]:.2g}.", ""]
        header, rows = task_table(results, corpus, task, notes, verdict)
        tables[task.name] = (header, rows)
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row["cells"]) + " |" for row in rows]
    if notes:
        lines += ["", "Paper numbers:", ""] + [f"[{i}] {note}  " for i, note in enumerate(notes, start=1)]
    skipped = results.drop_duplicates(["method", "fold", "seed"])["n_skipped"].sum()
    if skipped:
        lines += ["", f"Clips skipped for missing or unreadable features (summed over jobs): {int(skipped)}"]
    return lines, tables


def task_table(results: pd.DataFrame, corpus, task, notes: list[str], verdict=None) -> tuple[list[str], list[dict]]:
    """Header and rows (``cells``, ``sort`` keys, ``css`` class, ``method``) of one task's table."""
    metrics, primary = task_metrics(corpus, task)
    first = task.name == corpus.tasks[0].name
    table = summarize(results, task.name, metrics)
    if not table.empty and primary in table.columns:
        table = table.sort_values(primary, ascending=task.metric_mode(primary) == "min")
    calibrated = verdict is not None and "ece" in verdict.rows.columns
    header = ["Method", *[_title(m) for m in metrics]]
    if verdict is not None:
        header.append("vs best (Holm p)")
    if calibrated:
        header += ["ECE (%)", "Brier", "NLL"]
    header += [f"Paper {_title(primary)}", "Runs", "Params", "Train s / run"]
    rows = []
    recipes = {}
    if "recipe" in results.columns:  # stackers say which posteriors they learnt from
        recipes = {m: ", ".join(sorted(set(r) - {""})) for m, r in results.groupby("method")["recipe"]}
    variants = {}
    if "variant" in results.columns:  # encoder-based methods name their pretrained encoder
        variants = {m: next((x for x in v if isinstance(x, str) and x), "") for m, v in results.groupby("method")["variant"]}
    for row in table.to_dict("records"):
        method = row["method"]
        variant = variants.get(method, "")
        name = f"{method} ({variant.rstrip('/').split('/')[-1]})" if variant else method
        label = RECIPE_TITLES.get(recipes.get(method, ""), recipes.get(method, ""))
        cells, sort = [f"{name} ({label})" if label else name], [method]
        for m in metrics:
            if m not in row or pd.isna(row[m]):
                cells.append("")
                sort.append("")
                continue
            interval = None
            if verdict is not None and f"{m}_low" in verdict.rows.columns:
                interval = (verdict.rows.loc[method, f"{m}_low"], verdict.rows.loc[method, f"{m}_high"])
            cells.append(_cell(m, row[m], row[f"{m}_std"], row[f"{m}_ci"], interval))
            sort.append(f"{row[m]:.6f}")
        css = ""
        if verdict is not None:
            r = verdict.rows.loc[method]
            label, css = verdict_label(method == verdict.best, r.get("p_holm"), bool(r.get("tied")))
            cells.append(label)
            sort.append("0" if method == verdict.best else f"{r.get('p_holm', float('nan')):.6f}")
        if calibrated:
            r = verdict.rows.loc[method]
            for key, scale, digits in (("ece", 100, 2), ("brier", 1, 3), ("nll", 1, 3)):
                value = r.get(key)
                cells.append("" if pd.isna(value) else f"{scale * value:.{digits}f}")
                sort.append("" if pd.isna(value) else f"{value:.6f}")
        paper = _paper(method, corpus.name, primary, notes, variant, metrics) if first else ""
        cells += [paper, f"{row['runs']} ({row['folds']} folds x {row['seeds']} seeds)", f"{row['n_params']:,}",
                  f"{row['train_time_s']:.1f}"]
        sort += [paper.split(" ")[0], str(row["runs"]), str(row["n_params"]), f"{row['train_time_s']:.3f}"]
        rows.append({"method": method, "cells": cells, "sort": sort, "css": css})
    return header, rows


def verdict_label(is_best: bool, p_holm, tied: bool) -> tuple[str, str]:
    """A row's standing against the best row: text and css class."""
    if is_best:
        return "best", "best"
    if p_holm is None or pd.isna(p_holm):
        return "n/a", ""
    return (f"tied (p={p_holm:.2g})", "tied") if tied else (f"worse (p={p_holm:.2g})", "worse")
