"""Framework overhead: a training epoch through the suite's Lightning path vs a bare PyTorch loop.

    MMER_CACHE=... python benchmarks/overhead.py --data-root ../shared/data [--methods egemaps-mlp,williams2018-bilstm]

Both paths train the same model (same seed, same initial weights) on the same batches (the
suite's data module for RAVDESS fold0, features already cached): the Lightning path is a Trainer
built with the suite's training flags (as train.py builds it: no progress bar, no checkpoints,
``log_every_n_steps=1``, the CSV logger, and W&B offline as a second row since the suite logs to
both by default), timed per training epoch by a callback; the bare loop is ``training_step`` +
``backward`` + optimizer step + gradient clipping, nothing else. Validation is off in both.
Prints the median epoch time of each after a warm-up epoch, and their ratio (target <= 1.15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def settings_of(method: str) -> dict:
    """The method's resolved hyperparameters (typed settings when they exist, else the defaults)."""
    try:
        from mmer_bench.jobs import flat_hparams, resolve_settings

        return flat_hparams(resolve_settings(method, None))
    except ImportError:
        from mmer_bench.registry import METHODS

        return METHODS.get(method).hparam_defaults()


def data_module(corpus, manifest, fold, method: str, hp: dict):
    try:
        from mmer_bench.data import CorpusDataModule
    except ImportError:
        from mmer_bench.corpora.base import CorpusDataModule
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.registry import METHODS

    cls = METHODS.get(method)
    dm = CorpusDataModule(corpus, manifest, fold, dict(cls.inputs), cls.scaling, FeatureStore(),
                          batch_size=hp["batch_size"])
    dm.setup()
    return dm


def build_model(method, corpus, dm, hp, seed):
    import lightning as L

    from mmer_bench.registry import METHODS

    L.seed_everything(seed, verbose=False)
    counts = {t.name: dm.class_counts(t.name).tolist() for t in corpus.tasks if t.kind == "classification"}
    return METHODS.get(method)(corpus.tasks, dm.input_dims(), counts, **hp)


def lightning_epochs(method, corpus, dm, hp, epochs: int, loggers: list[str], seed: int) -> list[float]:
    import lightning as L

    times: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            times.append(time.perf_counter() - self.started)

    model = build_model(method, corpus, dm, hp, seed)
    with tempfile.TemporaryDirectory() as logs:
        chosen = []
        if "csv" in loggers:
            chosen.append(L.pytorch.loggers.CSVLogger(logs, name="csv", version=""))
        if "wandb" in loggers:
            chosen.append(L.pytorch.loggers.WandbLogger(project="mmer-overhead", save_dir=logs))
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, precision="32-true", logger=chosen,
                            callbacks=[EpochTimer()], gradient_clip_val=hp["gradient_clip_val"],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, log_every_n_steps=1, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
        if "wandb" in loggers:
            import wandb

            wandb.finish()
    return times


def bare_epochs(method, corpus, dm, hp, epochs: int, seed: int) -> list[float]:
    import torch

    model = build_model(method, corpus, dm, hp, seed)
    model.train()
    optimizers = model.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for i, batch in enumerate(dm.train_dataloader()):
            loss = model.training_step(batch, i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp["gradient_clip_val"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp["gradient_clip_val"])
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--methods", default="egemaps-mlp,williams2018-bilstm")
    parser.add_argument("--epochs", type=int, default=6, help="per path; the first is a warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()

    import logging
    import warnings

    import torch

    from mmer_bench.registry import CORPORA

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    corpus = CORPORA.get("ravdess")(args.data_root, channel="speech")
    manifest = corpus.manifest()
    fold = corpus.plan(manifest)[0]
    print(f"RAVDESS {fold.name}: {len(fold.train)} training clips; {args.epochs} epochs per path "
          f"(median after a warm-up), {args.threads} torch thread(s)")
    for method in args.methods.split(","):
        hp = settings_of(method)
        dm = data_module(corpus, manifest, fold, method, hp)
        steps = len(dm.train_dataloader())
        # Alternate the paths so that a change in the machine's load hits both alike.
        bare = bare_epochs(method, corpus, dm, hp, args.epochs, 0)[1:]
        csv = lightning_epochs(method, corpus, dm, hp, args.epochs, ["csv"], 0)[1:]
        both = lightning_epochs(method, corpus, dm, hp, args.epochs, ["csv", "wandb"], 0)[1:]
        bare2 = bare_epochs(method, corpus, dm, hp, args.epochs, 0)[1:]
        b = statistics.median(bare + bare2)
        for label, times in (("Lightning + CSV logger", csv), ("Lightning + CSV + W&B (offline)", both)):
            m = statistics.median(times)
            print(f"{method:22s} {steps:3d} steps/epoch  bare loop {1000 * b:7.1f} ms/epoch  {label}: "
                  f"{1000 * m:7.1f} ms/epoch  ratio {m / b:.2f}x  ({1000 * (m - b) / steps:.2f} ms/step more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
