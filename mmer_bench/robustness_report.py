"""The robustness table of a run (rendered from robustness.parquet, never typed in) and its
score-versus-SNR plots.

Rows are methods, columns the clean test score (from results.parquet: the leaderboard's own
numbers) and each condition: the corpus's primary metric of the first task, mean over folds x
seeds. A cell reads "n/a" where the condition removes what the method needs (never a score on
placeholder zeros), "·" where the condition does not touch the method's inputs (its score is the
clean one) and "–" where the condition cannot act on its features.

Two summaries per degradation curve follow MultiBench (Liang et al. 2021, "MultiBench: Multiscale
Benchmarks for Multimodal Representation Learning", NeurIPS Datasets and Benchmarks), computed on
the mean scores along the curve (clean first, then each level), the levels evenly spaced over
[0, 1]:

- relative robustness: the area under the curve (trapezoids), so a method that keeps its clean
  score everywhere has relative robustness equal to that score;
- effective robustness: the sum over the levels of the method's score minus the reference
  curve shifted to the method's clean score, the reference being late fusion (MultiBench's LF;
  here the run's stacker) when the run has one: positive means it degrades more slowly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.features.perturb import CONDITIONS, snr_conditions
from mmer_bench.registry import STACKERS
from mmer_bench.results import summarize

NA_CELL, UNAFFECTED_CELL, NOT_APPLICABLE_CELL = "n/a", "·", "–"
# Degradation curves: a name -> its conditions, mildest first (the clean score comes before them).
CURVES = {
    "speech white noise": [c.name for c in snr_conditions("white")],
    "speech babble": [c.name for c in snr_conditions("babble")],
    "face feature noise": ["face-noise-0.5sd", "face-noise-1sd"],
    "face frames dropped": ["face-drop-50pct", "face-drop-90pct"],
    "text word dropout": ["text-dropout-10pct", "text-dropout-30pct"],
}


def _is_stacker(method: str) -> bool:
    return method in STACKERS.names()


def condition_means(rob: pd.DataFrame, task: str, metric: str) -> dict[tuple[str, str], tuple[str, float]]:
    """(method, condition) -> (status, mean over folds x seeds of ``metric``; NaN unless scored)."""
    out = {}
    subset = rob[rob["task"] == task]
    for (method, condition), group in subset.groupby(["method", "condition"], sort=False):
        statuses = set(group["status"])
        if statuses == {"scored"}:
            out[method, condition] = ("scored", float(group.loc[group["metric"] == metric, "value"].mean()))
        else:
            # One status for every fold x seed (the rule depends on the method and condition alone).
            status = "n/a" if "n/a" in statuses else ("not applicable" if "not applicable" in statuses else
                                                      "unaffected" if statuses == {"unaffected"} else "mixed")
            out[method, condition] = (status, float("nan"))
    return out


def _cell(status: str, value: float, raw: bool) -> str:
    if status == "scored":
        return f"{value:.3f}" if raw else f"{100 * value:.2f}"
    return {"n/a": NA_CELL, "unaffected": UNAFFECTED_CELL, "not applicable": NOT_APPLICABLE_CELL}.get(status, "?")


def curve(method: str, names: list[str], clean: float, means: dict) -> list[float] | None:
    """The method's mean scores along a curve (clean first), or None unless every point is scored
    (a curve of conditions that leave the method untouched is flat at its clean score)."""
    points = [means.get((method, n), ("missing", math.nan)) for n in names]
    if all(s == "unaffected" for s, _ in points):
        return None
    if any(s != "scored" for s, _ in points):
        return None
    return [clean, *(v for _, v in points)]


def relative_robustness(values: list[float]) -> float:
    """Area under the curve over levels evenly spaced on [0, 1] (MultiBench's relative robustness)."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def effective_robustness(values: list[float], reference: list[float]) -> float:
    """Sum over levels of the curve minus the reference curve moved to the same clean score."""
    f, ref = np.asarray(values), np.asarray(reference)
    return float(np.sum(f - (ref + f[0] - ref[0])))


@dataclass
class RobustnessTable:
    """The robustness section of a corpus, as data: the markdown (``markdown``) and the HTML page
    (html_report.py) both render this one object, so they cannot disagree. Cells are (text,
    sort key, tooltip): the tooltip of an ``n/a``, ``·`` or ``–`` cell gives its reason."""

    title: str
    intro: str
    header: list[str]
    rows: list[dict]  # {"method", "cells": [(text, sort, tooltip), ...]}
    summary_intro: str = ""
    summary_header: list[str] = field(default_factory=list)
    summary_rows: list[dict] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)  # method -> PNG file name beside the page

    def markdown(self) -> str:
        lines = ["", f"## {self.title}", "", self.intro, ""]
        lines += _markdown_table(self.header, self.rows)
        if self.summary_rows:
            lines += ["", self.summary_intro, ""]
            lines += _markdown_table(self.summary_header, self.summary_rows)
        if self.plots:
            lines += ["", "Score versus SNR: " + ", ".join(f"[{m}]({p})" for m, p in self.plots.items())]
        return "\n".join(lines) + "\n"


