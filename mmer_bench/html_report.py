"""The leaderboard as web pages: ``DIR/index.html`` and ``DIR/<corpus>.html`` with the figures in
``DIR/<corpus>/`` (matplotlib PNGs), written by the runner next to the markdown tables.

A corpus page holds its provenance, and per task: the sortable table (the markdown table's cells
plus the tie marks and calibration), per-run dot plots of the primary metric, the test confusion
matrices and reliability diagrams of every method (pooled over its fold x seed runs), and the
critical-difference diagram of the Friedman / Nemenyi ranking (Demšar 2006).
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from mmer_bench import stats
from mmer_bench.results import write_text

_PAGE = """{% macro table(id, header, rows) %}<table class="leaderboard" id="{{ id }}">
<thead><tr>{% for h in header %}<th title="click to sort">{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr class="{{ row.css }}">{% for cell in row.cells %}<td data-sort="{{ cell[1] }}"{% if cell[2] %} title="{{ cell[2] }}"{% endif %}>{{ cell[0] }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% endmacro -%}
{% macro figures(items) %}{% for figure in items %}<figure><img src="{{ figure.src }}" alt="{{ figure.alt }}"><figcaption>{{ figure.alt }}</figcaption></figure>
{% endfor %}{% endmacro -%}
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ corpus }} leaderboard - mmer-bench</title>
<meta name="mmer-summary" content="{{ summary }}">
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table.leaderboard { border-collapse: collapse; font-size: 0.9em; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
table.leaderboard td:first-child, table.leaderboard th:first-child { text-align: left; }
table.leaderboard th { background: #eef; cursor: pointer; user-select: none; }
tr.best td { background: #dfd; font-weight: bold; }
tr.tied td { background: #f3fbf3; }
.provenance { background: #f7f7f7; padding: 0.6em 1em; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: 100%; }
</style></head>
<body>
<p><a href="index.html">all corpora</a></p>
<h1>{{ corpus }} leaderboard</h1>
<div class="provenance"><ul>
{% for key, value in provenance %}<li><b>{{ key }}</b>: {{ value }}</li>
{% endfor %}</ul></div>
{% for task in tasks %}
<h2 id="{{ task.name }}">{{ task.name }} <small>({{ task.describe }})</small></h2>
<p>{{ task.interval }}</p>
{% if task.friedman %}<p>{{ task.friedman }}</p>{% endif %}
{{ table("table-" ~ task.name, task.header, task.rows) }}
<p><small>best: highest mean {{ task.primary }}; tied: not worse than the best at 0.05 after Holm's correction;
worse: significantly worse. ECE: top-label expected calibration error, 15 bins; Brier: multi-class
Brier score (sum over classes); NLL: negative log-likelihood; mean over runs.</small></p>
{{ figures(task.figures) }}
{% endfor %}
{% if robustness %}
<h2 id="robustness">{{ robustness.title }}</h2>
<p>{{ robustness.intro | code }}</p>
{{ table("table-robustness", robustness.header, robustness.rows) }}
{% if robustness.summary_rows %}<p>{{ robustness.summary_intro | code }}</p>
{{ table("table-robustness-summary", robustness.summary_header, robustness.summary_rows) }}{% endif %}
{{ figures(robustness.figures) }}
{% endif %}
<script>
// For checks in a browser: how many figures decoded (a broken image has naturalWidth 0).
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
});
// Click a column header to sort its table by that column (again to reverse).
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = th.dataset.order !== "asc";
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return ascending ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      th.dataset.order = ascending ? "asc" : "desc";
    });
  });
});
</script>
</body></html>
"""

_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mmer-bench leaderboards</title>
<style>body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 900px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 10px; }</style></head>
<body><h1>mmer-bench leaderboards</h1>
<p>Written by <code>mmer bench</code>; every number comes from the runner's results. Generated {{ generated }}.</p>
<table><thead><tr><th>Corpus</th><th>Best row</th></tr></thead><tbody>
{% for page in pages %}<tr><td><a href="{{ page.href }}">{{ page.corpus }}</a></td><td>{{ page.summary }}</td></tr>
{% endfor %}</tbody></table>
{% if across %}<h2>Across corpora</h2><p>{{ across.text }}</p>
<figure><img src="{{ across.src }}" alt="critical-difference diagram across corpora"><figcaption>methods ranked
by their mean primary test metric on each corpus</figcaption></figure>{% endif %}
</body></html>
"""


