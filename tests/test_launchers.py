"""Launchers on a stand-in job (tests/launcher_jobs.py): dependency order, skipping finished jobs,
failures and their reasons, per-slot devices, the per-job lock, killed jobs, the feature store
under two writers, ``mmer status``; and the same on a real SLURM cluster when ``sbatch`` exists
(required under MMER_REQUIRE_SLURM=1)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from launcher_jobs import StandInSpec, run_stand_in

from mmer_bench.launchers import (
    InProcessLauncher,
    JobLock,
    LocalLauncher,
    SlurmLauncher,
    SlurmOptions,
    execute,
    make_launcher,
    sbatch_available,
    slot_devices,
)
from mmer_bench.progress import QuietBoard, format_status, run_status

HERE = Path(__file__).resolve().parent


def specs(root: Path, **behaviours) -> list[StandInSpec]:
    """Two training jobs a, b and a stacking job s over them."""
    jobs = root / "jobs"
    return [StandInSpec("a", str(jobs / "a"), value=1, behaviour=behaviours.get("a", "ok")),
            StandInSpec("b", str(jobs / "b"), value=2, behaviour=behaviours.get("b", "ok")),
            StandInSpec("s", str(jobs / "s"), depends_on=("a", "b"), value=10, behaviour=behaviours.get("s", "ok"))]


def result(root: Path, job: str) -> dict:
    return json.loads((root / "jobs" / job / "result.json").read_text())


def test_in_process_runs_sources_before_the_stacking_job_and_skips_finished_ones(tmp_path):
    outcomes = InProcessLauncher(tmp_path, QuietBoard()).run(specs(tmp_path), run_stand_in)
    assert {j: o.status for j, o in outcomes.items()} == {"a": "done", "b": "done", "s": "done"}
    assert outcomes["s"].value == 13  # read both sources' results: they ran first
    assert result(tmp_path, "s")["started"] > max(result(tmp_path, "a")["started"], result(tmp_path, "b")["started"])
    again = InProcessLauncher(tmp_path, QuietBoard()).run(specs(tmp_path), run_stand_in)
    assert {o.status for o in again.values()} == {"skipped"}


def test_a_finished_job_with_another_config_hash_runs_again(tmp_path):
    InProcessLauncher(tmp_path, QuietBoard()).run(specs(tmp_path)[:1], run_stand_in)
    changed = [StandInSpec("a", str(tmp_path / "jobs" / "a"), config_hash="h1")]
    assert InProcessLauncher(tmp_path, QuietBoard()).run(changed, run_stand_in)["a"].status == "done"


def test_a_failed_source_fails_its_dependent_with_the_reason(tmp_path):
    outcomes = InProcessLauncher(tmp_path, QuietBoard()).run(specs(tmp_path, b="fail"), run_stand_in)
    assert outcomes["a"].status == "done"
    assert outcomes["b"].status == "failed" and "broke on purpose" in outcomes["b"].error
    assert "ValueError: b broke on purpose" in (tmp_path / "jobs" / "b" / "FAILED").read_text()
    assert outcomes["s"].status == "failed"
    assert outcomes["s"].error.startswith("source failed: b (ValueError: b broke on purpose)")
    assert not (tmp_path / "jobs" / "s").exists()  # never started
    # the status table names the failure and where its traceback is
    table = format_status(run_status(tmp_path), tmp_path)
    assert "3 jobs: done 1, running 0, failed 1, waiting 1" in table
    assert f"log: {tmp_path / 'jobs' / 'b' / 'FAILED'}" in table


def test_unknown_dependency_is_an_error_naming_it(tmp_path):
    bad = [StandInSpec("s", str(tmp_path / "s"), depends_on=("nope",))]
    with pytest.raises(ValueError, match=r"job s depends on \['nope'\]"):
        InProcessLauncher(tmp_path, QuietBoard()).run(bad, run_stand_in)


def test_slots_get_their_own_gpu_or_a_share_of_the_cores():
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in slot_devices(2, ["0", "1"])] == ["0", "1"]
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in slot_devices(2, ["4", "5", "6", "7"], gpus_per_job=2)] == \
        ["4,5", "6,7"]
    assert [s["threads"] for s in slot_devices(3, [], cores=8)] == [2, 2, 2]
    assert [s["threads"] for s in slot_devices(4, [], cores=2)] == [1, 1, 1, 1]
    assert [s["threads"] for s in slot_devices(3, [], cores=8, threads=1)] == [1, 1, 1]  # --threads wins


@pytest.mark.slow
def test_local_pool_runs_jobs_in_separate_workers_each_with_its_slot(tmp_path):
    jobs = [StandInSpec(f"j{i}", str(tmp_path / "jobs" / f"j{i}"), value=i, behaviour="sleep:1") for i in range(4)]
    launcher = LocalLauncher(2, tmp_path, QuietBoard(), gpus=["0", "1"], cores=6)
    outcomes = launcher.run(jobs, run_stand_in)
    assert {o.status for o in outcomes.values()} == {"done"}
    records = [result(tmp_path, f"j{i}") for i in range(4)]
    assert {r["pid"] for r in records} != {os.getpid()} and len({r["pid"] for r in records}) == 2
    by_pid = {}
    for r in records:  # a worker keeps its slot's devices for its whole life
        by_pid.setdefault(r["pid"], set()).add(r["cuda_visible"])
    assert sorted(v for s in by_pid.values() for v in s) == ["0", "1"]
    assert {r["threads"] for r in records} == {3}
    assert "stand-in j0 ran" in (tmp_path / "jobs" / "j0" / "job.log").read_text()


@pytest.mark.slow
def test_a_killed_worker_fails_its_job_only_and_the_next_launch_reruns_it(tmp_path):
    jobs = specs(tmp_path, a="die")
    outcomes = LocalLauncher(2, tmp_path, QuietBoard(), gpus=[]).run(jobs, run_stand_in)
    assert outcomes["a"].status == "failed" and "worker process died" in outcomes["a"].error
    assert outcomes["s"].status == "failed" and outcomes["s"].error.startswith("source failed: a")
    assert not (tmp_path / "jobs" / "a" / "DONE").exists()
    # the dead holder left HOLDER behind: status says it was interrupted, and the next launch takes it over
    rows = {r["job_id"]: r for r in run_status(tmp_path)}
    assert rows["a"]["state"] == "failed" and "interrupted" in rows["a"]["note"]
    outcomes = LocalLauncher(2, tmp_path, QuietBoard(), gpus=[]).run(specs(tmp_path), run_stand_in)
    assert {j: o.status for j, o in outcomes.items()} == {"a": "done", "b": "skipped", "s": "done"}
    assert outcomes["s"].value == 13


def _hold_lock(out_dir: str, seconds: float, finish: bool, ready) -> None:
    lock = JobLock(out_dir)
    assert lock.acquire()
    ready.set()
    time.sleep(seconds)
    if finish:
        run_stand_in(StandInSpec("a", out_dir))
        lock.release()
    else:
        os._exit(1)  # dies holding it


def test_a_second_process_waits_for_a_job_the_first_is_training(tmp_path):
    out = str(tmp_path / "jobs" / "a")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(out, 3.0, True, ready))
    holder.start()
    assert ready.wait(60)
    spec = StandInSpec("a", out)
    assert execute(spec, run_stand_in).status == "busy"
    launcher = InProcessLauncher(tmp_path, QuietBoard())
    launcher.retry_busy_after_s = 0.5
    outcomes = launcher.run([spec], run_stand_in)
    holder.join()
    assert outcomes["a"].status == "skipped"  # the first process finished it; this one never trained it
    assert result(tmp_path, "a")["pid"] == holder.pid


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = str(tmp_path / "jobs" / "a")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(out, 0.0, False, ready))
    holder.start()
    holder.join()
    assert json.loads((Path(out) / "HOLDER").read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"):
        assert execute(StandInSpec("a", out), run_stand_in).status == "done"
    assert f"pid {holder.pid}" in caplog.text and "ended without finishing it" in caplog.text
    assert not (Path(out) / "HOLDER").exists()


def _write_store_entry(root: str, fill: float, barrier) -> bool:
    from mmer_bench.features.store import FeatureStore

    store = FeatureStore(root)
    barrier.wait()
    with store.writer("x", "k", {"fill": fill}) as writer:
        for i in range(200):
            writer.add(f"clip{i}", np.full((64, 64), fill, np.float32))
    return writer.kept


def test_two_processes_writing_one_store_key_first_writer_wins(tmp_path):
    from mmer_bench.features.store import FeatureStore

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    with ctx.Pool(2) as pool:
        kept = pool.starmap(_write_store_entry, [(str(tmp_path), 1.0, barrier), (str(tmp_path), 2.0, barrier)])
    assert sorted(kept) == [False, True]  # exactly one entry was published
    features = FeatureStore(tmp_path).read("x", "k")
    winner = 1.0 if kept[0] else 2.0
    assert len(features) == 200 and all((a == winner).all() for a in features.arrays.values())
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["k.parquet"]  # no temporary file left


def test_detach_needs_slurm_and_slurm_needs_sbatch(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--detach needs --launcher slurm"):
        make_launcher("local", tmp_path, detach=True)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="needs the SLURM client commands"):
        make_launcher("slurm", tmp_path)


def test_slurm_options_become_sbatch_parameters():
    params = SlurmOptions(partition="gpu", time_min=30, gpus_per_job=4, cpus_per_job=32, mem="64G", num_nodes=2,
                          tasks_per_node=4, sbatch={"account": "lab", "qos": "high"}).executor_parameters()
    assert params == {"time": 30, "nodes": 2, "signal_delay_s": 90, "job_name": "mmer", "setup": [],
                      "additional_parameters": {"account": "lab", "qos": "high"}, "ntasks_per_node": 4,
                      "partition": "gpu", "gpus_per_node": 4, "cpus_per_task": 8, "mem": "64G"}


# --- a real SLURM cluster (.ci/slurm/start.sh) ----------------------------------------------------
def _need_slurm():
    if sbatch_available():
        return
    if os.environ.get("MMER_REQUIRE_SLURM") == "1":
        pytest.fail("MMER_REQUIRE_SLURM=1 but sbatch is not on PATH (start the cluster with .ci/slurm/start.sh)")
    pytest.skip("no SLURM here (sbatch is not on PATH; .ci/slurm/start.sh starts a single-node cluster)")


@pytest.fixture
def slurm(monkeypatch):
    _need_slurm()
    import cloudpickle
    import launcher_jobs

    # The SLURM job imports mmer_bench from the working directory; the stand-in travels by value.
    cloudpickle.register_pickle_by_value(launcher_jobs)
    monkeypatch.chdir(HERE.parent)
    yield SlurmOptions(time_min=5, cpus_per_job=1, signal_delay_s=30, poll_s=0.5)
    cloudpickle.unregister_pickle_by_value(launcher_jobs)


@pytest.mark.slow
def test_slurm_runs_dependents_after_their_sources_and_reports_failures(tmp_path, slurm):
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path, b="fail"), run_stand_in)
    assert outcomes["a"].status == "done" and outcomes["a"].slurm_id
    assert outcomes["b"].status == "failed" and "b broke on purpose" in outcomes["b"].error
    assert outcomes["s"].status == "failed" and outcomes["s"].error.startswith("source failed: b")
    records = json.loads((tmp_path / "launch" / "slurm.json").read_text())
    assert set(records) == {"a", "b", "s"}
    rows = {r["job_id"]: r for r in run_status(tmp_path)}
    assert rows["a"]["state"] == "done" and rows["b"]["state"] == "failed"
    assert rows["b"]["slurm_id"] == records["b"]["slurm_id"] and rows["b"]["log"]
    # fixed, the next launch runs b and the stacking job, and skips a
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path), run_stand_in)
    assert {j: o.status for j, o in outcomes.items()} == {"a": "skipped", "b": "done", "s": "done"}
    assert outcomes["s"].value == 13


@pytest.mark.slow
def test_slurm_detach_then_a_second_launch_attaches_and_reruns_a_cancelled_job(tmp_path, slurm):
    outcomes = SlurmLauncher(tmp_path, slurm, detach=True, progress=QuietBoard()).run(
        specs(tmp_path, a="sleep:120"), run_stand_in)
    assert {o.status for o in outcomes.values()} == {"submitted"}
    first = json.loads((tmp_path / "launch" / "slurm.json").read_text())
    rows = {r["job_id"]: r for r in run_status(tmp_path)}
    assert {r["slurm_id"] for r in rows.values()} == {first[j]["slurm_id"] for j in "abs"}
    # the scheduler kills a mid-run (as a time limit or pre-emption would): no DONE, never counted
    deadline = time.time() + 120
    while not (tmp_path / "jobs" / "a" / "HOLDER").exists():
        assert time.time() < deadline, "job a never started"
        time.sleep(0.5)
    subprocess.run(["scancel", first["a"]["slurm_id"]], check=True)
    # The next launch comes at once, while SLURM still kills a (squeue lists it for KillWait): it
    # re-submits a (and the stacking job SLURM cancelled with it) and attaches to b.
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path), run_stand_in)
    assert {j: o.status for j, o in outcomes.items()} in ({"a": "done", "b": "done", "s": "done"},
                                                           {"a": "done", "b": "skipped", "s": "done"})
    second = json.loads((tmp_path / "launch" / "slurm.json").read_text())
    assert second["a"]["slurm_id"] != first["a"]["slurm_id"]
    assert second["b"]["slurm_id"] == first["b"]["slurm_id"]  # not submitted twice
    assert not (tmp_path / "jobs" / "a" / "FAILED").exists()
    assert results_of(tmp_path) == results_of(in_process_run(tmp_path))


def in_process_run(tmp_path: Path) -> Path:
    local = tmp_path / "local"
    outcomes = InProcessLauncher(local, QuietBoard()).run(specs(local), run_stand_in)
    assert {o.status for o in outcomes.values()} == {"done"}
    return local


def results_of(root: Path) -> dict:
    return {j: result(root, j)["value"] for j in "abs"}


def _cancel_when_running(root: Path, job: str, cancelled: list) -> None:
    """Plays the scheduler: kills ``job``'s SLURM job once it runs (holds the job's lock)."""
    deadline = time.time() + 120
    while not (root / "jobs" / job / "HOLDER").exists() and time.time() < deadline:
        time.sleep(0.2)
    slurm_id = json.loads((root / "launch" / "slurm.json").read_text())[job]["slurm_id"]
    subprocess.run(["scancel", slurm_id], check=True)
    cancelled.append(slurm_id)


@pytest.mark.slow
def test_slurm_job_killed_while_the_launch_waits_is_submitted_again_in_that_launch(tmp_path, slurm):
    import threading

    cancelled: list[str] = []
    killer = threading.Thread(target=_cancel_when_running, args=(tmp_path, "a", cancelled))
    killer.start()
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path, a="sleep-first:120"),
                                                                      run_stand_in)
    killer.join()
    assert len(cancelled) == 1, "job a never started"
    # killed mid-run: submitted again, not counted as failed; its dependent waited for the new one
    assert {j: o.status for j, o in outcomes.items()} == {"a": "done", "b": "done", "s": "done"}
    records = json.loads((tmp_path / "launch" / "slurm.json").read_text())
    assert records["a"]["slurm_id"] != cancelled[0]
    assert subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", cancelled[0]], capture_output=True,
                          text=True).stdout.split()[0] == "CANCELLED"
    assert not (tmp_path / "jobs" / "a" / "FAILED").exists()
    assert results_of(tmp_path) == results_of(in_process_run(tmp_path))


@pytest.mark.slow
def test_slurm_warning_before_the_time_limit_does_not_fail_a_job(tmp_path, slurm):
    # SLURM's warning signal (signal_delay_s before the limit) that submitit turns into an error
    # inside a job it cannot checkpoint: the job runs on and finishes, counted once.
    job_spec = specs(tmp_path, a="sleep:10")[:1]
    launcher = SlurmLauncher(tmp_path, slurm, detach=True, progress=QuietBoard())
    launcher.run(job_spec, run_stand_in)
    slurm_id = json.loads((tmp_path / "launch" / "slurm.json").read_text())["a"]["slurm_id"]
    deadline = time.time() + 120
    while not (tmp_path / "jobs" / "a" / "HOLDER").exists():
        assert time.time() < deadline, "job a never started"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal", "USR2", slurm_id], check=True)
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(job_spec, run_stand_in)
    assert outcomes["a"].status == "done" and outcomes["a"].slurm_id == slurm_id
    assert not (tmp_path / "jobs" / "a" / "FAILED").exists()
    assert "timed-out and not checkpointable" in (tmp_path / "jobs" / "a" / "job.log").read_text()


@pytest.mark.slow
def test_slurm_job_at_its_time_limit_fails_uncounted_and_runs_at_the_next_launch(tmp_path, slurm):
    slurm.time_min = 1  # SLURM's smallest limit; the job would sleep longer
    for _ in range(3):
        outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path, a="sleep:600")[:1],
                                                                             run_stand_in)
        # SLURM sends its warning signal up to 60 s early: with a 1-min limit it may come while
        # Python starts, before submitit's handler, and kill the job (FAILED). Not what is tested.
        if not (outcomes["a"].log and "User defined signal 2" in Path(outcomes["a"].log).read_text()):
            break
    assert outcomes["a"].status == "failed"
    assert "reached its time limit (1 min) before finishing; it runs again at the next launch" in outcomes["a"].error
    assert not (tmp_path / "jobs" / "a" / "DONE").exists() and not (tmp_path / "jobs" / "a" / "FAILED").exists()
    row = run_status(tmp_path)[0]
    assert row["state"] == "failed" and row["note"].endswith("runs again at the next launch")
    slurm.time_min = 5
    outcomes = SlurmLauncher(tmp_path, slurm, progress=QuietBoard()).run(specs(tmp_path)[:1], run_stand_in)
    assert outcomes["a"].status == "done" and result(tmp_path, "a")["value"] == 1