def _markdown_table(header: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c[0] for c in r["cells"]) + " |" for r in rows]


def condition_reasons(rob: pd.DataFrame, task: str) -> dict[tuple[str, str], str]:
    """(method, condition) -> the reasons recorded for its runs (one for every run as a rule)."""
    subset = rob[rob["task"] == task]
    return {key: "; ".join(sorted(set(group["reason"].dropna().astype(str))))
            for key, group in subset.groupby(["method", "condition"], sort=False)}


_STATUS_TIPS = {"n/a": "n/a: the condition removes what the method needs, not scored on placeholder zeros",
                "unaffected": "unaffected: the method reads no input the condition touches; its clean score holds",
                "not applicable": "not applicable: the condition cannot act on the method's features"}


def robustness_table(rob: pd.DataFrame, results: pd.DataFrame, corpus,
                     plots: dict[str, str] | None = None) -> RobustnessTable | None:
    """The robustness section of a corpus's leaderboard (None without conditions)."""
    if rob is None or rob.empty:
        return None
    task = corpus.tasks[0]
    metric = corpus.primary_metric
    raw = metric.startswith(("mae", "corr"))
    clean = summarize(results, task.name, (metric,)).set_index("method")[metric]
    means = condition_means(rob, task.name, metric)
    reasons = condition_reasons(rob, task.name)
    runs = rob[rob["task"] == task.name].drop_duplicates(["method", "fold", "seed", "condition"])
    counts = runs.groupby(["method", "condition"]).size().to_dict()
    methods = [m for m in clean.sort_values(ascending=task.metric_mode(metric) == "min").index
               if m in set(rob["method"])]
    if not methods:
        return None
    # A condition that scores no method and removes none of their inputs (every cell would be
    # `·` or `–`, e.g. speech noise on a text-only run) is named once, not given a column.
    present = [c for c in CONDITIONS if c in set(rob["condition"])]
    conditions = [c for c in present if any(means.get((m, c), ("missing",))[0] in ("scored", "n/a", "mixed")
                                            for m in methods)]
    idle = [c for c in present if c not in conditions]
    unit = "" if raw else " (%)"
    intro = ("Generated by `mmer robustness`; do not edit by hand. The trained models of the rows above, their "
             "validation choices and training clips unchanged; only the test part is degraded "
             "(mmer_bench/features/perturb.py). Cells: mean over folds x seeds. "
             f"`{NA_CELL}`: the condition removes what the method needs (not scored on placeholder zeros); "
             f"`{UNAFFECTED_CELL}`: the method reads no input the condition touches (its clean score holds); "
             f"`{NOT_APPLICABLE_CELL}`: the condition cannot act on the method's features."
             + (f" Touching no method of this run, so without a column: {', '.join(idle)}." if idle else ""))
    rows = []
    for method in methods:
        cells = [(method, method, ""), (_number(clean[method], raw), repr(float(clean[method])), "clean test score, "
                                        "as in the leaderboard")]
        for c in conditions:
            status, value = means.get((method, c), ("missing", math.nan))
            if status == "scored":
                tip = f"{c}: mean over {counts.get((method, c), 0)} runs; {reasons.get((method, c), '')}"
                cells.append((_cell(status, value, raw), repr(value), tip))
            else:
                reason = reasons.get((method, c))
                tip = f"{c}: {status}, {reason}" if reason else f"{c}: {_STATUS_TIPS.get(status, status)}"
                cells.append((_cell(status, value, raw), "-Infinity", tip))
        rows.append({"method": method, "cells": cells})
    table = RobustnessTable(f"Robustness: {task.name} {metric}{unit} under test-time conditions", intro,
                            ["Method", "clean", *conditions], rows, plots=dict(plots or {}))
    summary = robustness_summary(methods, clean, means, conditions)
    if summary:
        stacker = next((m for m in methods if _is_stacker(m)), None)
        table.summary_intro = (
            "MultiBench robustness along each degradation curve (clean, then its levels evenly spaced on "
            "[0, 1]): relative = area under the curve; effective = sum over levels of the score minus the "
            + (f"`{stacker}` (late fusion) curve moved to the method's clean score" if stacker else
               "reference (no late-fusion row in this run: not computed)")
            + (". Percentage points." if not raw else "."))
        names = [n for n in CURVES if any(n in s for s in summary.values())]
        table.summary_header = ["Method", *[f"{n}: relative" for n in names],
                                *[f"{n}: effective" for n in names if stacker]]
        scale = 1 if raw else 100
        for method in [m for m in methods if m in summary]:
            row = summary[method]
            cells = [(method, method, "")]
            cells += [(f"{scale * row[n][0]:.2f}", repr(row[n][0]), "") if n in row else ("", "-Infinity", "")
                      for n in names]
            if stacker:
                cells += [(_signed(scale * row[n][1]), repr(row[n][1]), "") if n in row and row[n][1] is not None
                          else ("", "-Infinity", "") for n in names]
            table.summary_rows.append({"method": method, "cells": cells})
    return table


