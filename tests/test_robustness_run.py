"""`mmer robustness` on a small synthetic run: checkpoints reproduce the clean predictions, the
n/a rule and the stacker's fallback on real job folders, records schema, free re-runs, the
table's clean column equal to the leaderboard's, scoring in a pool of processes equal to scoring
one job after another, and the published page showing the table and plot in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from browser import loaded_dom

from mmer_bench import cli, robustness
from mmer_bench.data import CorpusDataModule
from mmer_bench.features.store import FeatureStore
from mmer_bench.fusion import align, fuse
from mmer_bench.launchers import sbatch_available
from mmer_bench.progress import QuietBoard
from mmer_bench.protocols import Fold
from mmer_bench.registry import CORPORA, METHODS
from mmer_bench.results import RESULT_COLUMNS
from mmer_bench.robustness_report import robustness_for, robustness_markdown
from mmer_bench.runner import BenchConfig, Runner
from mmer_bench.train import CHECKPOINT, predict

pytestmark = pytest.mark.slow
# every white-noise level: the page gets a score-versus-SNR plot and the MultiBench summary
CONDITIONS = ["speech-white-20db", "speech-white-10db", "speech-white-5db", "speech-white-0db", "speech-removed",
              "face-noise-1sd"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rob-run")
    config = BenchConfig(corpus="synthetic", methods=["egemaps-mlp", "luna2022-au-mlp", "luna2022-fusion"],
                         folds=["fold0"], out=str(out), loggers=["csv"], workers=1,
                         hparams={"egemaps-mlp": {"max_epochs": 30}, "luna2022-au-mlp": {"max_epochs": 60},
                                  # the paper's recipe: fit on the sources' training-clip posteriors
                                  "luna2022-fusion": {"recipe": "in-sample"}})
    results = Runner(config).run()
    rob = robustness.score_run(out, CONDITIONS, workers=1, progress=QuietBoard())
    return out, results, rob


def test_checkpoint_reproduces_the_clean_test_predictions(run):
    out, _, _ = run
    corpus = CORPORA.get("synthetic")()
    manifest = corpus.manifest()
    fold = corpus.plan(manifest)[0]
    job = out / "jobs" / "egemaps-mlp" / "fold0-seed0"
    state = torch.load(job / CHECKPOINT, weights_only=True)
    cls = METHODS.get("egemaps-mlp")
    details = json.loads((job / "job.json").read_text())
    model = cls(corpus.tasks, state["input_dims"], state["class_counts"], **details["hparams"])
    model.load_state_dict(state["state_dict"])
    # A refit model's scalers were fitted on train + val: the scorer rebuilds that fold too.
    assert details["trained_on"] == ("train+val" if details["hparams"]["refit"] else "train")
    if details["hparams"]["refit"]:
        fold = Fold(fold.name, fold.train + fold.val, fold.val, fold.test)
    dm = CorpusDataModule(corpus, manifest, fold, cls.inputs, cls.scaling, FeatureStore(), workers=1)
    dm.setup()
    again = predict(model, dm.part_dataloader("test"))["emotion"]
    saved = pd.read_parquet(job / "predictions.parquet").query("split == 'test'")
    assert list(saved["clip_id"]) == again["clip_id"]
    np.testing.assert_allclose(np.stack(saved["probs"]), again["probs"], atol=1e-6)


def test_records_follow_the_rules(run):
    out, results, rob = run
    assert set(RESULT_COLUMNS + ["condition"]) <= set(rob.columns)
    assert (out / "robustness.parquet").exists()
    status = rob.drop_duplicates(["method", "condition"]).set_index(["method", "condition"])["status"]
    assert status["egemaps-mlp", "speech-removed"] == "n/a"
    assert rob.query("method == 'egemaps-mlp' and condition == 'speech-removed'")["value"].isna().all()
    assert status["egemaps-mlp", "speech-white-0db"] == "scored"
    assert status["egemaps-mlp", "face-noise-1sd"] == "unaffected"
    assert status["luna2022-au-mlp", "speech-white-0db"] == "unaffected"
    assert status["luna2022-au-mlp", "face-noise-1sd"] == "scored"
    assert status["luna2022-fusion", "speech-removed"] == "scored"
    # Noise at 0 dB changes what the speech model predicts; only the test part is scored.
    noisy = pd.read_parquet(out / "jobs/egemaps-mlp/fold0-seed0" / robustness.CONDITION_PREDICTIONS)
    clean = pd.read_parquet(out / "jobs/egemaps-mlp/fold0-seed0/predictions.parquet").query("split == 'test'")
    noisy = noisy[noisy["condition"] == "speech-white-0db"]
    assert list(noisy["clip_id"]) == list(clean["clip_id"])
    assert not np.allclose(np.stack(noisy["probs"]), np.stack(clean["probs"]))
    assert set(rob["split"]) == {"test"}


def test_fusion_without_audio_falls_back_to_the_face_source(run):
    out, _, rob = run
    corpus = CORPORA.get("synthetic")()
    labels = corpus.manifest().set_index("clip_id")["emotion"]
    table = pd.read_parquet(out / "jobs/luna2022-au-mlp/fold0-seed0/predictions.parquet")

    def frame(part):
        rows = table[table["split"] == part]
        return pd.DataFrame(np.stack(rows["probs"]), columns=list(corpus.tasks[0].classes)).assign(
            clip_id=rows["clip_id"].to_numpy())

    train, test = align({"au": frame("train")}, corpus.tasks[0].classes, "t"), align({"au": frame("test")},
                                                                                       corpus.tasks[0].classes, "t")
    expected = (fuse(train, labels.loc[train.index].to_numpy(), test).argmax(1) == labels.loc[test.index]).mean()
    fused = rob.query("method == 'luna2022-fusion' and condition == 'speech-removed' and metric == 'accuracy'")
    assert fused["value"].iloc[0] == pytest.approx(expected)


def test_a_rerun_is_free_and_the_table_matches_the_leaderboard(run, monkeypatch):
    out, results, rob = run
    monkeypatch.setattr(robustness, "evaluate_condition", lambda *a, **k: pytest.fail("scored again"))
    again = robustness.score_run(out, CONDITIONS, workers=1, progress=QuietBoard())
    assert len(again) == len(rob)
    corpus = CORPORA.get("synthetic")()
    markdown = robustness_markdown(rob, results, corpus)
    row = next(line for line in markdown.splitlines() if line.startswith("| egemaps-mlp |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    leaderboard = (out / "leaderboard.md").read_text()
    clean_cell = next(line for line in leaderboard.splitlines() if line.startswith("| egemaps-mlp |")).split("|")[2]
    assert clean_cell.split()[0] == cells[1]  # the same mean, to the digit
    assert "n/a" in cells
    # a condition no method of the run reads gets no column, and is named
    only_speech = rob[rob["method"] == "egemaps-mlp"]
    header = next(line for line in robustness_markdown(only_speech, results, corpus).splitlines() if line.startswith("| Method"))
    assert "speech-white-0db" in header and "face-noise-1sd" not in header
    assert "without a column: " in robustness_markdown(only_speech, results, corpus)


def test_a_stacking_job_rerun_after_scoring_is_scored_again_and_its_old_scores_never_shown(run, tmp_path, monkeypatch):
    out, _, rob = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    # The fusion re-run with another setting (as when its sources change): the folder still holds
    # the robustness records of the earlier stacker.
    config = BenchConfig(corpus="synthetic", methods=["egemaps-mlp", "luna2022-au-mlp", "luna2022-fusion"],
                         folds=["fold0"], out=str(copy), loggers=["csv"], workers=1,
                         hparams={"egemaps-mlp": {"max_epochs": 30}, "luna2022-au-mlp": {"max_epochs": 60},
                                  "luna2022-fusion": {"recipe": "in-sample", "C": 0.01}})
    results = Runner(config).run()
    fusion = copy / "jobs" / "luna2022-fusion" / "fold0-seed0"
    new_hash = json.loads((fusion / "DONE").read_text())["config_hash"]
    old = rob[rob["method"] == "luna2022-fusion"]
    assert set(old["config_hash"]) != {new_hash}
    assert (fusion / robustness.ROBUSTNESS_FILE).exists()

    corpus = CORPORA.get("synthetic")()
    table = robustness_for(copy, results, corpus, tmp_path / "plots")
    assert "| luna2022-fusion |" not in table.markdown()  # not the old stacker's scores
    assert "| egemaps-mlp |" in table.markdown()

    # Scoring again redoes the fusion alone: the trained models' scores are still current.
    monkeypatch.setattr(robustness, "evaluate_condition", lambda *a, **k: pytest.fail("a training job scored again"))
    again = robustness.score_run(copy, CONDITIONS, workers=1, progress=QuietBoard())
    fused = again[again["method"] == "luna2022-fusion"]
    assert set(fused["config_hash"]) == {new_hash}
    assert set(fused["condition"]) == set(CONDITIONS)
    key = ["condition", "task", "metric"]
    both = old.merge(fused, on=key, suffixes=("_old", "_new")).dropna(subset=["value_old", "value_new"])
    assert len(both) > 0 and not np.allclose(both["value_old"], both["value_new"])
    kept = pd.read_parquet(fusion / robustness.CONDITION_PREDICTIONS)
    assert len(kept) == len(kept.drop_duplicates(["condition", "task", "clip_id"]))  # no old posteriors left
    assert "| luna2022-fusion |" in robustness_for(copy, results, corpus, tmp_path / "plots").markdown()


def _copy_without_robustness(out, target, cache_dir):
    """The run's job folders as they were before `mmer robustness`, reading a fresh feature store."""
    shutil.copytree(out / "jobs", target / "jobs", ignore=shutil.ignore_patterns(
        robustness.ROBUSTNESS_FILE, robustness.CONDITION_PREDICTIONS, robustness.UNIT_DIR))
    for path in (target / "jobs").glob("*/*/job.json"):
        details = json.loads(path.read_text())
        details["job"]["config"]["cache_dir"] = str(cache_dir)
        path.write_text(json.dumps(details))
    shutil.copy(out / "results.parquet", target / "results.parquet")


