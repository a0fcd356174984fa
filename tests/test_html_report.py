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