def robustness_markdown(rob: pd.DataFrame, results: pd.DataFrame, corpus, plots: dict[str, str] | None = None) -> str:
    """The robustness section of a corpus's leaderboard (an empty string without conditions)."""
    table = robustness_table(rob, results, corpus, plots)
    return table.markdown() if table else ""


def _number(value: float, raw: bool) -> str:
    return f"{value:.3f}" if raw else f"{100 * value:.2f}"


def _signed(value: float) -> str:
    return "0.00" if abs(value) < 0.005 else f"{value:+.2f}"


def robustness_summary(methods, clean, means, conditions) -> dict[str, dict[str, tuple[float, float | None]]]:
    """method -> curve name -> (relative, effective or None)."""
    stacker = next((m for m in methods if _is_stacker(m)), None)
    out: dict[str, dict] = {}
    for name, names in CURVES.items():
        if not all(n in conditions for n in names):
            continue
        reference = curve(stacker, names, clean[stacker], means) if stacker else None
        for method in methods:
            values = curve(method, names, clean[method], means)
            if values is None:
                continue
            effective = effective_robustness(values, reference) if reference else None
            out.setdefault(method, {})[name] = (relative_robustness(values), effective)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def snr_plots(rob: pd.DataFrame, results: pd.DataFrame, corpus, folder: Path) -> dict[str, str]:
    """One PNG per method with speech-noise results: score versus SNR, white and babble. Returns
    method -> file name (inside ``folder``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, metric = corpus.tasks[0], corpus.primary_metric
    clean = summarize(results, task.name, (metric,)).set_index("method")[metric]
    means = condition_means(rob, task.name, metric)
    scale = 1 if metric.startswith(("mae", "corr")) else 100
    for old in Path(folder).glob(f"{corpus.name}-robustness-*.png"):  # of a method no longer in the run
        old.unlink()
    out = {}
    for method in clean.index:
        curves = {kind: curve(method, CURVES[f"speech {kind}"], clean[method], means)
                  for kind in ("white noise", "babble")}
        curves = {k: v for k, v in curves.items() if v is not None}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
        levels = [c.level for c in snr_conditions("white")]
        x = [levels[0] + 10, *levels]  # clean drawn one step beyond the highest SNR
        for kind, values in curves.items():
            ax.plot(x, [scale * v for v in values], marker="o", label=kind)
        ax.set_xticks(x, ["clean", *(f"{v:g}" for v in levels)])
        ax.invert_xaxis()
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(f"{metric}" + ("" if scale == 1 else " (%)"))
        ax.set_title(f"{corpus.name}: {method}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"{corpus.name}-robustness-{_slug(method)}.png"
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / name)
        plt.close(fig)
        out[method] = name
    return out


def robustness_for(run_dir: str | Path, results: pd.DataFrame, corpus, folder: str | Path) -> RobustnessTable | None:
    """The robustness table of a run when RUN_DIR/robustness.parquet exists (None otherwise), with
    its score-versus-SNR plots written into ``folder``, the folder of the page that shows them."""
    path = Path(run_dir) / "robustness.parquet"
    if not path.exists():
        return None
    rob = pd.read_parquet(path)
    # only records of the models in the results: a stacking job re-run since `mmer robustness`
    # scored it has other scores now, and its old ones wait for the next scoring
    models = set(zip(results["method"], results["fold"], results["seed"], results["config_hash"]))
    rob = rob[[k in models for k in zip(rob["method"], rob["fold"], rob["seed"], rob["config_hash"])]]
    if rob.empty:
        return None
    return robustness_table(rob, results, corpus, snr_plots(rob, results, corpus, Path(folder)))


def robustness_section(run_dir: Path, results: pd.DataFrame, corpus, publish: str | Path | None = None) -> str:
    """The markdown of ``robustness_for`` with its plots beside the leaderboard (``publish``, else
    the run folder); "" without robustness results."""
    table = robustness_for(run_dir, results, corpus, Path(publish) if publish else Path(run_dir))
    return table.markdown() if table else ""
