"""The runner end to end on the synthetic corpus: learning, resume, crash safety, reports."""

import json
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
from wandb_records import read_run

from mmer_bench.runner import BenchConfig, run_bench

METHODS = ["luna2022-au-mlp", "egemaps-mlp", "text-mlp", "luna2022-fusion"]


def config(out, **kw):
    return BenchConfig(corpus="synthetic", methods=METHODS, out=str(out), loggers=["csv"], workers=2, **kw)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_bench(config(out, publish=str(out / "published")))
    return out, results


def test_methods_learn_clearly_above_chance(synthetic_run):
    _, results = synthetic_run
    test = results[(results["split"] == "test") & (results["metric"] == "accuracy")]
    means = test.groupby("method")["value"].mean()
    assert set(means.index) == set(METHODS)
    assert len(test) == 4 * 3  # 4 methods x 3 folds x 1 seed
    chance = 1 / 6
    for method, accuracy in means.items():
        assert accuracy > chance + 0.25, f"{method} only reaches {accuracy:.2f}"


def test_results_schema_and_provenance(synthetic_run):
    out, results = synthetic_run
    for column in ["corpus", "method", "fold", "seed", "split", "task", "metric", "value", "git_commit",
                   "config_hash", "wall_time_s", "n_params", "protocol"]:
        assert column in results.columns
    assert set(results["metric"]) == {"accuracy", "uar", "macro_f1", "weighted_f1"}
    preds = pd.read_parquet(out / "predictions.parquet")
    test = preds[(preds["split"] == "test") & (preds["method"] == "egemaps-mlp")]
    assert len(test) == 288 and test["clip_id"].nunique() == 288
    assert abs(test["probs"].map(sum).mean() - 1) < 1e-4
    # Accuracy in results.parquet is recomputable from the stored predictions.
    fold0 = test[test["fold"] == "fold0"]
    stored = results.query("method == 'egemaps-mlp' and fold == 'fold0' and split == 'test' and metric == 'accuracy'")
    assert abs((fold0["pred"] == fold0["target"]).mean() - stored["value"].item()) < 1e-6
    confusion = json.loads((out / "jobs/egemaps-mlp/fold0-seed0/job.json").read_text())["test_confusion"]["emotion"]
    assert sum(map(sum, confusion)) == len(fold0) and sum(confusion[i][i] for i in range(6)) == (fold0["pred"] == fold0["target"]).sum()


def test_leaderboard_rendered(synthetic_run):
    out, _ = synthetic_run
    text = (out / "published" / "synthetic.md").read_text()
    assert text == (out / "leaderboard.md").read_text()
    for method in METHODS:
        assert f"| {method}" in text
    assert "| luna2022-fusion (stacked on inner-CV posteriors) |" in text
    assert "Protocol: subject-wise" in text and "95%" in text
    assert pd.read_parquet(out / "published" / "synthetic.parquet").shape[0] > 0
    assert "[synthetic.html](synthetic.html)" in text and "Nadeau-Bengio" in text
    page = (out / "published" / "synthetic.html").read_text()
    assert all(f'<td data-sort="{method}">' in page for method in METHODS)
    assert 'href="synthetic.html"' in (out / "published" / "index.html").read_text()


def test_rerun_skips_finished_jobs(synthetic_run, monkeypatch):
    out, _ = synthetic_run
    done = {p: p.stat().st_mtime_ns for p in out.glob("jobs/*/*/DONE")}
    assert len(done) == 12

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(L.Trainer, "fit", no_training)
    run_bench(config(out))
    assert {p: p.stat().st_mtime_ns for p in out.glob("jobs/*/*/DONE")} == done


