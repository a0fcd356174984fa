"""Wall time of the RAVDESS feature-based benchmark with ``--jobs N`` against ``--jobs 1``.

    MMER_CACHE=... python benchmarks/parallel_speedup.py --data-root ../shared/data [--jobs 2]

The matrix: luna2022-au-mlp, egemaps-mlp, compare-mlp, williams2018-bilstm and luna2022-fusion
(over the sources benchmarks/ravdess.yaml fuses that are in this run), 5 folds (or ``--folds``),
the seeds and hyperparameters of benchmarks/ravdess.yaml (``--seeds`` for fewer). The features
are extracted first (not timed), so both runs read them from the cache. Each run is a fresh
``mmer bench`` command into its own folder, both with ``--threads 1`` (one torch thread per job:
the thread count changes CPU kernels' summation order, so the two runs must share it); prints
both wall times, their ratio, and whether every test metric is identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["luna2022-au-mlp", "egemaps-mlp", "compare-mlp", "williams2018-bilstm", "luna2022-fusion"]


def bench(config: Path, data_root: str, out: Path, jobs: int, loggers: str, folds: str | None) -> float:
    command = [sys.executable, "-m", "mmer_bench.cli", "bench", "ravdess", "--config", str(config),
               "--data-root", data_root, "--out", str(out), "--jobs", str(jobs), "--loggers", loggers,
               "--threads", "1"]
    if folds:
        command += ["--folds", folds]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--loggers", default="csv", help="as mmer bench --loggers (default csv)")
    parser.add_argument("--work", help="folder for the two runs (default: a temporary one)")
    parser.add_argument("--methods", default=",".join(METHODS), help="a smaller matrix on a busy machine")
    parser.add_argument("--folds", help="e.g. fold0,fold1 (default: all 5)")
    parser.add_argument("--seeds", help="e.g. 0 (default: those of benchmarks/ravdess.yaml)")
    args = parser.parse_args()
    methods = args.methods.split(",")

    conf = yaml.safe_load((ROOT / "benchmarks" / "ravdess.yaml").read_text())
    conf["methods"] = methods
    if args.seeds:
        conf["seeds"] = [int(s) for s in args.seeds.split(",")]
    fused = conf.get("hparams", {}).get("luna2022-fusion", {}).get("fuse")
    if fused:
        conf["hparams"]["luna2022-fusion"]["fuse"] = [m for m in fused if m in methods]
    conf["hparams"] = {m: v for m, v in conf.get("hparams", {}).items() if m in methods}
    work = Path(args.work or tempfile.mkdtemp(prefix="mmer-speedup-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ravdess-features.yaml"
    config.write_text(yaml.safe_dump(conf))
    print(f"methods {', '.join(methods)}; folds {args.folds or 'all'}; seeds {conf.get('seeds')}; fusion of {conf['hparams'].get('luna2022-fusion', {}).get('fuse')}; "
          f"loggers {args.loggers}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    from mmer_bench.features.base import extract
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.registry import CORPORA, EXTRACTORS
    from mmer_bench.registry import METHODS as REGISTRY

    corpus = CORPORA.get("ravdess")(args.data_root, **conf.get("corpus_options", {}))
    manifest = corpus.manifest()
    extractors = sorted({e for m in methods if m in REGISTRY.names() for e in REGISTRY.get(m).inputs.values()})
    for name in extractors:  # cached before timing: both runs only read the store
        extract(EXTRACTORS.get(name)(), manifest, corpus.manifest_hash(manifest), FeatureStore())
    print(f"features cached: {', '.join(extractors)}", flush=True)

    one = bench(config, args.data_root, work / "jobs1", 1, args.loggers, args.folds)
    print(f"--jobs 1: {one:.1f} s (load average now {os.getloadavg()[0]:.1f})", flush=True)
    many = bench(config, args.data_root, work / f"jobs{args.jobs}", args.jobs, args.loggers, args.folds)
    print(f"--jobs {args.jobs}: {many:.1f} s (load average now {os.getloadavg()[0]:.1f})", flush=True)

    def metrics(folder):
        results = pd.read_parquet(work / folder / "results.parquet")
        rows = results[results["split"] == "test"]
        return rows.set_index(["method", "fold", "seed", "task", "metric"])["value"].sort_index()

    a, b = metrics("jobs1"), metrics(f"jobs{args.jobs}")
    identical = a.index.equals(b.index) and (a.to_numpy() == b.to_numpy()).all()
    jobs = len(list((work / "jobs1").glob("jobs/*/*/DONE")))
    print(f"{jobs} jobs; speed-up {one / many:.2f}x with --jobs {args.jobs} (target >= 1.7x); "
          f"test metrics {'identical' if identical else 'DIFFERENT'} ({len(a)} values)")
    if not identical:
        diff = (a - b).abs()
        print(diff[diff > 0].head(20).to_string())
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
