"""The ``mmer`` command: list, describe, extract, bench, status, fuse, leaderboard, posteriors, download."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub at run time


def _split(text: str | None) -> list[str] | None:
    return [t for t in text.split(",") if t] if text else None


def cmd_list(args) -> int:
    from mmer_bench.registry import CORPORA, EXTRACTORS, METHODS, STACKERS

    print("corpora:")
    for name, cls in CORPORA.items():
        tasks = ", ".join(f"{t.name} ({t.num_outputs})" for t in cls.tasks)
        print(f"  {name:24s} {tasks}; {cls.protocol}")
    print("methods:")
    for name, cls in METHODS.items():
        print(f"  {name:24s} consumes {', '.join(sorted(set(cls.inputs.values())))}")
    print("stackers:")
    for name, cls in STACKERS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:24s} fuses the posteriors of other methods of the run: {summary}")
    print("extractors:")
    for name, cls in EXTRACTORS.items():
        print(f"  {name:24s} {cls.kind} from {cls.source_column}")
    return 0


def cmd_describe(args) -> int:
    from mmer_bench.registry import CORPORA

    corpus = CORPORA.get(args.corpus)(args.data_root)
    manifest = corpus.manifest()
    folds = corpus.plan(manifest)
    group = corpus.group_columns[0] if corpus.group_columns else None
    groups = f", {manifest[group].nunique()} {group}s" if group in manifest.columns else ""
    print(f"{corpus.name}: {len(manifest)} clips{groups}")
    print(f"protocol: {corpus.protocol}")
    for fold in folds:
        # A fold's info["warning"] (e.g. a released split that validates on its test list) gets its own line.
        info = {k: v for k, v in fold.info.items() if k != "warning"}
        print(f"  {fold.name}: train {len(fold.train)}, val {len(fold.val)}, test {len(fold.test)} {info or ''}")
        if "warning" in fold.info:
            print(f"  WARNING {fold.name}: {fold.info['warning']}")
    for task in corpus.tasks:
        if task.kind != "classification":  # regressed values: their range and mean
            stats = manifest[list(task.columns)].agg(["min", "mean", "max"])
            print(f"{task.name}: " + ", ".join(f"{c} {v['min']:.2f}..{v['max']:.2f} (mean {v['mean']:.2f})"
                                               for c, v in stats.items()))
            continue
        counts = manifest[task.name].value_counts().sort_index()
        print(f"{task.name}: " + ", ".join(f"{task.classes[i]} {n}" for i, n in counts.items()))
    print("features available: " + ", ".join(sorted(corpus.available_features(manifest))))
    print("modalities present:")
    modalities = {**corpus.media_columns, "text": "text"}
    for column in [c for c in manifest.columns if c.endswith("_path") or c == "text"]:
        present = manifest[column].notna().sum() if column != "text" else (manifest[column].fillna("") != "").sum()
        print(f"  {modalities.get(column, column)} ({column}): {present} of {len(manifest)} clips")
    for line in corpus.describe_extra(manifest, folds):
        print(line)
    return _describe_files(corpus, manifest, args)


def _describe_files(corpus, manifest, args) -> int:
    """Damaged media (headers only; every file decoded with --check) and, with --check, the
    checksum lists beside the corpus. Exit status 1 when anything is wrong."""
    from mmer_bench import integrity

    found = integrity.quick_problems(manifest)
    if not args.check:
        print(f"damaged or missing media files (headers only; --check decodes every file): {len(found)}")
        problems = list(found.values())
    else:
        decoded, decode_problems = integrity.decode_problems(manifest, args.workers)
        found.update(decode_problems)  # one line per file: decoding says more than the header
        print(f"media check: {decoded} files decoded, {len(found)} with problems")
        problems = list(found.values())
        paths = [p for _, p in integrity.media_files(manifest)]
        folders = [Path(os.path.commonpath(paths))] if paths else []
        if corpus.data_root is not None:
            folders += [corpus.data_root / corpus.name, corpus.data_root]
        lists = integrity.checksum_lists(f for f in folders if f.is_dir())
        if not lists:
            print("checksums: no checksum list (SHA256SUMS, MD5SUMS) beside the corpus")
        for listing in lists:
            listed, mismatches = integrity.checksum_problems(listing)
            print(f"checksums: {listing}: {listed - len(mismatches)} of {listed} files match")
            problems += mismatches
    for line in problems[:50]:
        print(f"  {line}")
    if len(problems) > 50:
        print(f"  ... and {len(problems) - 50} more")
    return 1 if problems else 0


def cmd_extract(args) -> int:
    from mmer_bench.features.base import extract
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.registry import CORPORA, EXTRACTORS

    corpus = CORPORA.get(args.corpus)(args.data_root)
    manifest = corpus.manifest()
    store = FeatureStore(Path(args.cache_dir) / "features" if args.cache_dir else None)
    for name in _split(args.extractors):
        features = extract(EXTRACTORS.get(name)(), manifest, corpus.manifest_hash(manifest), store, args.workers)
        print(f"{name}: {len(features.arrays)} clips extracted, {len(features.errors)} failed")
        for clip, error in list(features.errors.items())[:20]:
            print(f"  {clip}: {error}")
    return 0


def load_benchmark_config(path: str | None, corpus: str):
    """The benchmark YAML (``--config``, else benchmarks/CORPUS.yaml when it exists), checked
    against settings.BenchFile; returns (BenchFile, its path or None)."""
    from mmer_bench.settings import BenchFile, load_bench_file

    candidate = Path(path) if path else Path("benchmarks") / f"{corpus}.yaml"
    if path and not candidate.exists():
        raise FileNotFoundError(f"benchmark config {candidate} does not exist")
    if not candidate.exists():
        return BenchFile(), None
    return load_bench_file(candidate), str(candidate)


def with_encoder(features: dict, hparams: dict, encoder: str) -> tuple[dict, dict]:
    """``--encoder`` (``make bench ENCODER=``): the model of the encoder extractors
    (audio-encoder, text-encoder) and of the generic fine-tuning methods (ssl-ft,
    text-encoder-ft), over what the benchmark config says."""
    from mmer_bench.features.encoders import ENCODER_EXTRACTORS
    from mmer_bench.registry import METHODS

    features = {**features, **{e: {**features.get(e, {}), "model": encoder} for e in ENCODER_EXTRACTORS}}
    hparams = {**hparams, **{m: {**hparams.get(m, {}), "model": encoder}
                             for m, cls in METHODS.items() if getattr(cls, "encoder_hparam", None) == "model"}}
    return features, hparams


def cmd_bench(args) -> int:
    from mmer_bench.launchers import DEFAULT_THREADS
    from mmer_bench.runner import BenchConfig, run_bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    conf, config_file = load_benchmark_config(args.config, args.corpus)
    trainer = conf.trainer
    features, hparams = conf.features, conf.hparams
    if args.encoder:
        features, hparams = with_encoder(features, hparams, args.encoder)
    config = BenchConfig(
        corpus=args.corpus,
        methods=_split(args.methods) or conf.methods,
        folds=_split(args.folds) or conf.folds,
        seeds=[int(s) for s in _split(args.seeds)] if args.seeds else conf.seeds,
        data_root=args.data_root or conf.data_root,
        out=args.out or f"runs/{args.corpus}",
        corpus_options=conf.corpus_options,
        hparams=hparams,
        inputs=conf.inputs,
        variants=conf.variants,
        features=features,
        devices=_devices(args.devices or trainer.devices),
        accelerator=args.accelerator or trainer.accelerator,
        strategy=args.strategy or trainer.strategy,
        precision=args.precision or trainer.precision,
        loggers=_split(args.loggers) or conf.loggers,
        skip_missing=args.skip_missing or conf.skip_missing,
        cache_dir=args.cache_dir,
        workers=args.workers,
        publish=args.publish,
        max_epochs=args.max_epochs,
        config_file=config_file,
        num_nodes=args.num_nodes or trainer.num_nodes,
        launcher=args.launcher,
        jobs=args.jobs,
        gpus_per_job=args.gpus_per_job if args.gpus_per_job is not None else 1,
        slurm=_slurm_options(args) if args.launcher == "slurm" else None,
        detach=args.detach,
        threads=args.threads or DEFAULT_THREADS,
    )
    results = run_bench(config)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and (Path(config.out) / "leaderboard.md").exists():
        print((Path(config.out) / "leaderboard.md").read_text())
        print(f"results: {Path(config.out) / 'results.parquet'} ({len(results)} rows)")
    return 0


def _slurm_options(args):
    from mmer_bench.launchers import SlurmOptions

    extra = {}
    for option in args.sbatch or []:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise SystemExit(f"--sbatch {option!r}: expected KEY=VALUE (an sbatch option without its dashes, "
                             "e.g. --sbatch account=mylab)")
        extra[key.lstrip("-")] = value
    # `mmer robustness` has no device options: its jobs score on one CPU task each.
    devices = _devices(args.devices) if getattr(args, "devices", None) else 1
    return SlurmOptions(partition=args.partition, time_min=args.time, gpus_per_job=getattr(args, "gpus_per_job", 0) or 0,
                        cpus_per_job=args.cpus_per_job, mem=args.mem, num_nodes=getattr(args, "num_nodes", 1) or 1,
                        tasks_per_node=devices if isinstance(devices, int) and devices > 1 else 1, sbatch=extra)


def _devices(value):
    return value if value in ("auto", -1) else int(value)


def cmd_fuse(args) -> int:
    import numpy as np
    import pandas as pd

    from mmer_bench.fusion import read_posterior_dirs
    from mmer_bench.registry import CORPORA, STACKERS
    from mmer_bench.results import write_text
    from mmer_bench.stacking import stack_fold

    corpus = CORPORA.get(args.corpus)(args.data_root)
    task = corpus.tasks[0]
    cls = STACKERS.get(args.stacker)
    stacker = cls(cls.Settings(C=args.C, recipe=args.recipe))
    folds = read_posterior_dirs([Path(d) for d in args.posteriors], args.recipe)
    rows = []
    out = Path(args.out)
    for fold, parts in sorted(folds.items()):
        fused, _ = stack_fold(stacker, parts, task.classes, lambda ids: corpus.labels_for(ids, task.name), fold)
        (train_ids, _), (test_ids, probs) = fused["train"], fused["test"]
        target = corpus.labels_for(test_ids, task.name)
        accuracy = float((probs.argmax(1) == target).mean())
        rows.append({"fold": fold, "n_train": len(train_ids), "n_test": len(test_ids), "accuracy": accuracy})
        frame = pd.DataFrame(probs, columns=list(task.classes)).assign(clip_id=test_ids)
        (out / fold).mkdir(parents=True, exist_ok=True)
        frame[["clip_id", *task.classes]].to_csv(out / fold / "test.csv", index=False)
        print(f"{fold}: test accuracy {100 * accuracy:.2f}% ({len(test_ids)} clips, trained on {len(train_ids)} "
              f"{args.recipe} posteriors)")
    table = pd.DataFrame(rows)
    mean, std = table["accuracy"].mean(), table["accuracy"].std(ddof=1) if len(table) > 1 else float("nan")
    print(f"mean test accuracy over {len(table)} folds: {100 * mean:.2f}% (std {100 * std:.2f})")
    table.to_csv(out / "fusion_accuracy.csv", index=False)
    write_text(out / "summary.json", json.dumps({"mean_accuracy": mean, "std": std, "folds": rows, "recipe": args.recipe,
                                                 "sources": args.posteriors}, indent=1))
    return 0 if np.isfinite(mean) else 1


def cmd_posteriors(args) -> int:
    """Export a run's predictions to the posterior layout that ``mmer fuse`` reads."""
    import numpy as np
    import pandas as pd

    from mmer_bench.results import read_parquet_meta

    path = Path(args.results) / "predictions.parquet"
    preds = pd.read_parquet(path)
    classes = read_parquet_meta(path)["classes"]
    task = args.task or next(iter(classes))
    rows = preds[(preds["method"] == args.method) & (preds["task"] == task) & (preds["seed"] == args.seed)]
    if rows.empty:
        raise SystemExit(f"no predictions of {args.method} (task {task}, seed {args.seed}) in {path}")
    for (fold, split), group in rows.groupby(["fold", "split"]):
        frame = pd.DataFrame(np.stack(group["probs"].to_numpy()), columns=classes[task])
        frame.insert(0, "clip_id", group["clip_id"].to_numpy())
        (Path(args.out) / fold).mkdir(parents=True, exist_ok=True)
        frame.to_csv(Path(args.out) / fold / f"{split}.csv", index=False)
    # Out-of-fold posteriors of the training clips, from the inner-fold jobs of an inner-cv stacker.
    oof = 0
    for fold in sorted(rows["fold"].unique()):
        inner = sorted(Path(args.results).glob(f"jobs/{args.method}/inner/{fold}-inner*-seed{args.seed}/predictions.parquet"))
        tables = [pd.read_parquet(p) for p in inner if (p.parent / "DONE").exists()]
        tested = [t[(t["split"] == "test") & (t["task"] == task)] for t in tables]
        if tested:
            group = pd.concat(tested, ignore_index=True)
            frame = pd.DataFrame(np.stack(group["probs"].to_numpy()), columns=classes[task])
            frame.insert(0, "clip_id", group["clip_id"].to_numpy())
            frame.to_csv(Path(args.out) / fold / "oof.csv", index=False)
            oof += 1
    print(f"wrote {args.out}/fold*/{{train,val,test}}.csv for {args.method}"
          + (f", and oof.csv (out-of-fold posteriors of the training clips) for {oof} folds" if oof else ""))
    return 0


