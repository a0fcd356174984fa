"""Progress of a job matrix: a live table on a terminal, plain lines elsewhere, and ``mmer status``.

The live board counts done / running / failed / waiting jobs and estimates the time left from
the jobs finished in this launch (their mean wall time, spread over the slots). ``run_status``
rebuilds the same table for any run folder, during or after a launch, from what the jobs left
in their own folders (``DONE``, ``FAILED``, ``HOLDER``) and the launch records
(``launch/plan.json``, ``launch/slurm.json``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmer_bench.launchers import ACTIVE_SLURM_STATES, LAUNCH_DIR, JobLock, Outcome, holder_state, slurm_state

STATES = ("done", "running", "failed", "waiting")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Board:
    """Live state of one launch. ``for_stream`` picks the rich table for a terminal, plain lines
    otherwise (logs, CI, a batch job's output file)."""

    def __init__(self, slots: int = 1):
        self.slots = slots
        self.state: dict[str, str] = {}
        self.slurm: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.durations: list[float] = []
        self.started_at = time.time()
        self.running_since: dict[str, float] = {}

    @staticmethod
    def for_stream(stream=None, slots: int = 1) -> Board:
        stream = stream or sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            return LiveBoard(stream, slots)
        return LineBoard(stream, slots)

    # events
    def start(self, specs: dict) -> None:
        self.state = {job_id: "waiting" for job_id in specs}
        self.started_at = time.time()

    def started(self, job_id: str, slurm_id=None) -> None:
        self.state[job_id] = "running"
        self.running_since[job_id] = time.time()
        if slurm_id is not None:
            self.slurm[job_id] = str(slurm_id)
        self.changed(job_id)

    def finished(self, outcome) -> None:
        self.state[outcome.job_id] = {"done": "done", "skipped": "done", "submitted": "running"}.get(outcome.status,
                                                                                                     "failed")
        if outcome.status == "done" and outcome.seconds:
            self.durations.append(outcome.seconds)
        if outcome.status == "failed":
            self.errors[outcome.job_id] = outcome.error or ""
        self.running_since.pop(outcome.job_id, None)
        self.changed(outcome.job_id, outcome)

    def busy(self, job_id: str, message: str | None) -> None:
        self.state[job_id] = "waiting"
        self.running_since.pop(job_id, None)
        self.changed(job_id)

    def resubmitted(self, job_id: str, reason: str | None) -> None:
        """The scheduler killed the job (or its source): the launch starts it again."""
        self.state[job_id] = "waiting"
        self.running_since.pop(job_id, None)
        self.changed(job_id, Outcome(job_id, "resubmit", error=reason))

    def tick(self) -> None:
        pass

    def stop(self, outcomes: dict) -> None:
        pass

    def changed(self, job_id: str, outcome=None) -> None:
        pass

    # figures
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state in self.state.values():
            counts[state] += 1
        return counts

    def eta(self) -> float | None:
        if not self.durations:
            return None
        counts = self.counts()
        left = counts["waiting"] + counts["running"]
        parallel = max(1, min(self.slots, left))
        return sum(self.durations) / len(self.durations) * left / parallel

    def summary(self) -> str:
        c = self.counts()
        total = len(self.state)
        return (f"[{c['done'] + c['failed']}/{total}] done {c['done']}, running {c['running']}, "
                f"failed {c['failed']}, waiting {c['waiting']}; elapsed {_duration(time.time() - self.started_at)}, "
                f"ETA {_duration(self.eta()) if c['waiting'] + c['running'] else '0s'}")


class LineBoard(Board):
    """One line per event: no cursor tricks in files and CI logs."""

    def __init__(self, stream, slots: int = 1):
        super().__init__(slots)
        self.stream = stream

    def changed(self, job_id, outcome=None) -> None:
        state = self.state[job_id]
        what = outcome.status if outcome is not None else state
        detail = ""
        if outcome is not None and outcome.status == "done":
            detail = f" in {_duration(outcome.seconds)}"
        if outcome is not None and outcome.status == "failed":
            detail = f": {outcome.error}" + (f" (log: {outcome.log})" if outcome.log else "")
        if outcome is not None and outcome.status == "resubmit":
            detail = f": {outcome.error}"
        if job_id in self.slurm and state == "running":
            detail += f" (SLURM job {self.slurm[job_id]})"
        if outcome is not None and outcome.status == "skipped":
            return  # finished earlier: only the count says so
        print(f"{what:9s} {job_id}{detail} | {self.summary()}", file=self.stream, flush=True)

    def stop(self, outcomes) -> None:
        print(self.summary(), file=self.stream, flush=True)


class LiveBoard(Board):
    """A rich table redrawn in place: counts, ETA and the jobs running now."""

    def __init__(self, stream, slots: int = 1):
        super().__init__(slots)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)

    def render(self):
        from rich.table import Table

        table = Table(title=self.summary(), show_edge=False)
        table.add_column("job")
        table.add_column("state")
        table.add_column("for")
        table.add_column("SLURM")
        now = time.time()
        shown = [j for j, s in self.state.items() if s in ("running", "failed")][:20]
        for job_id in shown:
            state = self.state[job_id]
            since = self.running_since.get(job_id)
            table.add_row(job_id, state if state != "failed" else f"[red]failed[/]: {self.errors.get(job_id, '')[:80]}",
                          _duration(now - since) if since else "", self.slurm.get(job_id, ""))
        return table

    def start(self, specs) -> None:
        super().start(specs)
        self.live.start()
        self.live.update(self.render())

    def changed(self, job_id, outcome=None) -> None:
        self.live.update(self.render())

    def tick(self) -> None:
        self.live.update(self.render())

    def stop(self, outcomes) -> None:
        self.live.update(self.render())
        self.live.stop()