def _fmt(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}" if metric.startswith(("mae", "corr")) else f"{100 * value:.2f}"


def _figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def dot_plot(verdict: stats.TaskVerdicts, results: pd.DataFrame, task, order: list[str], path: Path) -> None:
    """Each fold x seed run of each method (colour: fold, marker: seed), with the row's interval."""
    plt = _pyplot()
    test = results[(results["split"] == "test") & (results["task"] == task.name) & (results["metric"] == verdict.primary)]
    folds = sorted(test["fold"].unique())
    seeds = sorted(test["seed"].unique())
    markers = "osD^v<>ph*"
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(order) + 2), 3.6))
    rng = np.random.default_rng(0)
    for x, method in enumerate(order):
        row = verdict.rows.loc[method]
        low, high = row.get(f"{verdict.primary}_low"), row.get(f"{verdict.primary}_high")
        if low is not None and not math.isnan(low):
            ax.plot([x, x], [low, high], color="black", lw=6, alpha=0.15, solid_capstyle="butt")
        ax.plot([x - 0.3, x + 0.3], [row[verdict.primary]] * 2, color="black", lw=1.5)
        mine = test[test["method"] == method]
        for _, r in mine.iterrows():
            ax.scatter(x + rng.uniform(-0.2, 0.2), r["value"], s=22, color=colours(folds.index(r["fold"]) % 10),
                       marker=markers[seeds.index(r["seed"]) % len(markers)], edgecolors="none", alpha=0.85)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(verdict.primary)
    ax.set_title(f"{task.name}: test {verdict.primary} per run (colour: fold, marker: seed; band: interval)",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _figure(fig, path)


def _grid(n: int):
    plt = _pyplot()
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def confusion_grid(test_preds: pd.DataFrame, task, order: list[str], path: Path) -> None:
    """Row-normalised test confusion matrix of every method, pooled over its runs."""
    fig, axes = _grid(len(order))
    n = task.num_classes
    short = [c[:4] for c in task.classes]
    for ax, method in zip(axes, order):
        mine = test_preds[test_preds["method"] == method]
        matrix = np.zeros((n, n))
        np.add.at(matrix, (mine["target"].to_numpy(), mine["pred"].to_numpy()), 1)
        normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{normalised[i, j]:.2f}".lstrip("0") if normalised[i, j] < 1 else "1",
                        ha="center", va="center", fontsize=6, color="white" if normalised[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), short, fontsize=6, rotation=90)
        ax.set_yticks(range(n), short, fontsize=6)
        ax.set_title(method, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("target", fontsize=7)
    fig.tight_layout()
    _figure(fig, path)


def reliability_grid(test_preds: pd.DataFrame, order: list[str], path: Path) -> None:
    """Top-label reliability diagram of every method (15 bins, pooled over its runs)."""
    fig, axes = _grid(len(order))
    for ax, method in zip(axes, order):
        mine = test_preds[test_preds["method"] == method]
        probs = np.stack(mine["probs"].to_numpy())
        confidence, accuracy, count = stats.reliability(probs, mine["target"].to_numpy())
        width = 1 / stats.CALIBRATION_BINS
        left = np.minimum(np.floor(confidence / width), stats.CALIBRATION_BINS - 1) * width  # the bin of each bar
        ax.bar(left, accuracy, width=width, align="edge", color="tab:blue", alpha=0.7, edgecolor="white")
        ax.plot(confidence, accuracy, "o", color="tab:red", ms=2.5)  # at the bin's mean confidence
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{method} (ECE {100 * stats.calibration(probs, mine['target'].to_numpy())['ece']:.1f}%)",
                     fontsize=8)
        ax.set_xlabel("confidence", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    _figure(fig, path)


def cd_diagram(verdict: stats.TaskVerdicts, path: Path) -> None:
    """Critical-difference diagram (scikit-posthocs) from the Nemenyi p-values and mean ranks."""
    import scikit_posthocs as sp

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(verdict.ranks)))
    sp.critical_difference_diagram(verdict.ranks, verdict.posthoc, ax=ax, cd=verdict.cd, label_props={"fontsize": 8})
    blocks = "corpora" if verdict.kind == "across" else "(fold, seed) blocks"
    ax.set_title(f"mean rank of {verdict.primary} over {len(verdict.blocks)} {blocks}; bars join "
                 "methods not different (Nemenyi, 0.05)", fontsize=8, pad=28)
    _figure(fig, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def corpus_page(directory: Path, corpus, results: pd.DataFrame, predictions: pd.DataFrame | None,
                verdicts: dict[str, stats.TaskVerdicts], tables: dict[str, tuple[list[str], list[dict]]],
                provenance: dict, robustness=None) -> Path:
    """Write ``directory/<corpus>.html`` and its figures; ``tables`` holds each task's (header, rows)
    as the markdown report renders them (each row: cells, sort keys, method). ``robustness``: the
    run's robustness_report.RobustnessTable (its plots already in ``directory``), the same object
    the markdown section is rendered from."""
    from jinja2 import Environment

    directory = Path(directory)
    figures_dir = directory / corpus.name
    for old in figures_dir.glob("*.png"):  # a method or task that left the run leaves no stale plot
        old.unlink()
    task_blocks = []
    for task in corpus.tasks:
        if task.name not in verdicts:
            continue
        verdict = verdicts[task.name]
        header, rows = tables[task.name]
        order = [r["method"] for r in rows]
        figures = []
        dots = figures_dir / f"{_slug(task.name)}-runs.png"
        dot_plot(verdict, results, task, order, dots)
        figures.append({"src": f"{corpus.name}/{dots.name}", "alt": f"{task.name}: test {verdict.primary} of every run"})
        if verdict.ranks is not None:
            cd = figures_dir / f"{_slug(task.name)}-cd.png"
            cd_diagram(verdict, cd)
            figures.append({"src": f"{corpus.name}/{cd.name}", "alt": f"{task.name}: critical-difference diagram"})
        if predictions is not None and task.kind == "classification":
            test_preds = predictions[(predictions["split"] == "test") & (predictions["task"] == task.name)]
            present = [m for m in order if (test_preds["method"] == m).any()]
            if present:
                confusion = figures_dir / f"{_slug(task.name)}-confusion.png"
                confusion_grid(test_preds, task, present, confusion)
                figures.append({"src": f"{corpus.name}/{confusion.name}",
                                "alt": f"{task.name}: test confusion matrices (row-normalised, pooled over runs)"})
                reliability = figures_dir / f"{_slug(task.name)}-reliability.png"
                reliability_grid(test_preds, present, reliability)
                figures.append({"src": f"{corpus.name}/{reliability.name}",
                                "alt": f"{task.name}: reliability diagrams (15 bins, pooled over runs)"})
        friedman = ""
        if verdict.friedman:
            friedman = (f"Friedman test over {len(verdict.blocks)} (fold, seed) blocks x {verdict.blocks.shape[1]} "
                        f"methods: chi2 = {verdict.friedman[0]:.2f}, p = {verdict.friedman[1]:.2g}; Nemenyi critical "
                        f"difference of mean ranks {verdict.cd:.2f}.")
        task_blocks.append({
            "name": task.name, "describe": task.describe(), "interval": verdict.description, "friedman": friedman,
            "primary": verdict.primary, "header": header, "figures": figures,
            "rows": [{"css": r["css"], "cells": list(zip(r["cells"], r["sort"]))} for r in rows],
        })
    first = verdicts.get(corpus.tasks[0].name)
    summary = ""
    if first is not None:
        best = first.rows.loc[first.best]
        summary = f"{first.best}: {first.primary} {_fmt(first.primary, best[first.primary])}"
    env = Environment(autoescape=True)
    env.filters["code"] = _code
    text = env.from_string(_PAGE).render(
        corpus=corpus.name, summary=summary, tasks=task_blocks, robustness=_robustness_block(robustness),
        provenance=[("Protocol", corpus.protocol), ("Command", provenance.get("command", "")),
                    ("Commit", provenance.get("git_commit", "")), ("Generated", provenance.get("generated_at", "")),
                    ("Runs", provenance.get("runs", ""))])
    path = directory / f"{corpus.name}.html"
    write_text(path, text)
    write_index(directory)
    return path


def _code(text: str) -> Markup:
    """Escaped text with its markdown `code` spans as <code> (the robustness notes are written once,
    for both the markdown and the page)."""
    return Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text)))