def test_interrupted_bench_resumes_without_losing_work(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fits = []
    real_fit = L.Trainer.fit

    def crashing_fit(self, model, *args, **kwargs):
        fits.append(type(model).__name__)
        if len(fits) == 2:
            raise RuntimeError("simulated crash (out of memory, pre-emption, ...)")
        return real_fit(self, model, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", crashing_fit)
    cfg = config(out, folds=["fold0", "fold1"])
    cfg.methods = ["luna2022-au-mlp"]
    with pytest.raises(RuntimeError, match="1 of 2 jobs failed"):
        run_bench(cfg)
    assert (out / "jobs/luna2022-au-mlp/fold0-seed0/DONE").exists()
    assert (out / "jobs/luna2022-au-mlp/fold1-seed0/FAILED").exists()
    kept = pd.read_parquet(out / "results.parquet")
    assert set(kept["fold"]) == {"fold0"}  # the finished job is in the results already

    fits.clear()
    monkeypatch.setattr(L.Trainer, "fit", lambda self, model, *a, **k: fits.append(1) or real_fit(self, model, *a, **k))
    results = run_bench(cfg)
    assert len(fits) == 1  # only the failed job ran again
    assert set(results["fold"]) == {"fold0", "fold1"}


def test_changed_config_is_not_mixed_with_old_results(synthetic_run):
    out, _ = synthetic_run
    cfg = config(out)
    cfg.hparams = {"egemaps-mlp": {"hidden": 16}}
    # the message says what changed, so the user knows whether to delete the folder
    with pytest.raises(RuntimeError, match=r"another configuration.*settings\.model\.hidden: \d+ -> 16"):
        run_bench(cfg)


def test_wandb_offline_logging(tmp_path):
    cfg = BenchConfig(corpus="synthetic", methods=["luna2022-au-mlp"], folds=["fold0"], out=str(tmp_path),
                      loggers=["wandb", "csv"], hparams={"luna2022-au-mlp": {"max_epochs": 3}})
    results = run_bench(cfg)
    runs = [read_run(r) for r in sorted((tmp_path / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2  # the job's run and the bench's leaderboard run
    job = next(r for r in runs if r["run"].job_type == "luna2022-au-mlp")
    assert job["run"].run_group == "synthetic" and job["run"].display_name == "synthetic/luna2022-au-mlp/fold0-seed0"
    config = job["config"]
    assert (config["corpus"], config["method"], config["fold"], config["seed"]) == ("synthetic", "luna2022-au-mlp", "fold0", 0)
    assert config["hparams"]["max_epochs"] == 3 and config["features"] == {"au": {"extractor": "au-means"}}
    test = results.query("split == 'test'").set_index("metric")["value"]
    for metric in ("accuracy", "uar", "macro_f1", "weighted_f1"):
        assert job["summary"][f"test/emotion/{metric}"] == pytest.approx(test[metric])
    assert any(k.startswith("test/emotion/confusion") for k in job["history"])
    board = next(r for r in runs if r["run"].job_type == "leaderboard")
    assert board["summary"]["leaderboard/emotion/best"] == "luna2022-au-mlp"
    assert board["history"]["leaderboard/emotion/nrows"] == [1]
    metrics = pd.read_csv(tmp_path / "jobs/luna2022-au-mlp/fold0-seed0/csv/metrics.csv")
    assert "val/emotion/accuracy" in metrics.columns


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path):
    command = [sys.executable, "-m", "mmer_bench.cli", "bench", "synthetic", "--methods", "luna2022-au-mlp",
               "--folds", "fold0", "--seeds", "0", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
               "--loggers", "csv", "--max-epochs", "20", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "jobs/luna2022-au-mlp/fold0-seed0/job.json").read_text())
    assert info["devices"] == "2"
    results = pd.read_parquet(tmp_path / "results.parquet")
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.15


def test_every_method_predicts_the_same_clips_per_part(synthetic_run):
    """Refit methods train on train + val, yet their train/val/test predictions follow the fold."""
    out, _ = synthetic_run
    preds = pd.read_parquet(out / "predictions.parquet")
    parts = preds.groupby(["method", "fold", "split"])["clip_id"].apply(frozenset).unstack("method")
    assert (parts.nunique(axis=1) == 1).all()


def test_fusion_is_redone_when_a_run_adds_a_method(tmp_path):
    def run(methods):
        run_bench(BenchConfig(corpus="synthetic", methods=methods, folds=["fold0"], out=str(tmp_path),
                              loggers=["csv"], hparams={"egemaps-mlp": {"max_epochs": 5}, "luna2022-au-mlp": {"max_epochs": 5}}))
        return json.loads((tmp_path / "jobs/luna2022-fusion/fold0-seed0/job.json").read_text())["fused"]

    assert run(["luna2022-au-mlp", "luna2022-fusion"]) == ["luna2022-au-mlp"]
    assert run(["luna2022-au-mlp", "egemaps-mlp", "luna2022-fusion"]) == ["luna2022-au-mlp", "egemaps-mlp"]


def test_benchmark_config_feeds_a_method_other_features(tmp_path):
    """`inputs:` swaps an input's extractor (recorded in job.json and the config hash); an input
    the method does not have, or an unknown extractor, is refused before anything trains."""
    cfg = BenchConfig(corpus="synthetic", methods=["egemaps-mlp"], folds=["fold0"], out=str(tmp_path),
                      loggers=["csv"], inputs={"egemaps-mlp": {"speech": "au-means"}},
                      hparams={"egemaps-mlp": {"max_epochs": 60}})
    results = run_bench(cfg)
    info = json.loads((tmp_path / "jobs/egemaps-mlp/fold0-seed0/job.json").read_text())
    assert info["features"] == {"speech": {"extractor": "au-means"}}
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.3  # the synthetic AU means separate the emotions well
    cfg.inputs = {"egemaps-mlp": {"speech": "egemaps"}}
    with pytest.raises(RuntimeError, match="another configuration"):
        run_bench(cfg)
    for bad, message in [({"audio": "egemaps"}, "method's inputs"), ({"speech": "no-such"}, "no-such")]:
        cfg = BenchConfig(corpus="synthetic", methods=["egemaps-mlp"], out=str(tmp_path / "bad"), inputs={"egemaps-mlp": bad})
        with pytest.raises((ValueError, KeyError), match=message):
            run_bench(cfg)


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    from mmer_bench.jobs import resolve_settings

    assert resolve_settings("egemaps-mlp", {"lr": "5e-4"})["model"]["lr"] == 5e-4


def test_fusion_reports_sources_that_fit_their_training_clips(synthetic_run):
    """Stacking on in-sample posteriors over-weights a source that is perfect on its training
    clips: job.json names exactly the sources whose training accuracy is 99% or more."""
    out, results = synthetic_run
    train = results.query("split == 'train' and metric == 'accuracy'").set_index(["method", "fold"])["value"]
    for job in (out / "jobs/luna2022-fusion").iterdir():
        info = json.loads((job / "job.json").read_text())
        fold = job.name.split("-seed")[0]
        expected = {m for m in info["fused"] if train[m, fold] >= 0.99}
        assert set(info["sources_fitting_train"]) == expected


def test_fusion_stacks_on_inner_cv_posteriors(synthetic_run):
    """The default stacker learns from out-of-fold posteriors of the fold's training clips: every
    fused method is trained on inner folds of the training speakers (jobs/<method>/inner/), whose
    test parts cover each training clip once and never an outer test clip; the inner jobs stay out
    of the results, and the fusion still learns."""
    out, results = synthetic_run
    assert not results["fold"].str.contains("inner").any()
    preds = pd.read_parquet(out / "predictions.parquet")
    for job in sorted((out / "jobs/luna2022-fusion").iterdir()):
        info = json.loads((job / "job.json").read_text())
        fold = job.name.split("-seed")[0]
        assert info["recipe"] == "inner-cv" and info["fused"] == METHODS[:-1]
        parts = preds[(preds["method"] == "luna2022-fusion") & (preds["fold"] == fold)].groupby("split")["clip_id"].apply(set)
        assert info["fit_clips"] == len(parts["train"]) + len(parts["val"])
        for source in info["fused"]:
            inner = [pd.read_parquet(p) for p in sorted((out / "jobs" / source / "inner").glob(f"{fold}-inner*-seed0/predictions.parquet"))]
            assert len(inner) == 3
            tested = [c for t in inner for c in t.loc[t["split"] == "test", "clip_id"]]
            assert sorted(tested) == sorted(parts["train"] | parts["val"])  # each training clip once
            assert not set().union(*[set(t["clip_id"]) for t in inner]) & parts["test"]
    fused = results.query("method == 'luna2022-fusion' and split == 'test' and metric == 'accuracy'")["value"].mean()
    assert fused > 1 / 6 + 0.3


def test_exported_out_of_fold_posteriors_fuse_like_the_run(synthetic_run, tmp_path):
    """`mmer posteriors` writes oof.csv from the inner-fold jobs; `mmer fuse` (default inner-cv
    recipe) on the exported sources gives the run's own fused test accuracy."""
    from mmer_bench.cli import main

    out, results = synthetic_run
    dirs = []
    for method in METHODS[:-1]:
        assert main(["posteriors", str(out), "--method", method, "--out", str(tmp_path / method)]) == 0
        dirs.append(str(tmp_path / method))
    oof = pd.read_csv(tmp_path / METHODS[0] / "fold0" / "oof.csv")
    in_sample = pd.read_csv(tmp_path / METHODS[0] / "fold0" / "train.csv")
    val = pd.read_csv(tmp_path / METHODS[0] / "fold0" / "val.csv")
    assert set(oof["clip_id"]) == set(in_sample["clip_id"]) | set(val["clip_id"])
    assert main(["fuse", "--corpus", "synthetic", "--posteriors", *dirs, "--out", str(tmp_path / "fused")]) == 0
    summary = json.loads((tmp_path / "fused" / "summary.json").read_text())
    run = results.query("method == 'luna2022-fusion' and split == 'test' and metric == 'accuracy'").set_index("fold")["value"]
    assert summary["recipe"] == "inner-cv"
    for fold in summary["folds"]:
        assert fold["accuracy"] == pytest.approx(run[fold["fold"]], abs=1e-6)  # results hold float32 scores


def test_leaderboard_remerges_the_job_folders(synthetic_run, capsys):
    """`mmer leaderboard` rebuilds the run's tables from its job folders alone (the runner's
    collection code), so merging can be redone at any time."""
    from mmer_bench.cli import main

    out, results = synthetic_run
    (out / "results.parquet").unlink()
    (out / "leaderboard.md").unlink()
    assert main(["leaderboard", str(out)]) == 0
    key = ["method", "fold", "seed", "split", "task", "metric"]
    merged = pd.read_parquet(out / "results.parquet").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, results.sort_values(key).reset_index(drop=True))
    printed = capsys.readouterr().out
    assert "| luna2022-fusion (stacked on inner-CV posteriors) |" in printed and printed.strip() == (out / "leaderboard.md").read_text().strip()