def cmd_leaderboard(args) -> int:
    """Re-merge the run's job folders (when it has them) and print its leaderboard."""
    import pandas as pd

    from mmer_bench.collect import collect, render

    folder = Path(args.results)
    results = collect(folder) if (folder / "jobs").is_dir() else None
    if results is None:
        results = pd.read_parquet(folder / "results.parquet")
    for corpus_name in sorted(results["corpus"].unique()):
        print(render(results[results["corpus"] == corpus_name]))
    return 0


def cmd_status(args) -> int:
    """The job table of a run folder, during a launch or after it."""
    from mmer_bench.progress import format_status, run_status

    rows = run_status(args.run_dir)
    print(format_status(rows, args.run_dir))
    return 1 if any(r["state"] == "failed" for r in rows) else 0
def cmd_robustness(args) -> int:
    import pandas as pd

    from mmer_bench.collect import collect, render
    from mmer_bench.jobs import corpus_of
    from mmer_bench.launchers import DEFAULT_THREADS
    from mmer_bench.registry import CORPORA
    from mmer_bench.results import write_parquet, write_text
    from mmer_bench.robustness import score_run
    from mmer_bench.robustness_report import robustness_section

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    results = pd.read_parquet(run_dir / "results.parquet")
    corpus_name = results["corpus"].iloc[0]
    conditions = _split(args.conditions) or load_benchmark_config(args.config, corpus_name)[0].robustness
    rob = score_run(run_dir, conditions, data_root=args.data_root, workers=args.workers, jobs=args.jobs,
                    launcher=args.launcher, slurm=_slurm_options(args) if args.launcher == "slurm" else None,
                    threads=args.threads or DEFAULT_THREADS)
    # The leaderboard is rebuilt by the runner's own merge (verdicts included), which appends the
    # robustness section; a run folder without job specs gets the plain table and the section.
    specs = [json.loads(p.read_text()).get("job") for p in sorted(run_dir.glob("jobs/*/*/job.json"))]
    spec = next((s for s in specs if s and s.get("kind") == "train"), None)
    if spec is not None:
        corpus, manifest, _ = corpus_of(spec["config"])
        collect(run_dir, corpus, args.publish, final=True, manifest=manifest)
        markdown = (run_dir / "leaderboard.md").read_text()
    else:
        corpus = CORPORA.get(corpus_name)()
        markdown = render(results, corpus) + robustness_section(run_dir, results, corpus, args.publish)
        write_text(run_dir / "leaderboard.md", markdown)
        if args.publish:
            write_text(Path(args.publish) / f"{corpus.name}.md", markdown)
    if args.publish:
        write_parquet(rob, Path(args.publish) / f"{corpus.name}-robustness.parquet")
    print(markdown)
    counts = rob.drop_duplicates(["method", "fold", "seed", "condition"])["status"].value_counts().to_dict()
    print(f"robustness: {run_dir / 'robustness.parquet'} ({len(rob)} rows; job x condition: {counts})")
    return 0