def _robustness_block(table) -> dict | None:
    if table is None:
        return None
    return {"title": table.title, "intro": table.intro, "header": table.header, "rows": table.rows,
            "summary_intro": table.summary_intro, "summary_header": table.summary_header,
            "summary_rows": table.summary_rows,
            "figures": [{"src": name, "alt": f"{method}: test score versus speech SNR (additive noise)"}
                        for method, name in table.plots.items()]}


def write_index(directory: Path) -> Path:
    """``directory/index.html``: a link to every corpus page there, with its best row."""
    from jinja2 import Environment

    pages = []
    for page in sorted(Path(directory).glob("*.html")):
        if page.name == "index.html":
            continue
        match = re.search(r'<meta name="mmer-summary" content="([^"]*)">', page.read_text())
        pages.append({"href": page.name, "corpus": page.stem, "summary": html.unescape(match.group(1)) if match else ""})
    text = Environment(autoescape=True).from_string(_INDEX).render(
        pages=pages, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        across=across_corpora(Path(directory)))
    path = Path(directory) / "index.html"
    write_text(path, text)
    return path


def across_corpora(directory: Path) -> dict | None:
    """Friedman test and CD diagram over the corpora of ``directory`` (their ``<corpus>.parquet``
    results): blocks are corpora, scores each method's mean test primary metric there; only the
    methods run on every corpus kept (a corpus missing one of them is left out when that keeps more
    methods). None when fewer than 3 methods share 2 or more corpora."""
    from mmer_bench.registry import CORPORA

    means = {}
    for path in sorted(Path(directory).glob("*.parquet")):
        name = path.stem
        if name not in CORPORA.names():  # a run folder's results / predictions tables
            continue
        corpus = CORPORA.get(name)()
        results = pd.read_parquet(path, columns=["corpus", "method", "split", "task", "metric", "value"])
        if corpus.primary_mode != "max":
            continue  # error metrics (MAE) do not rank against accuracies
        rows = results[(results["split"] == "test") & (results["task"] == corpus.tasks[0].name)
                       & (results["metric"] == corpus.primary_metric)]
        means[name] = rows.groupby("method")["value"].mean()
    table = pd.DataFrame(means).T  # corpora x methods
    best = None
    for drop in [[]] + [[c] for c in table.index]:  # every corpus, or all but one
        kept = table.drop(index=drop).dropna(axis=1)
        if len(kept) >= 2 and kept.shape[1] >= 3 and (best is None or kept.size > best.size):
            best = kept
    if best is None or not (best.nunique(axis=1) > 1).any():
        return None
    statistic, p = stats.friedman(best)
    ranks = stats.average_ranks(best)
    verdict = stats.TaskVerdicts("across", "", "primary metric", ranks.index[0], pd.DataFrame(), best,
                                 (statistic, p), ranks, stats.nemenyi(best), stats.nemenyi_cd(*best.shape[::-1]))
    cd_diagram(verdict, Path(directory) / "across-corpora-cd.png")
    return {"src": "across-corpora-cd.png",
            "text": f"{best.shape[1]} methods run on {len(best)} corpora ({', '.join(best.index)}): Friedman "
                    f"chi2 = {statistic:.2f}, p = {p:.2g}; Nemenyi critical difference {verdict.cd:.2f} "
                    f"(with so few corpora, only large rank gaps can show)."}


