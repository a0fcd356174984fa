"""The leaderboard runner: plan the jobs (jobs.py), run each from its spec, merge the job folders.

Every job writes its records under ``OUT/jobs/<method>/<fold>-seed<seed>/`` (results,
predictions, a DONE marker) with atomic writes; a re-run of the same command skips finished
jobs, and ``OUT/results.parquet``, ``OUT/predictions.parquet`` and ``OUT/leaderboard.md`` are
rebuilt from the job records after each job (collect.py), so a crash loses nothing finished.
A launcher (launchers.py) runs the specs: in this process one after the other (``jobs=1``), in
a local pool of ``jobs`` workers, or as SLURM jobs; each calls ``jobs.run_spec``. The features
every job needs are extracted here first, once, so that no two jobs extract the same features.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmer_bench.collect import collect
from mmer_bench.jobs import compatible_methods, corpus_of, method_inputs, plan_jobs, rank, run_spec
from mmer_bench.launchers import DEFAULT_THREADS, SlurmOptions, make_launcher
from mmer_bench.train import BestWeights, monitor

log = logging.getLogger(__name__)

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
    # row name -> {"method": a registered method, **its overrides}: a method run again as another row
    variants: dict[str, dict] = field(default_factory=dict)
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
    num_nodes: int = 1  # one job over several nodes (Lightning; under SLURM one task per GPU)
    launcher: str = "local"  # local | slurm (launchers.py)
    jobs: int = 1  # local: worker processes (1: every job in this process, one after another)
    threads: int = DEFAULT_THREADS  # torch threads of every job, whatever jobs and launcher (same numbers)
    gpus_per_job: int = 1  # local: GPUs of each worker where GPUs exist
    slurm: SlurmOptions | None = None
    detach: bool = False  # slurm: submit and return; running the command again collects


class Runner:
    def __init__(self, config: BenchConfig):
        self.cfg = config
        self.out = Path(config.out)

    def run(self) -> pd.DataFrame:
        specs = plan_jobs(self.cfg)
        corpus = corpus_of(specs[0].config)[0] if specs else None
        if rank() != 0:  # a DDP rank of an in-process run: it follows rank 0 through the jobs
            for spec in specs:
                run_spec(spec)
            return pd.DataFrame()
        if self.cfg.launcher == "local" and self.cfg.jobs > 1 and str(self.cfg.devices) != "1":
            # Lightning starts a DDP job's other ranks by re-running the command: not from a pool worker.
            raise ValueError(f"a job over several devices (--devices {self.cfg.devices}) runs in this process "
                             "(--jobs 1) or under --launcher slurm, not in a local pool (--jobs > 1)")
        prepare_features(specs)
        launcher = make_launcher(self.cfg.launcher, self.out, jobs=self.cfg.jobs, slurm=self.cfg.slurm,
                                 detach=self.cfg.detach, gpus_per_job=self.cfg.gpus_per_job, threads=self.cfg.threads)
        launcher.on_finished = lambda spec, outcome: collect(self.out, corpus, self.cfg.publish)
        outcomes = launcher.run(specs, run_spec)
        if specs:  # also when every job was finished before; the last merge adds the verdicts
            collect(self.out, corpus, self.cfg.publish, final=True, manifest=corpus_of(specs[0].config)[1],
                    loggers=tuple(self.cfg.loggers))
        if self.cfg.detach:
            submitted = [o for o in outcomes.values() if o.status == "submitted"]
            print(f"submitted {len(submitted)} SLURM jobs ({len(outcomes) - len(submitted)} finished before); "
                  f"`mmer status {self.out}` shows where they are, the same command again collects them",
                  file=sys.stderr)
        failures = [o for o in outcomes.values() if o.status == "failed"]
        if failures:
            lines = "\n".join(f"  {f.job_id}: {f.error}" + (f" (log: {f.log})" if f.log else "") for f in failures)
            raise RuntimeError(f"{len(failures)} of {len(specs)} jobs failed (finished jobs are kept):\n{lines}")
        path = self.out / "results.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def prepare_features(specs) -> None:
    """Extract, here and once, every feature set the training jobs read (jobs then only read the
    store): N jobs starting together never extract the same features N times over."""
    from mmer_bench.features.base import extract
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.registry import EXTRACTORS

    seen = set()
    for spec in specs:
        if spec.kind != "train":
            continue
        cfg = spec.config
        corpus, manifest, _ = corpus_of(cfg)
        cache_dir = cfg["cache_dir"]
        store = FeatureStore(Path(cache_dir) / "features" if cache_dir else None)
        manifest_hash = corpus.manifest_hash(manifest)
        for extractor_name in sorted(set(cfg["inputs"].values())):
            extractor = EXTRACTORS.get(extractor_name)(**cfg["features"].get(extractor_name, {}))
            key = (str(store.root), extractor.name, extractor.cache_key(manifest_hash))
            if key in seen:
                continue
            seen.add(key)
            # has_current: an old-layout entry is redone here, once, not by every job that reads it
            if not store.has_current(extractor.name, key[2]):
                log.info("extracting %s for %s", extractor.name, corpus.name)
                extract(extractor, manifest, manifest_hash, store, cfg["workers"])


def run_bench(config: BenchConfig) -> pd.DataFrame:
    if not config.command:
        config.command = " ".join(["mmer", *sys.argv[1:]]) if sys.argv else ""
    return Runner(config).run()