def test_scoring_in_a_pool_equals_scoring_one_after_another(run, tmp_path):
    out, _, rob = run
    copy, cache = tmp_path / "run", tmp_path / "cache"
    _copy_without_robustness(out, copy, cache)
    units = robustness.plan_units(copy, [robustness.perturb.get_condition(c) for c in CONDITIONS])
    assert {u.job_id: u.depends_on for u in units}["luna2022-fusion/fold0-seed0"] == (
        "egemaps-mlp/fold0-seed0", "luna2022-au-mlp/fold0-seed0")
    # Everything the units read is extracted before they start (4 noisy eGeMAPS sets, 1 noisy AU
    # set); the units, two processes at a time, extract nothing more.
    conditions = [robustness.perturb.get_condition(c) for c in CONDITIONS]
    assert robustness.prepare_conditions(units, conditions, workers=1) == 5
    stored = {p: p.stat().st_mtime_ns for p in (cache / "features").rglob("*.parquet")}
    parallel = robustness.score_run(copy, CONDITIONS, workers=1, jobs=2, progress=QuietBoard())
    assert {p: p.stat().st_mtime_ns for p in (cache / "features").rglob("*.parquet")} == stored
    logs = sorted(copy.glob(f"jobs/*/*/{robustness.UNIT_DIR}/job.log"))
    assert len(logs) == 3  # each unit ran in a pool worker (which keeps its log)

    key = ["method", "fold", "seed", "condition", "task", "metric"]
    a = rob.sort_values(key, na_position="first").reset_index(drop=True)
    b = parallel.sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + ["status", "reason"]], b[key + ["status", "reason"]])
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())  # NaN where not scored
    for job in ("egemaps-mlp", "luna2022-au-mlp", "luna2022-fusion"):
        one = pd.read_parquet(out / "jobs" / job / "fold0-seed0" / robustness.CONDITION_PREDICTIONS)
        two = pd.read_parquet(copy / "jobs" / job / "fold0-seed0" / robustness.CONDITION_PREDICTIONS)
        assert list(one["clip_id"]) == list(two["clip_id"])
        np.testing.assert_array_equal(np.stack(one["probs"]), np.stack(two["probs"]))


