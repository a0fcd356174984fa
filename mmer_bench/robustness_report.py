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


def robustness_markdown(rob: pd.DataFrame, results: pd.DataFrame, corpus, plots: dict[str, str] | None = None) -> str:
    """The robustness section of a corpus's leaderboard (an empty string without conditions)."""
    if rob is None or rob.empty:
        return ""
    task = corpus.tasks[0]
    metric = corpus.primary_metric
    raw = metric.startswith(("mae", "corr"))
    clean = summarize(results, task.name, (metric,)).set_index("method")[metric]
    means = condition_means(rob, task.name, metric)
    conditions = [c for c in CONDITIONS if c in set(rob["condition"])]
    methods = [m for m in clean.sort_values(ascending=task.metric_mode(metric) == "min").index
               if m in set(rob["method"])]
    unit = "" if raw else " (%)"
    lines = ["", f"## Robustness: {task.name} {metric}{unit} under test-time conditions", "",
             "Generated by `mmer robustness`; do not edit by hand. The trained models of the rows above, their "
             "validation choices and training clips unchanged; only the test part is degraded "
             "(mmer_bench/features/perturb.py). Cells: mean over folds x seeds. "
             f"`{NA_CELL}`: the condition removes what the method needs (not scored on placeholder zeros); "
             f"`{UNAFFECTED_CELL}`: the method reads no input the condition touches (its clean score holds); "
             f"`{NOT_APPLICABLE_CELL}`: the condition cannot act on the method's features.", ""]
    header = ["Method", "clean", *conditions]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method, f"{clean[method]:.3f}" if raw else f"{100 * clean[method]:.2f}"]
        cells += [_cell(*means.get((method, c), ("missing", math.nan)), raw) for c in conditions]
        lines.append("| " + " | ".join(cells) + " |")
    summary = robustness_summary(methods, clean, means, conditions)
    if summary:
        stacker = next((m for m in methods if _is_stacker(m)), None)
        lines += ["", "MultiBench robustness along each degradation curve (clean, then its levels evenly spaced on "
                  "[0, 1]): relative = area under the curve; effective = sum over levels of the score minus the "
                  + (f"`{stacker}` (late fusion) curve moved to the method's clean score" if stacker else
                     "reference (no late-fusion row in this run: not computed)")
                  + (". Percentage points." if not raw else "."), ""]
        names = [n for n in CURVES if any(n in s for s in summary.values())]
        header = ["Method", *[f"{n}: relative" for n in names], *[f"{n}: effective" for n in names if stacker]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        scale = 1 if raw else 100
        for method in [m for m in methods if m in summary]:
            row = summary[method]
            cells = [method]
            cells += [f"{scale * row[n][0]:.2f}" if n in row else "" for n in names]
            if stacker:
                cells += [_signed(scale * row[n][1]) if n in row and row[n][1] is not None else "" for n in names]
            lines.append("| " + " | ".join(cells) + " |")
    if plots:
        lines += ["", "Score versus SNR: " + ", ".join(f"[{m}]({p})" for m, p in plots.items())]
    return "\n".join(lines) + "\n"


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


def robustness_section(run_dir: Path, results: pd.DataFrame, corpus, publish: str | Path | None = None) -> str:
    """The robustness section for the run's leaderboard when RUN_DIR/robustness.parquet exists,
    with its plots written beside the leaderboard (``publish``, else the run folder)."""
    path = Path(run_dir) / "robustness.parquet"
    if not path.exists():
        return ""
    rob = pd.read_parquet(path)
    rob = rob[rob["method"].isin(set(results["method"]))]
    plots = snr_plots(rob, results, corpus, Path(publish) if publish else Path(run_dir))
    return robustness_markdown(rob, results, corpus, plots)
