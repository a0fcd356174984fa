"""Launchers: run a benchmark's job specs in this process, in a local process pool, or on SLURM.

Every launcher has one interface, ``Launcher.run(specs, run_fn) -> {job_id: Outcome}``. A spec
is any object with ``job_id``, ``depends_on`` (job ids) and ``out`` or ``out_dir`` (its own
folder, the only place its job writes), and optionally ``config_hash`` (``jobs.JobSpec`` is one);
``run_fn(spec)`` is a picklable top-level function that trains or stacks one job and writes
``DONE`` in its folder last.

What the launchers share (``Launcher.run`` and ``execute``):

- A job whose ``DONE`` marker holds its config hash is skipped; a job runs only after every job
  in its ``depends_on`` finished, and a failed source marks it failed with the reason.
- ``execute`` wraps ``run_fn`` wherever it runs: it holds the job's lock (``JobLock``) while the
  job trains, so two ``mmer bench`` processes never train the same job at once (the second one
  waits and then finds it finished); it writes ``FAILED`` with the traceback when the job raises.
  A job killed from outside (time limit, pre-emption, a crash) leaves no ``DONE``: it is never
  counted and the next launch runs it again.
- Where a job runs never changes its result: each job is a pure function of its spec.

``local`` (``LocalLauncher``) keeps ``jobs`` worker processes on this machine, each with its own
devices: one GPU per slot (``CUDA_VISIBLE_DEVICES``) where GPUs exist, else ``cores // jobs``
torch threads; ``jobs=1`` runs every job in this process, one after another. ``slurm``
(``SlurmLauncher``) submits one SLURM job per spec through submitit, a stacking job with
``--dependency=afterok`` on its sources, and waits with progress, or returns at once (``detach``);
a later launch attaches to the jobs still queued or running and collects what finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmer_bench.results import write_text

log = logging.getLogger(__name__)

# Torch threads of each job unless --threads says otherwise: the same whatever --jobs or the
# launcher, because the thread count changes the summation order of CPU kernels (an LSTM's
# numbers moved by up to 2 points between 2 threads in-process and 1 per pool worker).
DEFAULT_THREADS = 1
LAUNCH_DIR = "launch"  # under the run folder: plan.json and slurm.json, written by the parent only
# SLURM states of a job that still runs or will (sacct's names; a job in another state is over). Not
# COMPLETING: a job in it is ending (a cancelled one is killed, for up to KillWait, in that state).
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "SUSPENDED", "RESIZING", "READY",
                       "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}
# Ended by the scheduler, not by anything of the job's own (scancel, pre-emption, a lost node): the
# job is submitted again within the launch. TIMEOUT, DEADLINE and OUT_OF_MEMORY are not: the same
# request would end the same way, so they wait for the next launch (perhaps with more --time or --mem).
RESUBMIT_SLURM_STATES = {"CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "REVOKED"}
# A job submitted again may start (on another node) while its killed predecessor still holds the
# job's lock: SLURM kills it within KillWait (30 s by default) plus UnkillableStepTimeout (60 s).
SLURM_LOCK_WAIT_S = 180.0


@dataclass
class Outcome:
    """What became of one job in one launch. ``status``: done (ran and finished), skipped (found
    finished), failed, submitted (detached SLURM launch), busy (another process holds its lock),
    resubmit (killed by the scheduler: the launch starts it again)."""

    job_id: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None
    slurm_id: str | None = None
    value: Any = None


# --- one job, wherever it runs -----------------------------------------------------------------
def job_folder(spec) -> Path:
    """The spec's own folder (``out`` of a jobs.JobSpec, ``out_dir`` of any other spec)."""
    return Path(getattr(spec, "out_dir", None) or spec.out)