def _cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)]


def test_published_page_shows_the_robustness_table_and_plot(run, tmp_path):
    out, _, rob = run
    published = tmp_path / "leaderboard"
    assert cli.main(["robustness", str(out), "--conditions", ",".join(CONDITIONS), "--publish", str(published)]) == 0
    markdown = (published / "synthetic.md").read_text()
    page = (published / "synthetic.html").read_text()
    assert "## Robustness: emotion accuracy (%)" in markdown and '<h2 id="robustness">' in page
    assert 'href="synthetic.html"' in (published / "index.html").read_text()
    # The page's robustness rows are the markdown's, cell for cell.
    section = markdown.split("## Robustness")[1]
    md_rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
               if line.startswith("| ") and not line.startswith("| Method")]
    html_rows = [_cells(r) for table in re.findall(r'<table class="leaderboard" id="table-robustness(?:-summary)?">'
                                                   r'(.*?)</table>', page, re.S)
                 for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S)]
    assert html_rows == md_rows and len(html_rows) >= 3
    # An n/a cell says why in its tooltip (the reason recorded for its runs).
    na = re.search(r'<td data-sort="-Infinity" title="speech-removed: n/a, its only modality \(speech\) is '
                   r'removed">n/a</td>', page)
    assert na, "no n/a cell with its reason"
    plot = "synthetic-robustness-egemaps-mlp.png"
    assert f'<img src="{plot}"' in page and (published / plot).stat().st_size > 1000

    dom, images, loaded = loaded_dom(tmp_path, published / "synthetic.html")
    assert loaded == images and images >= 5  # runs, CD, confusion, reliability and the SNR plot(s) decoded
    table = re.search(r'<table class="leaderboard" id="table-robustness">(.*?)</table>', dom, re.S).group(1)
    methods = [_cells(r)[0] for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S)]
    assert sorted(methods) == sorted(set(rob["method"]))


