"""The leaderboard runner: plan the jobs (jobs.py), run each from its spec, merge the job folders.

Every job writes its records under ``OUT/jobs/<method>/<fold>-seed<seed>/`` (results,
predictions, a DONE marker) with atomic writes; a re-run of the same command skips finished
jobs, and ``OUT/results.parquet``, ``OUT/predictions.parquet`` and ``OUT/leaderboard.md`` are
rebuilt from the job records after each job (collect.py), so a crash loses nothing finished.
Jobs run one after the other in this process; ``jobs.run_spec`` is the entry another launcher
(a process pool, a cluster) calls with the same specs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmer_bench.collect import collect
from mmer_bench.jobs import compatible_methods, corpus_of, method_inputs, plan_jobs, rank, run_spec
from mmer_bench.train import BestWeights, monitor

__all__ = ["BenchConfig", "BestWeights", "Runner", "compatible_methods", "method_inputs", "monitor", "run_bench"]


@dataclass
class BenchConfig:
    corpus: str
    methods: list[str] | None = None  # None: every compatible method and stacker
    folds: list[str] | None = None  # None: every fold of the protocol
    seeds: list[int] = field(default_factory=lambda: [0])
    data_root: str | None = None
    out: str = "runs/bench"
    corpus_options: dict = field(default_factory=dict)
    hparams: dict[str, dict] = field(default_factory=dict)  # method -> overrides (settings and recipe)
    # method -> {input name: extractor name}: feed a method other features than its defaults
    inputs: dict[str, dict] = field(default_factory=dict)
    features: dict[str, dict] = field(default_factory=dict)  # extractor name -> its parameters
    devices: int | str = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    loggers: list[str] = field(default_factory=lambda: ["csv", "wandb"])
    skip_missing: bool = False
    cache_dir: str | None = None
    workers: int | None = None
    publish: str | None = None  # directory for <corpus>.md and <corpus>.parquet
    max_epochs: int | None = None  # overrides every trained method's epoch budget (quick runs)
    command: str = ""
    config_file: str | None = None  # the YAML these settings came from (named in errors)


class Runner:
    def __init__(self, config: BenchConfig):
        self.cfg = config
        self.out = Path(config.out)

    def run(self) -> pd.DataFrame:
        specs = plan_jobs(self.cfg)
        corpus = corpus_of(specs[0].config)[0] if specs else None
        failures = []
        for spec in specs:
            outcome = run_spec(spec)
            if outcome["status"] == "failed":
                failures.append(outcome)
            if outcome["status"] != "skipped" and rank() == 0:
                collect(self.out, corpus, self.cfg.publish)
        if rank() == 0 and specs:
            collect(self.out, corpus, self.cfg.publish, final=True, manifest=corpus_of(specs[0].config)[1],
                    loggers=tuple(self.cfg.loggers))
        if failures:
            lines = "\n".join(f"  {f['job_id']}: {f['error']}" for f in failures)
            raise RuntimeError(f"{len(failures)} of {len(specs)} jobs failed (finished jobs are kept):\n{lines}")
        return pd.read_parquet(self.out / "results.parquet") if rank() == 0 else pd.DataFrame()


def run_bench(config: BenchConfig) -> pd.DataFrame:
    if not config.command:
        config.command = " ".join(["mmer", *sys.argv[1:]]) if sys.argv else ""
    return Runner(config).run()