def is_finished(spec) -> bool:
    """The job folder's ``DONE`` exists and records this spec's config hash (when it has one)."""
    done = job_folder(spec) / "DONE"
    if not done.exists():
        return False
    expected = getattr(spec, "config_hash", None)
    if expected is None:
        return True
    try:
        return json.loads(done.read_text()).get("config_hash") == expected
    except (OSError, ValueError):
        return False


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class JobLock:
    """One writer per job folder: an OS file lock (``flock`` through filelock) on ``.lock``, held
    while the job trains. The kernel releases it when its holder dies however it dies, so the lock
    of a killed process is taken over by the next one without any staleness guess; ``HOLDER``
    names who holds or last held it (host, pid, command, since) for messages and ``mmer status``."""

    def __init__(self, out_dir: str | Path):
        import filelock

        self.dir = Path(out_dir)
        self._lock = filelock.FileLock(self.dir / ".lock", thread_local=False)

    def holder(self) -> dict | None:
        try:
            return json.loads((self.dir / "HOLDER").read_text())
        except (OSError, ValueError):
            return None

    def acquire(self, timeout: float = 0.0) -> bool:
        import filelock

        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout, poll_interval=1.0)
        except filelock.Timeout:
            return False
        previous = self.holder()
        if previous and previous.get("pid") != os.getpid():
            # The lock was free, so its last holder is gone: left by a process that was killed.
            log.warning("%s: taking over the job from %s pid %s (started %s), which ended without finishing it",
                        self.dir, previous.get("host"), previous.get("pid"), previous.get("since"))
        write_text(self.dir / "HOLDER", json.dumps({
            "host": _host(), "pid": os.getpid(), "command": " ".join(sys.argv),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        return True

    def release(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / "HOLDER").unlink()
        self._lock.release()

    def describe_holder(self) -> str:
        h = self.holder() or {}
        return f"{h.get('host', '?')} pid {h.get('pid', '?')} since {h.get('since', '?')}"


def holder_state(out_dir: str | Path) -> str | None:
    """'running' while a live process holds the job, 'interrupted' when its holder on this host
    is dead (it will be re-run), None when nobody started it. Reads ``HOLDER`` only: it never
    takes the lock, so looking never disturbs a launch."""
    holder = JobLock(out_dir).holder()
    if not holder:
        return None
    if holder.get("host") == _host() and not _pid_alive(int(holder.get("pid", -1))):
        return "interrupted"
    return "running"


def _rank() -> int:
    # A multi-task SLURM job (several GPUs or nodes for one job) runs the function in every task;
    # only task 0 keeps the lock and the markers, Lightning's DDP does the rest.
    return int(os.environ.get("SLURM_PROCID", 0)) if int(os.environ.get("SLURM_NTASKS", 1)) > 1 else 0


@contextlib.contextmanager
def _job_log(path: Path | None):
    """Send this job's logging, stdout and stderr to ``path`` (a worker's output would otherwise
    interleave with the others' on one terminal)."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        root.setLevel(min(level, logging.INFO) if level else logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield path
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def execute(spec, run_fn: Callable, capture_log: bool = False, lock_wait_s: float = 0.0) -> Outcome:
    """Run one job under its lock: skip it when finished, report 'busy' when another process holds
    it (after waiting up to ``lock_wait_s`` for it), write ``FAILED`` (the traceback) when it
    raises. The launchers call this in-process, in a pool worker or inside a SLURM job."""
    started = time.time()
    out = job_folder(spec)
    if is_finished(spec):
        return Outcome(spec.job_id, "skipped")
    if _rank() != 0:
        return Outcome(spec.job_id, "done", value=run_fn(spec))
    lock = JobLock(out)
    if not lock.acquire() and not (lock_wait_s > 0 and _wait_for_lock(lock, lock_wait_s)):
        return Outcome(spec.job_id, "busy", error=f"{out} is being trained by {lock.describe_holder()}")
    try:
        if is_finished(spec):  # another process finished it while this one waited
            return Outcome(spec.job_id, "skipped")
        (out / "FAILED").unlink(missing_ok=True)
        log_path = out / "job.log" if capture_log else None
        with _job_log(log_path):
            try:
                value = run_fn(spec)
            except Exception as exc:
                write_text(out / "FAILED", traceback.format_exc())
                return Outcome(spec.job_id, "failed", time.time() - started, f"{type(exc).__name__}: {exc}",
                               str(log_path or out / "FAILED"))
        # A run function may also report its own failure ({"status": "failed", "error": ...},
        # as jobs.run_spec does after writing FAILED with the traceback) instead of raising.
        reported = value.get("status") if isinstance(value, dict) else None
        if reported == "failed" or not is_finished(spec):
            error = (value or {}).get("error") if reported == "failed" else None
            error = error or "the job returned without writing its DONE marker"
            if not (out / "FAILED").exists():
                write_text(out / "FAILED", error + "\n")
            return Outcome(spec.job_id, "failed", time.time() - started, error, str(log_path or out / "FAILED"))
        return Outcome(spec.job_id, "done", time.time() - started, value=value)
    finally:
        lock.release()


def _wait_for_lock(lock: JobLock, seconds: float) -> bool:
    log.warning("%s: held by %s; waiting up to %.0f s for it (a killed predecessor of this job may still be "
                "ending)", lock.dir, lock.describe_holder(), seconds)
    return lock.acquire(timeout=seconds)


class JobFailed(RuntimeError):
    """Raised inside a SLURM job whose run failed, so that SLURM records it as failed (a stacking
    job waiting on it with ``afterok`` is then cancelled instead of started)."""


def _run_on_at_time_limit() -> None:
    """submitit answers SLURM's warning before the time limit (``signal_delay_s``) by raising
    ``UncompletedJobError`` inside the running function when it cannot checkpoint it; ``execute``
    would take that for the job's own error and write ``FAILED``. Let the job run on instead: it
    may still finish, else SLURM ends it as TIMEOUT, with no ``DONE`` and no error of its own, and
    it runs again at the next launch. Pre-emption (the same signal before the limit) still goes
    through submitit: it requeues the job."""
    import signal

    from submitit.core.utils import UncompletedJobError

    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's setting for that signal
    signum = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    previous = signal.getsignal(signum) if signum is not None else None
    if not callable(previous):
        return

    def on_signal(number, frame):
        try:
            previous(number, frame)
        except UncompletedJobError as exc:
            log.warning("%s The job runs on until SLURM stops it at its time limit (state TIMEOUT: no DONE, it "
                        "runs again at the next launch).", exc)

    signal.signal(signum, on_signal)


def execute_or_raise(spec, run_fn: Callable, threads: int | None = None) -> Outcome:
    threads = threads or os.environ.get("SLURM_CPUS_PER_TASK")
    if threads:  # else torch would take every core of the node, not the job's share
        import torch

        torch.set_num_threads(int(threads))
    if os.environ.get("SLURM_JOB_ID"):
        _run_on_at_time_limit()
    outcome = execute(spec, run_fn, capture_log=True, lock_wait_s=SLURM_LOCK_WAIT_S)
    if outcome.status == "failed":
        raise JobFailed(f"{outcome.error} [log: {outcome.log}]")
    return outcome


# --- the scheduling loop every launcher shares -------------------------------------------------
def spec_record(spec) -> dict:
    """A spec as JSON for ``plan.json`` (every JSON-serialisable field of a dataclass spec)."""
    fields = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else {}
    record = {}
    for key, value in fields.items():
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        record[key] = value
    record.update(job_id=spec.job_id, depends_on=list(spec.depends_on), out_dir=str(job_folder(spec).resolve()))
    return record


class Launcher:
    """Runs specs in dependency order; subclasses say how one job is started and awaited."""

    name = "launcher"
    slots = 1
    # SLURM holds a dependent job itself (--dependency): it may be submitted while its sources run.
    submits_dependents_early = False
    retry_busy_after_s = 5.0

    def __init__(self, run_dir: str | Path | None = None, progress=None):
        self.run_dir = Path(run_dir) if run_dir else None
        self.progress = progress
        # called in this process after each job that ran to its end (the runner merges results)
        self.on_finished: Callable | None = None

    # subclasses
    def _start(self, spec, run_fn, running_deps: list) -> Any:
        raise NotImplementedError

    def _wait(self, running: dict, timeout: float) -> list[tuple[str, Outcome]]:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _detached(self) -> bool:
        return False

    def run(self, specs, run_fn: Callable) -> dict[str, Outcome]:
        from mmer_bench.progress import Board

        specs = {s.job_id: s for s in specs}
        for job_id, spec in specs.items():
            unknown = [d for d in spec.depends_on if d not in specs]
            if unknown:
                raise ValueError(f"job {job_id} depends on {unknown}, which are not in this launch")
        self._write_plan(specs)
        board = self.progress if self.progress is not None else Board.for_stream(sys.stderr, slots=self.slots)
        board.start(specs)
        outcomes: dict[str, Outcome] = {}
        waiting = list(specs)
        running: dict[str, Any] = {}
        not_before: dict[str, float] = {}
        try:
            for job_id in list(waiting):
                if is_finished(specs[job_id]):
                    outcomes[job_id] = Outcome(job_id, "skipped")
                    waiting.remove(job_id)
                    board.finished(outcomes[job_id])
            while waiting or running:
                self._dispatch(specs, run_fn, waiting, running, outcomes, not_before, board)
                if self._detached():
                    for job_id in running:
                        outcomes[job_id] = Outcome(job_id, "submitted", slurm_id=getattr(running[job_id], "job_id", None))
                    for job_id in waiting:
                        outcomes[job_id] = Outcome(job_id, "failed", error="not submitted (its sources were not)")
                    break
                if not running:
                    if not waiting:
                        break
                    if not not_before:
                        raise RuntimeError(f"jobs {waiting} wait for each other (a dependency cycle)")
                    time.sleep(max(0.0, min(not_before.values()) - time.time()))
                    continue
                for job_id, outcome in self._wait(running, timeout=1.0):
                    del running[job_id]
                    if outcome.status == "busy":
                        # Another process trains it: come back later, then it is usually finished.
                        waiting.append(job_id)
                        not_before[job_id] = time.time() + self.retry_busy_after_s
                        board.busy(job_id, outcome.error)
                        continue
                    if outcome.status == "resubmit":
                        # The scheduler killed it (or its source was submitted again): start it anew.
                        waiting.append(job_id)
                        board.resubmitted(job_id, outcome.error)
                        continue
                    outcomes[job_id] = outcome
                    board.finished(outcome)
                    if outcome.status == "done" and self.on_finished is not None:
                        self.on_finished(specs[job_id], outcome)
                board.tick()
        finally:
            self._close()
            board.stop(outcomes)
        # A dependent that the scheduler gave up on because a source failed says which one.
        for job_id, outcome in outcomes.items():
            failed_sources = [d for d in specs[job_id].depends_on if outcomes.get(d) and outcomes[d].status == "failed"]
            if outcome.status == "failed" and failed_sources and not (outcome.error or "").startswith("source"):
                outcome.error = _source_failure(failed_sources, outcomes)
        return outcomes

    def _dispatch(self, specs, run_fn, waiting, running, outcomes, not_before, board) -> None:
        ok = ("done", "skipped")
        changed = True
        while changed:  # a pass may free dependents further down the list (early submission)
            changed = False
            for job_id in list(waiting):
                deps = specs[job_id].depends_on
                failed = [d for d in deps if d in outcomes and outcomes[d].status == "failed"]
                if failed:
                    outcomes[job_id] = Outcome(job_id, "failed", error=_source_failure(failed, outcomes))
                    waiting.remove(job_id)
                    board.finished(outcomes[job_id])
                    changed = True
                    continue
                ready = all((d in outcomes and outcomes[d].status in ok)
                            or (self.submits_dependents_early and d in running) for d in deps)
                if not ready or len(running) >= self.slots or not_before.get(job_id, 0) > time.time():
                    continue
                not_before.pop(job_id, None)
                running[job_id] = self._start(specs[job_id], run_fn, [running[d] for d in deps if d in running])
                waiting.remove(job_id)
                board.started(job_id, self._slurm_id(running[job_id]))
                changed = True

    def _slurm_id(self, handle) -> str | None:
        return None

    def _write_plan(self, specs: dict) -> None:
        if self.run_dir is None:
            return
        plan = {"launcher": self.name, "slots": self.slots, "command": " ".join(["mmer", *sys.argv[1:]]),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "jobs": [spec_record(s) for s in specs.values()]}
        write_text(self.run_dir / LAUNCH_DIR / "plan.json", json.dumps(plan, indent=1))


def _source_failure(failed: list[str], outcomes: dict) -> str:
    return "source failed: " + "; ".join(f"{d} ({outcomes[d].error})" for d in failed)


class InProcessLauncher(Launcher):
    """``--jobs 1``: every job in this process, one after another (the runner's original behaviour)."""

    name = "local"

    def __init__(self, run_dir=None, progress=None, threads: int | None = None):
        super().__init__(run_dir, progress)
        self.threads = threads

    def _start(self, spec, run_fn, running_deps):
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return execute(spec, run_fn)

    def _wait(self, running, timeout):
        return list(running.items())


# --- local pool --------------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every one torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() not in ("", "-1")]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def slot_devices(jobs: int, gpus: list[str], gpus_per_job: int = 1, cores: int | None = None,
                 threads: int | None = None) -> list[dict]:
    """Each slot's environment and torch threads: ``gpus_per_job`` GPUs of its own per slot
    (round-robin, with a warning, when there are fewer than slots need), and ``threads`` torch
    threads (unset: ``max(1, cores // jobs)``, a share of the cores)."""
    threads = threads or max(1, (cores or cpu_count()) // jobs)
    if not gpus:
        return [{"env": {"CUDA_VISIBLE_DEVICES": ""} if os.environ.get("CUDA_VISIBLE_DEVICES") is not None else {},
                 "threads": threads} for _ in range(jobs)]
    if jobs * gpus_per_job > len(gpus):
        log.warning("%d slots x %d GPUs need %d GPUs, %d are visible: slots share GPUs", jobs, gpus_per_job,
                    jobs * gpus_per_job, len(gpus))
    slots = []
    for k in range(jobs):
        mine = [gpus[(k * gpus_per_job + i) % len(gpus)] for i in range(gpus_per_job)]
        slots.append({"env": {"CUDA_VISIBLE_DEVICES": ",".join(mine)}, "threads": threads})
    return slots


def _init_slot(slot: dict) -> None:
    """Worker start: set the slot's devices before torch starts any thread or CUDA context."""
    os.environ.update(slot["env"])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(slot["threads"])
    import torch

    torch.set_num_threads(slot["threads"])
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _slot_main(conn, slot: dict) -> None:
    """A pool worker: run the jobs the parent sends, one at a time, until it sends None."""
    _init_slot(slot)
    while True:
        message = conn.recv()
        if message is None:
            return
        spec, run_fn = message
        conn.send(execute(spec, run_fn, capture_log=True))


class _Slot:
    """One worker process bound to one slot's devices for its whole life (torch threads and a
    CUDA context are set up once per worker, not per job)."""

    def __init__(self, ctx, config: dict):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_slot_main, args=(child, config), daemon=True)
        self.process.start()
        child.close()
        self.current: str | None = None  # the job it runs now
        self.started = 0.0

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LocalLauncher(Launcher):
    """``jobs`` worker processes on this machine (``spawn``: nothing is forked out of the parent),
    one per slot. A worker that dies (killed, out of memory) fails only the job it ran, and its
    slot gets a fresh worker."""

    name = "local"

    def __init__(self, jobs: int, run_dir=None, progress=None, gpus_per_job: int = 1, gpus: list[str] | None = None,
                 cores: int | None = None, threads: int | None = None):
        super().__init__(run_dir, progress)
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        self.slots = jobs
        self.slot_config = slot_devices(jobs, visible_gpus() if gpus is None else gpus, gpus_per_job, cores, threads)
        self._workers: list[_Slot | None] = [None] * jobs

    def _start(self, spec, run_fn, running_deps):
        import multiprocessing

        k = next(i for i, w in enumerate(self._workers) if w is None or w.current is None)
        if self._workers[k] is None or not self._workers[k].alive():
            self._workers[k] = _Slot(multiprocessing.get_context("spawn"), self.slot_config[k])
        worker = self._workers[k]
        worker.conn.send((spec, run_fn))
        worker.current, worker.started = spec.job_id, time.time()
        return worker

    def _wait(self, running, timeout):
        from multiprocessing.connection import wait as wait_any

        busy = [w for w in running.values()]
        ready = set(wait_any([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout))
        finished = []
        for job_id, worker in running.items():
            outcome = None
            if worker.conn in ready:
                try:
                    outcome = worker.conn.recv()
                except (EOFError, OSError):
                    outcome = None
            if outcome is None and (worker.conn in ready or worker.process.sentinel in ready):
                worker.process.join(timeout=5)
                outcome = Outcome(job_id, "failed", time.time() - worker.started,
                                  f"its worker process died (exit code {worker.process.exitcode}); "
                                  "it runs again at the next launch", str(Path(self._out_dirs.get(job_id, ".")) /
                                                                          "job.log"))
                self._workers[self._workers.index(worker)] = None
            if outcome is not None:
                worker.current = None
                finished.append((job_id, outcome))
        return finished

    def run(self, specs, run_fn):
        specs = list(specs)
        self._out_dirs = {s.job_id: job_folder(s) for s in specs}
        return super().run(specs, run_fn)

    def _close(self):
        for worker in self._workers:
            if worker is not None:
                worker.stop()
        self._workers = [None] * self.slots


def make_local(jobs: int = 1, **kwargs) -> Launcher:
    """``--jobs 1`` runs in this process; more jobs get a pool."""
    if jobs == 1:
        return InProcessLauncher(kwargs.get("run_dir"), kwargs.get("progress"), kwargs.get("threads"))
    return LocalLauncher(jobs, **kwargs)


# --- SLURM -------------------------------------------------------------------------------------
@dataclass
class SlurmOptions:
    """What ``mmer bench --launcher slurm`` asks of the scheduler for each job."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    mem: str | None = None  # e.g. "16G"
    num_nodes: int = 1
    tasks_per_node: int = 1  # one per device of a DDP job (Lightning maps SLURM tasks to ranks)
    sbatch: dict = field(default_factory=dict)  # extra sbatch options, e.g. {"account": "abc", "qos": "high"}
    setup: list = field(default_factory=list)  # shell lines run before the job (module load ...)
    signal_delay_s: int = 90
    poll_s: float = 2.0
    max_resubmits: int = 3  # per job and launch: a job the scheduler keeps killing fails in the end
    threads: int | None = None  # torch threads of each job (unset: its CPUs, SLURM_CPUS_PER_TASK)

    def executor_parameters(self) -> dict:
        params = {"time": self.time_min, "nodes": self.num_nodes, "signal_delay_s": self.signal_delay_s,
                  "job_name": "mmer", "additional_parameters": dict(self.sbatch), "setup": list(self.setup)}
        # One task per device of the job: Lightning's SLURM environment makes them its DDP ranks.
        params["ntasks_per_node"] = max(1, self.tasks_per_node)
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.cpus_per_job:
            params["cpus_per_task"] = max(1, self.cpus_per_job // params["ntasks_per_node"])
        if self.mem:
            params["mem"] = self.mem
        return params


def sbatch_available() -> bool:
    from shutil import which

    return which("sbatch") is not None


class SlurmLauncher(Launcher):
    """One SLURM job per spec through submitit; a stacking job is submitted at once with
    ``--dependency=afterok:<its sources>`` and ``--kill-on-invalid-dep=yes``, so it starts only
    after them and is cancelled when one fails. ``run_dir/launch/slurm.json`` records the SLURM id
    of every submitted job: a later launch attaches to those still queued or running instead of
    submitting them twice, and re-submits those that ended without ``DONE``.

    How a job that ended without ``DONE`` is told apart (SLURM's state through submitit, and
    whether the job left its own result, never its log text):

    - its own error (a Python exception: submitit's result file holds it, ``FAILED`` its
      traceback): failed, with its log, as with the other launchers;
    - killed by the scheduler (``RESUBMIT_SLURM_STATES``: scancel, pre-emption, a lost node; no
      result file): submitted again within this launch, at most ``max_resubmits`` times; its
      dependents, which wait on the killed job, are cancelled and submitted again after it;
    - ended at its time limit or out of memory (TIMEOUT, OUT_OF_MEMORY, DEADLINE; no result file)
      or crashed: failed in this launch (the same request would end the same way), never
      counted, and submitted again by the next launch."""

    name = "slurm"
    slots = 10**9
    submits_dependents_early = True

    def __init__(self, run_dir, options: SlurmOptions | None = None, detach: bool = False, progress=None):
        super().__init__(run_dir, progress)
        if self.run_dir is None:
            raise ValueError("the slurm launcher needs a run folder (its logs and job records live there)")
        self.options = options or SlurmOptions()
        self.detach = detach
        self.folder = self.run_dir / "slurm"
        self.records_path = self.run_dir / LAUNCH_DIR / "slurm.json"
        self.records = self._read_records()
        self._attached: set[str] = set()
        self._ended: set[str] = set()  # SLURM ids seen ended: never attached to again
        self._resubmits: dict[str, int] = {}
        self._failed: set[str] = set()  # jobs this launch reported failed
        self._specs: dict = {}
        self._last_force = 0.0

    def run(self, specs, run_fn):
        specs = list(specs)
        self._specs = {s.job_id: s for s in specs}
        return super().run(specs, run_fn)

    def _read_records(self) -> dict:
        try:
            return json.loads(self.records_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_records(self) -> None:
        write_text(self.records_path, json.dumps(self.records, indent=1))

    def _executor(self, dependency: str | None):
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder / "%j")
        params = self.options.executor_parameters()
        if dependency:
            params["additional_parameters"] = {**params["additional_parameters"], "dependency": dependency,
                                               "kill-on-invalid-dep": "yes"}
        executor.update_parameters(**params)
        return executor

    @staticmethod
    def _state(job, mode: str = "cache") -> str:
        """The job's SLURM state as sacct names it, through submitit's watcher ("CANCELLED by 0" ->
        "CANCELLED"; "UNKNOWN" while accounting does not know the job yet)."""
        state = job.watcher.get_state(job.job_id, mode=mode).split()
        return state[0].upper() if state else "UNKNOWN"

    def _attach(self, spec):
        """The SLURM job of an earlier launch for this spec, when it is still queued or running. A job
        that SLURM has ended or is ending (cancelled and still being killed: COMPLETING, CANCELLED)
        is not running, whatever squeue still lists: the spec is submitted anew."""
        import submitit

        record = self.records.get(spec.job_id)
        if not record or record.get("config_hash") != getattr(spec, "config_hash", None):
            return None
        if str(record["slurm_id"]) in self._ended:
            return None
        job = submitit.SlurmJob(folder=record["folder"], job_id=record["slurm_id"])
        if job.paths.result_pickle.exists():
            # It ended. Failed: run it anew. Finished since this launch's skip check: collect it
            # (re-submitting it would only skip, and the test of a single submission would race).
            return job if is_finished(spec) and _succeeded(job) else None
        state = self._state(job, mode="force")
        if state == "UNKNOWN":
            # not (or no longer) in accounting: only the controller's queue can say it is alive
            state = squeue_state(job.job_id) or "GONE"
        return job if state in ACTIVE_SLURM_STATES else None

    def _start(self, spec, run_fn, running_deps):
        job = self._attach(spec)
        fresh_sources = [d for d in running_deps if str(d.job_id) not in self._attached]
        if job is not None and fresh_sources:
            # Its old job waits on sources that ended and are submitted anew: SLURM cancels it.
            subprocess.run(["scancel", str(job.job_id)], capture_output=True)
            job = None
        if job is not None:
            log.info("%s: attached to SLURM job %s of an earlier launch", spec.job_id, job.job_id)
            self._attached.add(str(job.job_id))
            return job
        dependency = "afterok:" + ":".join(str(j.job_id) for j in running_deps) if running_deps else None
        job = self._executor(dependency).submit(execute_or_raise, spec, run_fn, self.options.threads)
        self.records[spec.job_id] = {"slurm_id": str(job.job_id), "folder": str(self.folder / "%j"),
                                     "config_hash": getattr(spec, "config_hash", None),
                                     "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                                     "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save_records()
        return job

    def _detached(self) -> bool:
        return self.detach

    def _slurm_id(self, handle) -> str | None:
        return str(handle.job_id)

    def _wait(self, running, timeout):
        from submitit.core.utils import FailedJobError, UncompletedJobError

        if time.time() - self._last_force > 10 and running:
            # submitit polls sacct ever more rarely as jobs age; a failure should show within seconds
            next(iter(running.values())).watcher.update()
            self._last_force = time.time()
        finished = []
        collected: set[str] = set()
        for job_id, job in running.items():
            if job_id in collected:  # a dependent already sent back with its killed source
                continue
            done = job.done()
            state, has_result = self._state(job), job.paths.result_pickle.exists()
            # submitit counts PREEMPTED as not done (it expects a requeue): over here, as is any state
            # that is neither active nor COMPLETING (a job being killed, not decided yet)
            if not (done or has_result or state not in ACTIVE_SLURM_STATES | {"COMPLETING"}):
                continue
            sources = self._specs[job_id].depends_on if job_id in self._specs else ()
            if any(d in running and d not in collected for d in sources):
                # SLURM cancels a dependent when its source ends without success: decide about the
                # dependent once its source is decided (failed: it fails with it; killed: both run anew)
                continue
            collected.add(job_id)
            record = self.records.get(job_id, {})
            if not has_result and state in RESUBMIT_SLURM_STATES:
                if any(d in self._failed for d in sources):
                    # cancelled by SLURM because a source failed (the launch names that source)
                    finished.append((job_id, Outcome(job_id, "failed", slurm_id=str(job.job_id),
                                                     error="SLURM cancelled it: a source failed")))
                    self._failed.add(job_id)
                else:
                    finished.extend(self._resubmit(job_id, job, state, running, collected))
                continue
            try:
                outcome = job.result()
            except FailedJobError as exc:
                # the job's own failure (JobFailed, its message last in the remote traceback), or a crash
                lines = str(exc).strip().splitlines() or ["failed"]
                mine = [line.split("JobFailed: ", 1)[1] for line in lines if "JobFailed: " in line]
                error, job_log = lines[-1], record.get("stderr")
                if mine:
                    error, _, job_log = mine[-1].partition(" [log: ")
                    job_log = job_log.rstrip("]")
                outcome = Outcome(job_id, "failed", error=error, log=job_log)
            except UncompletedJobError as exc:
                self._ended.add(str(job.job_id))
                state = self._state(job, mode="force")
                if state == "TIMEOUT":
                    error = (f"SLURM job {job.job_id} reached its time limit ({self.options.time_min} min) before "
                             "finishing; it runs again at the next launch (a longer --time lets it finish)")
                else:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    error = (f"SLURM job {job.job_id} ended {state} without finishing ({first}); it runs again at "
                             "the next launch")
                outcome = Outcome(job_id, "failed", error=error, log=record.get("stderr"))
            outcome.slurm_id = str(job.job_id)
            if outcome.status == "failed":
                self._failed.add(job_id)
                outcome.log = outcome.log or record.get("stderr")
            finished.append((job_id, outcome))
        if not finished:
            time.sleep(min(timeout, self.options.poll_s))
        return finished

    def _resubmit(self, job_id: str, job, state: str, running: dict, collected: set) -> list[tuple[str, Outcome]]:
        """A job the scheduler killed goes back to the launch's queue (``resubmit``), and so do its
        dependents still waiting on the killed job (cancelled here: their ``afterok`` can never be met)."""
        self._ended.add(str(job.job_id))
        count = self._resubmits[job_id] = self._resubmits.get(job_id, 0) + 1
        if count > self.options.max_resubmits:
            self._failed.add(job_id)
            return [(job_id, Outcome(job_id, "failed", slurm_id=str(job.job_id), log=self.records.get(job_id, {}).get(
                "stderr"), error=f"SLURM job {job.job_id} ended {state} without finishing, the {count}th time in "
                "this launch; it runs again at the next launch"))]
        log.warning("%s: SLURM job %s ended %s without finishing (killed by the scheduler, no error of its own): "
                    "submitting it again (%d/%d)", job_id, job.job_id, state, count, self.options.max_resubmits)
        back = [(job_id, Outcome(job_id, "resubmit", slurm_id=str(job.job_id),
                                 error=f"SLURM job {job.job_id} ended {state} before finishing: submitted again"))]
        anew = [job_id]
        while anew:  # and the dependents of those dependents
            source = anew.pop()
            for other, handle in running.items():
                if other in collected or source not in getattr(self._specs.get(other), "depends_on", ()):
                    continue
                subprocess.run(["scancel", str(handle.job_id)], capture_output=True)
                self._ended.add(str(handle.job_id))
                collected.add(other)
                anew.append(other)
                back.append((other, Outcome(other, "resubmit", slurm_id=str(handle.job_id),
                                            error=f"its source {source} is submitted again")))
        return back


def make_launcher(kind: str, run_dir, jobs: int = 1, slurm: SlurmOptions | None = None, detach: bool = False,
                  progress=None, gpus_per_job: int = 1, threads: int | None = None) -> Launcher:
    """``threads``: torch threads of every job, wherever it runs (None: each launcher's share of
    the cores)."""
    if kind == "local":
        if detach:
            raise ValueError("--detach needs --launcher slurm (a local pool ends with its command)")
        return make_local(jobs, run_dir=run_dir, progress=progress, gpus_per_job=gpus_per_job, threads=threads)
    if kind == "slurm":
        if not sbatch_available():
            raise RuntimeError("--launcher slurm needs the SLURM client commands (sbatch, sacct) on PATH")
        slurm = slurm or SlurmOptions()
        if threads and not slurm.threads:
            slurm = dataclasses.replace(slurm, threads=threads)
        return SlurmLauncher(run_dir, slurm, detach, progress)
    raise ValueError(f"unknown launcher {kind!r}: local or slurm")


def _succeeded(job) -> bool:
    """Whether a SLURM job that has a result pickle returned (rather than raised)."""
    try:
        job.result()
    except Exception:  # submitit's FailedJobError and whatever unpickling a stale result raises
        return False
    return True


def squeue_state(slurm_id: str) -> str | None:
    """A job's state in the controller's queue (None once it has left it, or without squeue)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(slurm_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip().upper() if out else None


def slurm_state(slurm_id: str) -> str | None:
    """A SLURM job's state from sacct (None when sacct is absent or does not know it)."""
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(slurm_id)], capture_output=True,
                             text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].split()[0] if out else None
