"""The training job: one method on one fold and seed, as a Lightning Trainer run.

``run_train(spec)`` reads everything from the spec (jobs.py) and writes only the spec's job
folder. Validation data (training subjects) selects the epoch; the test part is only predicted.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from mmer_bench import wandb_log
from mmer_bench.collect import write_records
from mmer_bench.data import CorpusDataModule
from mmer_bench.features.store import FeatureStore
from mmer_bench.jobs import JobSpec, flat_hparams, fold_of, method_class
from mmer_bench.protocols import Fold
from mmer_bench.settings import TrainRecipe

# Lightning announces hardware and tips at INFO for every Trainer: one line per job is enough.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
# The base recognizer moves batches itself (methods/base.py); nothing to warn about.
warnings.filterwarnings("ignore", message=r".*overridden `transfer_batch_to_device`.*")


class BestWeights(L.Callback):
    """Keep the weights of the best validation epoch in memory and restore them after fit.
    ``mode`` "max" keeps the highest value of ``monitor``, "min" the lowest (an error such as MAE)."""

    def __init__(self, monitor: str, mode: str = "max"):
        self.monitor, self.mode, self.state, self.best_epoch = monitor, mode, None, -1
        self.best = -float("inf") if mode == "max" else float("inf")

    def on_validation_end(self, trainer, module):
        value = trainer.callback_metrics.get(self.monitor)
        better = value is not None and (float(value) > self.best if self.mode == "max" else float(value) < self.best)
        if better:
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())

    def on_fit_end(self, trainer, module):
        if self.state is not None:
            module.load_state_dict(self.state)


def monitor(corpus, recipe: TrainRecipe | dict) -> tuple[str, str]:
    """The validation quantity that selects the epoch, and whether higher ("max") is better."""
    value = recipe["monitor"] if isinstance(recipe, dict) else recipe.monitor
    if value is None:
        return f"val/{corpus.tasks[0].name}/{corpus.primary_metric}", corpus.primary_mode
    if value == "loss":
        return "val/loss", "min"
    raise ValueError(f"unknown monitor {value!r}: None (the corpus's primary metric) or 'loss'")


@torch.no_grad()
def predict(model, loader) -> dict[str, dict]:
    """Per-task probabilities and clip ids, in a plain loop (no DDP sampler padding)."""
    model.eval()
    out: dict[str, dict] = {}
    device = next(model.parameters()).device
    for batch in loader:
        batch = move_to(batch, device)
        pred = model.predict_step(batch)
        for task in model.tasks:
            entry = out.setdefault(task.name, {"clip_id": [], "probs": [], "target": []})
            entry["clip_id"] += list(pred["clip_id"])
            entry["probs"].append(pred[task.name].cpu().numpy())
            entry["target"].append(batch["targets"][task.name].cpu().numpy())
    return {t: {"clip_id": e["clip_id"], "probs": np.concatenate(e["probs"]), "target": np.concatenate(e["target"])}
            for t, e in out.items()}


def predict_fold(model, dm: CorpusDataModule, fold: Fold) -> dict[str, dict]:
    """Predictions per part of the *original* fold, also when the model was refit on train + val
    (its data module then merges them), so every method of a run predicts the same clips."""
    by_clip: dict[str, dict[str, tuple]] = {}
    for part in ("train", "val", "test"):
        for task, p in predict(model, dm.part_dataloader(part)).items():
            for clip, probs, target in zip(p["clip_id"], p["probs"], p["target"]):
                by_clip.setdefault(task, {})[clip] = (probs, target)
    out: dict[str, dict] = {}
    for part, ids in fold.parts().items():
        for task, clips in by_clip.items():
            kept = [c for c in ids if c in clips]  # clips skipped for missing features are absent
            out.setdefault(part, {})[task] = {
                "clip_id": kept,
                "probs": np.stack([clips[c][0] for c in kept]),
                "target": np.array([clips[c][1] for c in kept]),
            }
    return out


CHECKPOINT = "model.pt"


def save_checkpoint(model, dm: CorpusDataModule, path: Path) -> None:
    """The model's weights with what rebuilds it (input sizes, training class counts)."""
    counts = {t.name: dm.class_counts(t.name).tolist() for t in model.tasks if t.kind == "classification"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "input_dims": dm.input_dims(), "class_counts": counts}, tmp)
    os.replace(tmp, path)


def move_to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