class QuietBoard(Board):
    """Counts only (for tests and callers that print their own progress)."""


# --- mmer status ---------------------------------------------------------------------------------
def run_status(run_dir: str | Path) -> list[dict]:
    """Every job of the latest launch into ``run_dir``: state, SLURM id and the log of a failure."""
    run_dir = Path(run_dir)
    plan_path = run_dir / LAUNCH_DIR / "plan.json"
    if not plan_path.exists():
        raise FileNotFoundError(f"{run_dir} holds no launch record ({plan_path} is missing): not a run folder of "
                                "mmer bench, or one made before launch records existed")
    plan = json.loads(plan_path.read_text())
    try:
        slurm = json.loads((run_dir / LAUNCH_DIR / "slurm.json").read_text())
    except (OSError, ValueError):
        slurm = {}
    rows = []
    for job in plan["jobs"]:
        out = Path(job["out_dir"])
        if not out.exists() and not out.is_absolute():
            out = run_dir / out
        record = slurm.get(job["job_id"], {})
        row = {"job_id": job["job_id"], "state": "waiting", "slurm_id": record.get("slurm_id"), "log": None,
               "note": ""}
        done = out / "DONE"
        finished = False
        if done.exists():
            try:
                finished = job.get("config_hash") in (None, json.loads(done.read_text()).get("config_hash"))
            except (OSError, ValueError):
                finished = False
        holder = holder_state(out)
        sstate = slurm_state(record["slurm_id"]) if record.get("slurm_id") and not finished else None
        if (holder == "running" and sstate not in ACTIVE_SLURM_STATES | {None, "COMPLETING"}
                and str((JobLock(out).holder() or {}).get("slurm_job_id")) == str(record.get("slurm_id"))):
            holder = "ended"  # held by its SLURM job, which SLURM has ended: a killed process, not a live one
        if finished:
            row["state"] = "done"
        elif holder == "running":
            row["state"] = "running"
        elif sstate in ("PENDING", "REQUEUED", "CONFIGURING"):
            row["state"], row["note"] = "waiting", f"queued ({sstate})"
        elif sstate in ("RUNNING", "COMPLETING"):
            row["state"] = "running"
        elif (out / "FAILED").exists() or holder == "interrupted" or sstate not in (None, "COMPLETED"):
            row["state"] = "failed"
            row["log"] = next((str(p) for p in (out / "job.log", Path(record.get("stderr", "")), out / "FAILED")
                               if str(p) not in ("", ".") and p.exists()), None)
            if holder == "interrupted":
                row["note"] = "interrupted (its process ended without finishing); runs again at the next launch"
            elif (out / "FAILED").exists():
                lines = [line for line in (out / "FAILED").read_text().strip().splitlines() if line.strip()]
                row["note"] = lines[-1][:160] if lines else ""
            else:
                row["note"] = f"SLURM state {sstate}; runs again at the next launch"
        rows.append(row)
    failed = {r["job_id"] for r in rows if r["state"] == "failed"}
    for job, row in zip(plan["jobs"], rows):
        blocked = [d for d in job.get("depends_on", ()) if d in failed]
        if row["state"] == "waiting" and blocked:
            row["note"] = f"blocked: its source {', '.join(blocked)} failed"
    return rows


def format_status(rows: list[dict], run_dir) -> str:
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        counts[row["state"]] += 1
    head = (f"{run_dir}: {len(rows)} jobs: done {counts['done']}, running {counts['running']}, "
            f"failed {counts['failed']}, waiting {counts['waiting']}")
    width = max([len(r["job_id"]) for r in rows] + [3])
    lines = [head, f"{'job':{width}s}  {'state':8s}  {'SLURM':8s}  note / log"]
    for r in rows:
        extra = " ".join(x for x in (r["note"], f"log: {r['log']}" if r["log"] else "") if x)
        lines.append(f"{r['job_id']:{width}s}  {r['state']:8s}  {r['slurm_id'] or '-':8s}  {extra}".rstrip())
    return "\n".join(lines)
