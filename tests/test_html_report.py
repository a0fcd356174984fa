"""The HTML leaderboard: written from results and predictions, and looked at in a real headless
browser (Debian's chromium): the table rows and figures are there and the page is not blank.

Without chromium the browser test skips with the reason; ``MMER_REQUIRE_BROWSER=1`` (set by
``.ci/run``) makes it fail instead."""

import re

import numpy as np
import pandas as pd
import pytest
from browser import loaded_dom, run_browser

from mmer_bench.html_report import write_reports
from mmer_bench.registry import CORPORA


def fake_runs(corpus, methods: dict[str, float], folds: list[str], seeds: list[int], clips_per_fold=120,
              cluster_size=1, rng=None):
    """Results and predictions of ``methods`` (name -> accuracy) in the runner's schema."""
    rng = rng or np.random.default_rng(0)
    results, predictions = [], []
    for task in corpus.tasks:
        n = task.num_classes
        for fold in folds:
            clip_ids = [f"{fold}_c{i}" for i in range(clips_per_fold)]
            target = rng.integers(0, n, clips_per_fold)
            for method, accuracy in methods.items():
                for seed in seeds:
                    right = rng.random(clips_per_fold // cluster_size).repeat(cluster_size) < accuracy
                    pred = np.where(right, target, (target + 1 + rng.integers(0, n - 1, clips_per_fold)) % n)
                    probs = rng.dirichlet(np.ones(n), clips_per_fold) * 0.4
                    probs[np.arange(clips_per_fold), pred] += 0.6
                    key = {"corpus": corpus.name, "method": method, "fold": fold, "seed": seed, "split": "test",
                           "task": task.name}
                    predictions.append(pd.DataFrame({**key, "clip_id": clip_ids, "target": target, "pred": pred,
                                                     "probs": list(probs)}))
                    scores = task.scores(probs, target)
                    results += [{**key, "metric": m, "value": v, "n_train": 3 * clips_per_fold, "n_val": clips_per_fold,
                                 "n_test": clips_per_fold, "n_params": 1000 * (1 + len(method)), "train_time_s": 1.5,
                                 "n_skipped": 0, "git_commit": "abc", "command": "mmer bench"} for m, v in scores.items()]
    return pd.DataFrame(results), pd.concat(predictions, ignore_index=True)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    synthetic = CORPORA.get("synthetic")()
    results, predictions = fake_runs(synthetic, {"strong": 0.8, "close": 0.78, "weak": 0.4, "chance": 0.17},
                                     ["fold0", "fold1", "fold2"], [0, 1])
    results.to_parquet(out / "synthetic.parquet")
    # the same methods on a second k-fold corpus: the index ranks them across corpora
    ravdess = CORPORA.get("ravdess")()
    other, _ = fake_runs(ravdess, {"strong": 0.7, "close": 0.72, "weak": 0.3, "chance": 0.13},
                         [f"fold{k}" for k in range(5)], [0])
    other.to_parquet(out / "ravdess.parquet")
    md_kfold = write_reports(out, synthetic, results, predictions, {"command": "mmer bench synthetic"})[0]
    meld = CORPORA.get("meld")()
    results, predictions = fake_runs(meld, {"text-a": 0.6, "text-b": 0.45, "text-c": 0.3}, ["official"], [0, 1, 2],
                                     clips_per_fold=300, cluster_size=5)
    manifest = pd.DataFrame({"clip_id": predictions["clip_id"].unique()})
    manifest["dialogue"] = [int(c.split("_c")[1]) // 5 for c in manifest["clip_id"]]
    md_official = write_reports(out, meld, results, predictions, {"command": "mmer bench meld"}, manifest)[0]
    return out, md_kfold, md_official


def test_markdown_says_interval_ties_and_links_the_page(pages):
    _, md_kfold, md_official = pages
    assert "Nadeau-Bengio corrected resampled t" in md_kfold and "test/train ratio 0.250" in md_kfold  # 120 / (360 + 120)
    assert "[synthetic.html](synthetic.html)" in md_kfold
    assert "cluster bootstrap over test dialogues" in md_official
    assert md_official.count("vs best (Holm p)") == 2  # emotion and sentiment tables
    for text in (md_kfold, md_official):
        assert "ECE (%)" in text and "| best |" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in md_kfold.splitlines() if line.startswith("| ")}
    assert "worse (p=" in rows["chance"] and "worse (p=" in rows["weak"]
    # strong and close differ by 2 points on 720 clips: one is the best, the other tied with it
    assert {rows["strong"].split(" | ")[4], rows["close"].split(" | ")[4]} & {"best"}
    assert "tied (p=" in rows["strong"] + rows["close"]


def test_pages_and_figures_written(pages):
    out, _, _ = pages
    index = (out / "index.html").read_text()
    assert 'href="synthetic.html"' in index and 'href="meld.html"' in index
    assert "4 methods run on 2 corpora (ravdess, synthetic)" in index
    assert (out / "across-corpora-cd.png").stat().st_size > 1000
    page = (out / "meld.html").read_text()
    for figure in re.findall(r'<img src="([^"]+)"', page):
        assert (out / figure).stat().st_size > 1000, figure
    names = sorted(p.name for p in (out / "meld").glob("*.png"))
    assert names == sorted(f"{t}-{kind}.png" for t in ("emotion", "sentiment")
                           for kind in ("runs", "cd", "confusion", "reliability"))


def test_page_in_a_headless_browser(pages, tmp_path):
    out, _, _ = pages
    url = (out / "synthetic.html").as_uri()
    dom, images, loaded = loaded_dom(tmp_path, out / "synthetic.html")
    assert images == 4 and loaded == images  # runs, CD, confusion, reliability: all decoded
    table = re.search(r'<table class="leaderboard" id="table-emotion">(.*?)</table>', dom, re.S).group(1)
    methods = re.findall(r'<tr class="[a-z]*"><td data-sort="([^"]+)">', table)
    assert sorted(methods) == ["chance", "close", "strong", "weak"]

    shot = tmp_path / "page.png"
    done = run_browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", url)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    # A blank (white) page has no variance; text, table and plots give plenty, on much of the page.
    assert pixels.std() > 20, f"screenshot looks blank (pixel std {pixels.std():.1f})"
    assert (pixels < 200).mean() > 0.02


def fake_robustness(results: pd.DataFrame, rng) -> pd.DataFrame:
    """Records as `mmer robustness` writes them: "strong" under every white-noise level (falling
    with the SNR) and n/a with the speech removed; the others unaffected."""
    rows = []
    runs = results[results["split"] == "test"].drop_duplicates(["method", "fold", "seed"])
    for _, run in runs.iterrows():
        key = {"corpus": run["corpus"], "method": run["method"], "fold": run["fold"], "seed": run["seed"],
               "split": "test", "task": "emotion", "condition_version": "1"}
        for condition, drop in (("speech-white-20db", 0.0), ("speech-white-10db", 0.1), ("speech-white-5db", 0.2),
                                ("speech-white-0db", 0.4), ("speech-removed", None)):
            if run["method"] != "strong":
                rows.append({**key, "condition": condition, "status": "unaffected", "reason": "reads no speech input",
                             "metric": None, "value": float("nan")})
            elif drop is None:
                rows.append({**key, "condition": condition, "status": "n/a", "metric": None, "value": float("nan"),
                             "reason": "its only modality (speech) is removed"})
            else:
                rows.append({**key, "condition": condition, "status": "scored", "reason": "inputs ['speech']",
                             "metric": "accuracy", "value": 0.8 - drop + 0.01 * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_robustness_section_is_the_same_on_the_page_and_in_the_markdown(tmp_path):
    from mmer_bench.robustness_report import robustness_table, snr_plots

    corpus = CORPORA.get("synthetic")()
    rng = np.random.default_rng(1)
    results, predictions = fake_runs(corpus, {"strong": 0.8, "weak": 0.4, "chance": 0.17}, ["fold0", "fold1"], [0],
                                     rng=rng)
    rob = fake_robustness(results, rng)
    table = robustness_table(rob, results, corpus, snr_plots(rob, results, corpus, tmp_path))
    markdown = write_reports(tmp_path, corpus, results, predictions, {"command": "mmer robustness"},
                             robustness=table)[0]
    page = (tmp_path / "synthetic.html").read_text()
    assert markdown.endswith(table.markdown()) and (tmp_path / "synthetic.md").read_text() == markdown
    section = markdown.split("## Robustness")[1]
    md_rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
               if line.startswith("| ") and not line.startswith("| Method")]
    body = re.search(r'<table class="leaderboard" id="table-robustness">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    html_rows = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
                 for r in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
    assert html_rows == md_rows[:3] and [r[0] for r in html_rows] == ["strong", "weak", "chance"]
    assert html_rows[0][-1] == "n/a" and html_rows[1][2] == "·"
    assert 'title="speech-removed: n/a, its only modality (speech) is removed">n/a</td>' in page
    assert "<code>mmer robustness</code>" in page  # the note's markdown code spans, as HTML
    assert table.plots == {"strong": "synthetic-robustness-strong.png"}
    assert '<img src="synthetic-robustness-strong.png"' in page
    assert (tmp_path / "synthetic-robustness-strong.png").stat().st_size > 1000
    # The relative robustness of "strong": the trapezoid area under its mean curve.
    strong = rob[(rob["method"] == "strong") & (rob["status"] == "scored")].groupby("condition")["value"].mean()
    clean = results.query("method == 'strong' and split == 'test' and metric == 'accuracy'")["value"].mean()
    curve = [clean, *(strong[f"speech-white-{snr}db"] for snr in (20, 10, 5, 0))]
    assert f"| strong | {100 * np.trapezoid(curve, dx=0.25):.2f} |" in markdown