def test_slurm_scoring_equals_scoring_in_process(run, tmp_path):
    if not sbatch_available():
        if os.environ.get("MMER_REQUIRE_SLURM") == "1":
            pytest.fail("MMER_REQUIRE_SLURM=1 but sbatch is not on PATH (start the cluster with .ci/slurm/start.sh)")
        pytest.skip("no SLURM here (sbatch is not on PATH; .ci/slurm/start.sh starts a single-node cluster)")
    out, _, rob = run
    copy = tmp_path / "run"
    _copy_without_robustness(out, copy, tmp_path / "cache")
    root = Path(__file__).resolve().parents[1]  # the SLURM jobs import mmer_bench from the working directory
    done = subprocess.run([sys.executable, "-m", "mmer_bench.cli", "robustness", str(copy), "--conditions",
                           ",".join(CONDITIONS), "--launcher", "slurm", "--cpus-per-job", "1", "--time", "10"],
                          capture_output=True, text=True, timeout=900, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    records = json.loads((copy / robustness.LAUNCH_DIR / "launch" / "slurm.json").read_text())
    assert len(records) == 3 and all(r["slurm_id"] for r in records.values())
    key = ["method", "fold", "seed", "condition", "task", "metric"]
    a = rob.sort_values(key, na_position="first").reset_index(drop=True)
    b = pd.read_parquet(copy / "robustness.parquet").sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + ["status"]], b[key + ["status"]])
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())
