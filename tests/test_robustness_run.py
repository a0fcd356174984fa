"""`mmer robustness` on a small synthetic run: checkpoints reproduce the clean predictions, the
n/a rule and the stacker's fallback on real job folders, records schema, free re-runs, the
table's clean column equal to the leaderboard's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmer_bench import robustness
from mmer_bench.data import CorpusDataModule
from mmer_bench.features.store import FeatureStore
from mmer_bench.fusion import align, fuse
from mmer_bench.protocols import Fold
from mmer_bench.registry import CORPORA, METHODS
from mmer_bench.results import RESULT_COLUMNS
from mmer_bench.robustness_report import robustness_markdown
from mmer_bench.runner import BenchConfig, Runner
from mmer_bench.train import CHECKPOINT, predict

pytestmark = pytest.mark.slow
CONDITIONS = ["speech-white-0db", "speech-removed", "face-noise-1sd"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rob-run")
    config = BenchConfig(corpus="synthetic", methods=["egemaps-mlp", "luna2022-au-mlp", "luna2022-fusion"],
                         folds=["fold0"], out=str(out), loggers=["csv"], workers=1,
                         hparams={"egemaps-mlp": {"max_epochs": 30}, "luna2022-au-mlp": {"max_epochs": 60},
                                  # the paper's recipe: fit on the sources' training-clip posteriors
                                  "luna2022-fusion": {"recipe": "in-sample"}})
    results = Runner(config).run()
    rob = robustness.score_run(out, CONDITIONS, workers=1)
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
    again = robustness.score_run(out, CONDITIONS, workers=1)
    assert len(again) == len(rob)
    corpus = CORPORA.get("synthetic")()
    markdown = robustness_markdown(rob, results, corpus)
    row = next(line for line in markdown.splitlines() if line.startswith("| egemaps-mlp |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    leaderboard = (out / "leaderboard.md").read_text()
    clean_cell = next(line for line in leaderboard.splitlines() if line.startswith("| egemaps-mlp |")).split("|")[2]
    assert clean_cell.split()[0] == cells[1]  # the same mean, to the digit
    assert "n/a" in cells