def write_reports(directory: Path, corpus, results: pd.DataFrame, predictions: pd.DataFrame | None,
                  provenance: dict, manifest: pd.DataFrame | None = None,
                  markdown_name: str | None = None, robustness=None) -> tuple[str, dict]:
    """The verdicts, ``directory/<markdown_name or corpus>.md`` linking ``directory/<corpus>.html``,
    its figures and the index. ``robustness`` (a robustness_report.RobustnessTable whose plots are
    in ``directory``) adds its section to both. Returns the markdown and the verdicts."""
    from mmer_bench.report import corpus_verdicts, markdown_lines

    directory = Path(directory)
    verdicts = corpus_verdicts(results, predictions, corpus, manifest)
    jobs = results.drop_duplicates(["method", "fold", "seed"])
    provenance = {**provenance, "runs": f"{len(jobs)} jobs: {jobs['method'].nunique()} methods x "
                                        f"{jobs['fold'].nunique()} folds x {jobs['seed'].nunique()} seeds"}
    page = f"{corpus.name}.html"
    lines, tables = markdown_lines(results, corpus, provenance, verdicts, page)
    markdown = "\n".join(lines) + "\n" + (robustness.markdown() if robustness is not None else "")
    write_text(directory / f"{markdown_name or corpus.name}.md", markdown)
    corpus_page(directory, corpus, results, predictions, verdicts, tables, provenance, robustness)
    return markdown, verdicts