def loggers_for(spec: JobSpec, log_dir: Path):
    kinds = spec.config["loggers"]
    loggers = []
    if "csv" in kinds:
        loggers.append(L.pytorch.loggers.CSVLogger(log_dir, name="csv", version=""))
    if "wandb" in kinds and not spec.config.get("inner"):  # inner-fold jobs only feed a stacker
        wandb_log.settle_environment()
        wandb_log.finish_open_run()  # a refit's selection run: the refit gets its own
        kwargs = wandb_log.spec_init(spec)
        kwargs["save_dir"] = kwargs.pop("dir")
        loggers.append(L.pytorch.loggers.WandbLogger(**kwargs))
    return loggers or False


def fit(spec: JobSpec, corpus, manifest, fold: Fold, log_dir: Path, max_epochs: int, callbacks):
    cfg, recipe = spec.config, spec.config["settings"]["recipe"]
    cls = method_class(spec)  # a variant trains its base method's class
    cache_dir = cfg["cache_dir"]
    store = FeatureStore(Path(cache_dir) / "features" if cache_dir else None)
    L.seed_everything(spec.seed, workers=True, verbose=False)
    dm = CorpusDataModule(corpus, manifest, fold, cfg["inputs"], cls.scaling, store, batch_size=recipe["batch_size"],
                          skip_missing=cfg["skip_missing"], workers=cfg["workers"], extractor_params=cfg["features"],
                          dialogues=cfg["dialogues"])
    dm.setup()
    counts = {t.name: dm.class_counts(t.name).tolist() for t in corpus.tasks if t.kind == "classification"}
    model = cls(corpus.tasks, dm.input_dims(), counts, **flat_hparams(cfg["settings"]))
    loggers = loggers_for(spec, log_dir)
    trainer = cfg["trainer"]
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator=trainer["accelerator"], devices=trainer["devices"],
        num_nodes=trainer.get("num_nodes", 1),
        strategy=trainer["strategy"], precision=trainer["precision"], logger=loggers, callbacks=callbacks,
        gradient_clip_val=recipe["gradient_clip_val"], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        # Without epoch selection, validating every epoch only costs time: score it once at the end.
        check_val_every_n_epoch=1 if callbacks else max_epochs,
    )
    trainer.fit(model, datamodule=dm)
    # The W&B run stays open: write_records adds the test metrics and confusion matrix, then closes it.
    return model, dm, trainer


def run_train(spec: JobSpec) -> None:
    corpus, manifest, fold = fold_of(spec.config, spec.fold)
    recipe = spec.config["settings"]["recipe"]
    job_dir = Path(spec.out)
    started = time.time()
    merged = Fold(fold.name, fold.train + fold.val, fold.val, fold.test, fold.info)
    if recipe["patience"] is None:
        # A fixed epoch budget, as papers without a validation set train: on train + val
        # when refit is set (every training subject), else on train alone.
        model, dm, trainer = fit(spec, corpus, manifest, merged if recipe["refit"] else fold, job_dir,
                                 recipe["max_epochs"], [])
        info = {"epochs_run": trainer.current_epoch, "selection": "fixed epoch budget"}
    else:
        quantity, mode = monitor(corpus, recipe)
        best = BestWeights(quantity, mode)
        callbacks = [best, L.pytorch.callbacks.EarlyStopping(quantity, mode=mode, patience=recipe["patience"])]
        model, dm, trainer = fit(spec, corpus, manifest, fold, job_dir, recipe["max_epochs"], callbacks)
        info = {"best_epoch": best.best_epoch, "epochs_run": trainer.current_epoch, "best_val": best.best,
                "selection": f"best {quantity}"}
        if recipe["refit"]:
            # Validation chose the epoch count; now train on every training subject for it.
            model, dm, trainer = fit(spec, corpus, manifest, merged, job_dir / "refit", best.best_epoch + 1, [])
            info["refit_epochs"] = best.best_epoch + 1
    info["train_time_s"] = time.time() - started
    if trainer.global_rank != 0:
        return
    predictions = predict_fold(model, dm, fold)
    n_params = sum(p.numel() for p in model.parameters())
    # The selected (or refit) weights: `mmer robustness` scores them under test-time conditions.
    save_checkpoint(model, dm, job_dir / CHECKPOINT)
    info["trained_on"] = "train+val" if recipe["refit"] else "train"
    features = {name: {"extractor": e, **spec.config["features"].get(e, {})} for name, e in dm.inputs.items()}
    write_records(spec, corpus, fold, predictions, n_params, started, info, features, dm.skipped)