def cmd_download(args) -> int:
    from mmer_bench.download import download

    folder = download(args.corpus, Path(args.data_root), base_url=args.base_url, include_video=args.video)
    print(f"{args.corpus} is ready under {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered corpora, methods, stackers and extractors").set_defaults(func=cmd_list)

    p = sub.add_parser("describe", help="summarise a corpus under a data root")
    p.add_argument("corpus")
    p.add_argument("--data-root")
    p.add_argument("--check", action="store_true",
                   help="decode every media file and verify the checksum lists beside the corpus; exit 1 on any problem")
    p.add_argument("--workers", type=int, help="decoding processes for --check (default: all cores)")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("extract", help="extract features into the store")
    p.add_argument("corpus")
    p.add_argument("--extractors", required=True, help="comma-separated extractor names")
    p.add_argument("--data-root")
    p.add_argument("--cache-dir")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("bench", help="train and evaluate methods on a corpus")
    p.add_argument("corpus")
    p.add_argument("--methods", help="comma-separated method, variant (the config's variants:) and stacker names (default: the config's, else every compatible one)")
    p.add_argument("--folds", help="comma-separated fold names (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds (default: 0)")
    p.add_argument("--data-root")
    p.add_argument("--out", help="output directory (default: runs/CORPUS)")
    p.add_argument("--config", help="benchmark YAML (default: benchmarks/CORPUS.yaml when it exists)")
    p.add_argument("--devices")
    p.add_argument("--accelerator")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--precision", help="e.g. 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--loggers", help="comma-separated: csv, wandb (default both; W&B offline unless configured)")
    p.add_argument("--max-epochs", type=int, help="override every method's epoch budget")
    p.add_argument("--encoder", help="pretrained encoder (hub id or local folder) of ssl-mlp, ssl-ft and every "
                                     "other encoder-based method and extractor")
    p.add_argument("--skip-missing", action="store_true", help="leave out clips lacking features (counted)")
    p.add_argument("--cache-dir", help="feature cache (default $MMER_CACHE or ~/.cache/mmer-bench)")
    p.add_argument("--workers", type=int, help="extraction processes (default: all cores)")
    p.add_argument("--threads", type=int,
                   help="torch threads of each job, whatever --jobs and --launcher (default 1: the thread count "
                        "changes CPU kernels' summation order, so it is fixed to keep runs comparable; recorded "
                        "in results.parquet)")
    p.add_argument("--publish", help="also write DIR/CORPUS.md and DIR/CORPUS.parquet (e.g. leaderboard)")
    p.add_argument("--num-nodes", type=int, help="nodes of one job (Lightning DDP; with --launcher slurm)")
    g = p.add_argument_group("launching (see README, Running on a cluster)")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: worker processes on this machine (default); slurm: one SLURM job per job")
    g.add_argument("--jobs", type=int, default=1,
                   help="local: jobs at once, each with its own GPU where GPUs exist (1: in this process)")
    g.add_argument("--gpus-per-job", type=int, help="GPUs of each job (local default 1 where GPUs exist; slurm 0)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--time", type=int, default=60, help="slurm: time limit of each job in minutes (default 60)")
    g.add_argument("--cpus-per-job", type=int, help="slurm: CPUs of each job")
    g.add_argument("--mem", help="slurm: memory of each job, e.g. 32G")
    g.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                   help="slurm: any other sbatch option, e.g. --sbatch account=mylab (repeatable)")
    g.add_argument("--detach", action="store_true",
                   help="slurm: submit and return; `mmer status OUT` shows progress, the same command collects")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("fuse", help="late fusion of posteriors in DIR/fold<k>/{train,test}.csv")
    p.add_argument("--corpus", required=True)
    p.add_argument("--posteriors", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", help="needed when the corpus's clip ids do not carry labels")
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--recipe", choices=["inner-cv", "in-sample"], default="inner-cv",
                   help="fit on DIR/fold<k>/oof.csv, out-of-fold posteriors of the training clips (default), "
                        "or on train.csv, the models' posteriors of their own training clips (the paper's recipe)")
    p.add_argument("--stacker", default="luna2022-fusion", help="a registered stacker (mmer list)")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("posteriors", help="export a run's predictions in the layout mmer fuse reads")
    p.add_argument("results", help="a bench output directory")
    p.add_argument("--method", required=True)
    p.add_argument("--task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_posteriors)

    p = sub.add_parser("leaderboard", help="merge a bench output directory's job folders and print its leaderboard")
    p.add_argument("results")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("status", help="the jobs of a bench run folder: done, running, failed, waiting")
    p.add_argument("run_dir", help="a bench output folder (--out)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("robustness", help="score a run's trained jobs under test-time conditions (no retraining)")
    p.add_argument("run_dir", help="a bench output directory")
    p.add_argument("--conditions", help="comma-separated condition names (default: the benchmark YAML's "
                   "`robustness:` list, else every condition)")
    p.add_argument("--config", help="benchmark YAML (default: benchmarks/CORPUS.yaml when it exists)")
    p.add_argument("--data-root", help="where the corpus is now (default: the data root the run used)")
    p.add_argument("--workers", type=int, help="extraction processes (default: all cores)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--publish", help="also write DIR/CORPUS.md and DIR/CORPUS.html with the robustness table, "
                   "the plots and DIR/CORPUS-robustness.parquet")
    g = p.add_argument_group("launching: one unit per finished job, as for mmer bench")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine (default); slurm: one SLURM job per finished job, through submitit")
    g.add_argument("--jobs", type=int, default=1,
                   help="local: jobs scored in parallel, each in its own process (default 1: one after another here)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--time", type=int, default=60, help="slurm: time limit of each job in minutes (default 60)")
    g.add_argument("--cpus-per-job", type=int, help="slurm: CPUs of each job")
    g.add_argument("--mem", help="slurm: memory of each job, e.g. 16G")
    g.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                   help="slurm: any other sbatch option, repeatable (e.g. --sbatch account=mylab)")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("download", help="fetch a public corpus into the data root")
    p.add_argument("corpus")
    p.add_argument("--data-root", required=True)
    p.add_argument("--base-url", help="mirror of the corpus host (tests use a local server)")
    p.add_argument("--video", action="store_true", help="also fetch the video archives (RAVDESS: 24 x ~0.5 GB)")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
