"""The stacking job: a registered stacker (fusion.Stacker) fit on the training clips' posteriors
of other jobs of the run, predicting every part. ``mmer fuse`` (posterior folders) and the
runner's stacking jobs (job folders) both go through ``stack_fold``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.collect import write_records
from mmer_bench.fusion import align
from mmer_bench.jobs import JobSpec, fold_of
from mmer_bench.registry import STACKERS

log = logging.getLogger(__name__)


def stack_fold(stacker, parts: dict[str, dict[str, pd.DataFrame]], classes, labels_of, where: str,
               seed: int = 0, oof: dict[str, pd.DataFrame] | None = None,
               ) -> tuple[dict[str, tuple[list, np.ndarray]], dict[str, float]]:
    """``parts``: {part: {source: frame with clip_id + class columns}}, with a "train" part.
    Returns {part: (clip ids, fused probabilities)} and the sources that are 99% or more accurate
    on their own training clips (stacking on in-sample posteriors over-weights them).
    ``oof`` ({source: frame}): out-of-fold posteriors of the training clips (train and val parts;
    the inner-cv recipe): the stacker is fit on them, and they are the train / val parts' inputs."""
    aligned = {part: align(frames, classes, f"{where} {part}") for part, frames in parts.items()}
    train_labels = labels_of(list(aligned["train"].index))
    overfit = {}
    for source in parts["train"]:
        columns = aligned["train"][[f"{source}:{c}" for c in classes]].to_numpy()
        train_accuracy = float((columns.argmax(1) == train_labels).mean())
        if train_accuracy >= 0.99:
            overfit[source] = train_accuracy
        if train_accuracy >= 0.99 and oof is None:
            log.warning("%s: %s is %.1f%% accurate on its own training clips; stacking on in-sample "
                        "posteriors over-weights it (the inner-cv recipe fits on out-of-fold posteriors)",
                        where, source, 100 * train_accuracy)
    fit_on, fit_labels = aligned["train"], train_labels
    if oof is not None:
        fit_on = align(oof, classes, f"{where} out-of-fold")
        for part in ("train", "val"):
            if part in aligned:
                missing = aligned[part].index.difference(fit_on.index)
                if len(missing):
                    raise ValueError(f"{where}: {len(missing)} {part} clips have no out-of-fold posteriors, "
                                     f"e.g. {list(missing[:3])}")
                aligned[part] = fit_on.loc[aligned[part].index]
        fit_labels = labels_of(list(fit_on.index))
    probs = stacker.fit_predict(fit_on, fit_labels, aligned, seed=seed)
    return {part: (list(aligned[part].index), probs[part]) for part in aligned}, overfit


def run_stack(spec: JobSpec) -> None:
    corpus, manifest, fold = fold_of(spec.config, spec.fold)
    cls = STACKERS.get(spec.method)
    stacker = cls(cls.Settings(**spec.config["settings"]["stacker"]))
    sources = spec.config["sources"]
    started = time.time()
    task = corpus.tasks[0]
    run_jobs = Path(spec.out).parent.parent
    parts: dict[str, dict[str, pd.DataFrame]] = {"train": {}, "val": {}, "test": {}}
    for source, job_id in zip(sources, spec.depends_on):
        path = run_jobs / job_id / "predictions.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{spec.method} needs the predictions of {source} {fold.name} seed {spec.seed}: {path}")
        table = pd.read_parquet(path)
        for part, frames in parts.items():
            rows = table[(table["split"] == part) & (table["task"] == task.name)]
            probs = np.stack(rows["probs"].to_numpy())
            frames[source] = pd.DataFrame(probs, columns=list(task.classes)).assign(clip_id=rows["clip_id"].to_numpy())
    oof = None
    recipe = spec.config["settings"]["stacker"].get("recipe", "in-sample")
    if recipe == "inner-cv":
        # Each training clip's posterior from the inner-fold model that held its subject out.
        oof = {}
        for source, job_ids in spec.config["oof_jobs"][f"{fold.name}-seed{spec.seed}"].items():
            tables = []
            for job_id in job_ids:
                path = run_jobs / job_id / "predictions.parquet"
                if not path.exists():
                    raise FileNotFoundError(f"{spec.method} needs the inner-fold predictions of {job_id}: {path}")
                table = pd.read_parquet(path)
                tables.append(table[(table["split"] == "test") & (table["task"] == task.name)])
            rows = pd.concat(tables, ignore_index=True)
            oof[source] = pd.DataFrame(np.stack(rows["probs"].to_numpy()), columns=list(task.classes)).assign(
                clip_id=rows["clip_id"].to_numpy())
    labels = manifest.set_index("clip_id")[task.name]
    fused, overfit = stack_fold(stacker, parts, task.classes, lambda ids: labels.loc[ids].to_numpy(),
                                f"{spec.method} {fold.name}", seed=spec.seed, oof=oof)
    predictions = {part: {task.name: {"clip_id": ids, "probs": probs, "target": labels.loc[ids].to_numpy()}}
                   for part, (ids, probs) in fused.items()}
    n_params = (len(sources) * task.num_classes + 1) * task.num_classes
    info = {"fused": sources, "recipe": recipe, "fit_clips": len(fused["train"][0]) + len(fused["val"][0]) if oof
            else len(fused["train"][0]), "train_time_s": time.time() - started, "sources_fitting_train": overfit}
    write_records(spec, corpus, fold, predictions, n_params, started, info)
