"""`mmer bench` through the launchers, end to end on the synthetic corpus: a local pool and a real
SLURM cluster give the metrics of the in-process run; settings that change a job's numbers enter
its hash; two commands on one run folder never train one job twice; merged results name every
command that contributed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from wandb_records import read_run

from mmer_bench.jobs import plan_jobs
from mmer_bench.launchers import sbatch_available
from mmer_bench.runner import BenchConfig, run_bench

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["luna2022-au-mlp", "egemaps-mlp", "luna2022-fusion"]


def config(out, **kw) -> BenchConfig:
    kw.setdefault("methods", METHODS)
    kw.setdefault("folds", ["fold0", "fold1"])
    return BenchConfig(corpus="synthetic", out=str(out), loggers=["csv"], **kw)


def test_metrics(results: pd.DataFrame) -> pd.Series:
    rows = results[results["split"] == "test"]
    return rows.set_index(["method", "fold", "seed", "task", "metric"])["value"].sort_index()


test_metrics.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return run_bench(config(tmp_path_factory.mktemp("inproc")))


@pytest.mark.slow
def test_local_pool_gives_the_in_process_metrics(in_process, tmp_path):
    pooled = run_bench(config(tmp_path, jobs=2))
    pd.testing.assert_series_equal(test_metrics(pooled), test_metrics(in_process))
    status = subprocess.run([sys.executable, "-m", "mmer_bench.cli", "status", str(tmp_path)], capture_output=True,
                            text=True, cwd=ROOT)
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r": (\d+) jobs: done \1, running 0, failed 0, waiting 0", status.stdout), status.stdout


@pytest.mark.slow
def test_a_jobs_torch_threads_follow_threads_not_jobs(in_process, tmp_path):
    # A job's thread count changes CPU kernels' summation order (an LSTM's metrics moved by up to
    # 2 points between --jobs 1 and 2): it is --threads (default 1) wherever the job runs, and recorded.
    assert set(in_process["threads"]) == {1}
    pooled = run_bench(config(tmp_path, methods=["egemaps-mlp"], folds=["fold0"], jobs=2, threads=2))
    assert set(pooled["threads"]) == {2}  # on 2 cores the old share (cores // jobs) gave 1


@pytest.mark.slow
def test_slurm_launcher_gives_the_in_process_metrics(in_process, tmp_path, monkeypatch):
    if not sbatch_available():
        if os.environ.get("MMER_REQUIRE_SLURM") == "1":
            pytest.fail("MMER_REQUIRE_SLURM=1 but sbatch is not on PATH (start the cluster with .ci/slurm/start.sh)")
        pytest.skip("no SLURM here (sbatch is not on PATH; .ci/slurm/start.sh starts a single-node cluster)")
    monkeypatch.chdir(ROOT)  # the SLURM jobs import mmer_bench from the submission's working directory
    # The command line would read benchmarks/synthetic.yaml (its stacker settings differ from the
    # defaults the in-process run uses): a YAML with nothing in it keeps the two runs alike.
    bare = tmp_path / "bare.yaml"
    bare.write_text("seeds: [0]\n")
    command = [sys.executable, "-m", "mmer_bench.cli", "bench", "synthetic", "--launcher", "slurm",
               "--methods", ",".join(METHODS), "--folds", "fold0,fold1", "--seeds", "0", "--loggers", "csv", "--out", str(tmp_path),
               "--cpus-per-job", "1", "--time", "10", "--config", str(bare)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = pd.read_parquet(tmp_path / "results.parquet")
    pd.testing.assert_series_equal(test_metrics(results), test_metrics(in_process))
    status = subprocess.run([sys.executable, "-m", "mmer_bench.cli", "status", str(tmp_path)], capture_output=True,
                            text=True)
    assert re.search(r": (\d+) jobs: done \1, running 0, failed 0, waiting 0", status.stdout), status.stdout
    lines = [line for line in status.stdout.splitlines() if line.startswith("egemaps-mlp/fold0-seed0")]
    assert lines and lines[0].split()[2].isdigit()  # its SLURM job id


def test_settings_that_change_a_job_enter_its_hash(tmp_path):
    def hashes(**kw):
        return {s.job_id: s.config_hash for s in plan_jobs(config(tmp_path, **kw))}

    base = hashes()
    for changed in ({"devices": 2}, {"strategy": "ddp"}, {"num_nodes": 2}, {"precision": "bf16-mixed"},
                    {"hparams": {"egemaps-mlp": {"batch_size": 16}}}):
        other = hashes(**changed)
        assert other["egemaps-mlp/fold0-seed0"] != base["egemaps-mlp/fold0-seed0"], changed
    # where the jobs run does not change them
    assert hashes(jobs=2) == base and hashes(launcher="slurm") == base


@pytest.mark.slow
def test_a_job_trained_on_other_devices_is_not_taken_as_finished(tmp_path):
    cfg = config(tmp_path, methods=["luna2022-au-mlp"], folds=["fold0"])
    run_bench(cfg)
    cfg.devices = 2  # before: the same hash, "skipped as finished"
    with pytest.raises(RuntimeError, match="another configuration"):
        run_bench(cfg)


@pytest.mark.slow
def test_two_commands_on_one_run_folder_train_a_job_once(tmp_path):
    command = [sys.executable, "-m", "mmer_bench.cli", "bench", "synthetic", "--methods", "luna2022-au-mlp",
               "--folds", "fold0", "--seeds", "0", "--out", str(tmp_path)]
    env = {**os.environ, "WANDB_MODE": "offline"}
    first = subprocess.Popen(command + ["--loggers", "wandb,csv"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command + ["--loggers", "csv,wandb"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    for p, (_out, err) in zip((first, second), outputs):
        assert p.returncode == 0, err[-3000:]
    # one W&B run per training: before the per-job lock, both commands trained the job (each
    # command also logs its own leaderboard run, job type "leaderboard")
    runs = [read_run(d)["run"] for d in (tmp_path / "wandb").glob("offline-run-*")]
    assert [r.job_type for r in runs if r.job_type != "leaderboard"] == ["luna2022-au-mlp"]
    results = pd.read_parquet(tmp_path / "results.parquet")
    assert results["command"].nunique() == 1


@pytest.mark.slow
def test_merged_files_name_every_command_that_contributed(tmp_path):
    run_bench(config(tmp_path, methods=["luna2022-au-mlp"], folds=["fold0"], command="mmer bench synthetic A"))
    run_bench(config(tmp_path, methods=["egemaps-mlp"], folds=["fold0"], command="mmer bench synthetic B"))
    text = (tmp_path / "leaderboard.md").read_text()
    assert "- Commands (each made some of the rows): `mmer bench synthetic A`; `mmer bench synthetic B`" in text
    from mmer_bench.results import read_parquet_meta

    assert read_parquet_meta(tmp_path / "predictions.parquet")["commands"] == ["mmer bench synthetic A",
                                                                                 "mmer bench synthetic B"]
