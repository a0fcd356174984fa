"""The base recognizer every method subclasses.

A method declares the features it consumes and builds its layers; the base owns the rest:
one loss and one metric set per task head, optimiser and scheduler, logging, and
``predict_step`` returning each task's postprocessed output (class probabilities, or regressed
values clamped to the label range; see tasks.py). A complete method::

    @METHODS.register("my-mlp")
    class MyMLP(EmotionRecognizer):
        inputs = {"speech": "egemaps"}          # input name -> extractor name
        scaling = {"speech": "standard"}        # fitted on the training clips of each fold

        def build(self):
            self.body = nn.Sequential(nn.Linear(self.input_dims["speech"], 64), nn.ReLU())
            self.heads = self.task_heads(64)

        def forward(self, batch):
            return self.apply_heads(self.body(batch["inputs"]["speech"]))
"""

from __future__ import annotations

import copy
import typing
from dataclasses import asdict, dataclass, fields, make_dataclass
from dataclasses import field as dataclass_field
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from mmer_bench.methods import augment
from mmer_bench.settings import SettingsError, TrainRecipe, build, recipe_keys, split_known, unknown_message
from mmer_bench.tasks import Task


@dataclass(frozen=True)
class ModelSettings:
    """What every network reads: its optimiser, loss and batch augmentations. A method subclasses
    it (a dataclass named ``Settings`` in its class) with its own documented fields."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd | ranger (RAdam + Lookahead, needs timm)
    momentum: float = 0.9  # sgd only
    scheduler: str | None = None  # None | "cosine" (over the recipe's max_epochs) | "step"
    step_size: int = 50  # "step" scheduler: epochs per decay
    gamma: float = 0.9  # "step" scheduler: decay factor
    label_smoothing: float = 0.0
    class_weighted: bool = False  # inverse-frequency class weights in the loss
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of inputs and targets (augment.py); 0 = off
    # None | True | {time_masks, time_width, freq_masks, freq_width, inputs} (augment.py)
    specaugment: bool | dict | None = None
    # Training-time modality dropout: each modality of a clip absent with this probability
    # (methods that handle absent inputs only; see augment.modality_dropout); 0 = off.
    modality_dropout: float = 0.0


def _inferred_type(value):
    """A field type for a legacy ``defaults`` entry (None gives no type: any value)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, tuple):
        return tuple[_inferred_type(value[0]), ...] if value else tuple
    if isinstance(value, list):
        return list
    if isinstance(value, dict):
        return dict
    return Any


def _tensors_to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _tensors_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_tensors_to(v, device) for v in batch)
    return batch  # clip ids and other lists of plain values stay where they are


class EmotionRecognizer(L.LightningModule):
    inputs: ClassVar[dict[str, str]] = {}
    scaling: ClassVar[dict[str, str]] = {}
    # True: batches of whole conversations (mmer_bench/data.py), only on corpora that have them.
    reads_dialogues: ClassVar[bool] = False
    # True: the method takes batches in which some inputs are absent (a removed modality, see
    # methods/layers.present) and its docstring says what it does then. False: a condition that
    # removes one of its inputs is reported "n/a" for it, never scored on placeholder zeros.
    handles_absent_inputs: ClassVar[bool] = False
    # Input names the method can go without: on a corpus whose manifest lacks their features the
    # planner leaves them out (jobs.method_inputs) and the model is built from the inputs it gets
    # (``input_dims``). The others are required: without them the method is not compatible.
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    # Published results to show beside ours: {corpus: {"accuracy": 60.22, "source": "..."}}.
    paper: ClassVar[dict[str, dict]] = {}
    # The method's own settings (a ModelSettings dataclass) and its paper's training recipe; the
    # benchmark YAML's ``hparams: {method: {...}}`` overrides fields of either.
    Settings: ClassVar[type] = ModelSettings
    recipe: ClassVar[TrainRecipe] = TrainRecipe()
    # Shorthand for both: a dict of defaults; each key goes to the recipe when it is a recipe
    # field, else into a Settings dataclass derived from it (types taken from the values).
    defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("defaults")
        if not own or "Settings" in cls.__dict__:
            return
        recipe_part, model_part = split_known(own, recipe_keys())
        cls.recipe = build(TrainRecipe, recipe_part, f"{cls.__name__}.defaults", base=cls.recipe)
        declared = {f.name: f for f in fields(cls.Settings)}
        hints = typing.get_type_hints(cls.Settings)
        specs = []
        for name, value in model_part.items():
            kind = hints[name] if name in declared else _inferred_type(value)
            default = dataclass_field(default_factory=lambda v=value: copy.deepcopy(v)) \
                if isinstance(value, (list, dict)) else dataclass_field(default=value)
            specs.append((name, kind, default))
        cls.Settings = make_dataclass(f"{cls.__name__}Settings", specs, bases=(cls.Settings,), frozen=True)

    @classmethod
    def resolve(cls, overrides: dict | None = None, where: str | None = None) -> tuple[ModelSettings, TrainRecipe]:
        """The method's settings and recipe with ``overrides`` (a flat dict, e.g. a YAML
        ``hparams`` entry) applied; an unknown key or a value of the wrong type is an error."""
        where = where or cls.__name__
        known = [f.name for f in fields(cls.Settings)] + sorted(recipe_keys())
        for key in overrides or {}:
            if key not in known:
                raise SettingsError(unknown_message(key, known, where, "setting"))
        recipe_part, model_part = split_known(overrides or {}, recipe_keys())
        return build(cls.Settings, model_part, where), build(TrainRecipe, recipe_part, where, base=cls.recipe)

    @classmethod
    def hparam_defaults(cls) -> dict:
        """Every setting and recipe field with its default, as one flat dict."""
        return {**asdict(cls.Settings()), **asdict(cls.recipe)}

    def __init__(self, tasks: tuple[Task, ...], input_dims: dict[str, int],
                 class_counts: dict[str, list[int]] | None = None, **hparams):
        super().__init__()
        self.settings, self.recipe_used = self.resolve(hparams)
        # Flat view the layers read (self.hp["hidden"]); the scheduler reads the recipe's max_epochs.
        self.hp = {**asdict(self.settings), **asdict(self.recipe_used)}
        self.save_hyperparameters({"hp": self.hp, "input_dims": input_dims})
        self.tasks = tuple(tasks)
        self.input_dims = dict(input_dims)
        for task in self.tasks:
            # Regression tasks have no classes: their all-ones "counts" give unit weights, never used.
            counts = (class_counts or {}).get(task.name) or [1] * task.num_outputs
            counts = torch.tensor(counts, dtype=torch.float32)
            # Inverse-frequency weights, normalised to mean 1 (used when class_weighted is set).
            weights = counts.sum() / (counts.clamp(min=1) * len(counts))
            self.register_buffer(f"class_weights_{task.name}", weights, persistent=False)
        if self.hp["modality_dropout"] and not (self.handles_absent_inputs and len(self.present_groups()) > 1):
            raise ValueError(f"{type(self).__name__}: modality_dropout needs a method with inputs of two or more "
                             "modalities that handles absent inputs (handles_absent_inputs)")
        self.build()
        # A pretrained submodule (transformers' from_pretrained) arrives in eval mode, and Lightning
        # keeps each submodule's mode: without this its dropout would stay off while training.
        self.train()
        self.metrics = nn.ModuleDict(
            {f"{stage}_{t.name}": t.metric_collection() for stage in ("val", "test") for t in self.tasks}
        )

    @classmethod
    def modality_groups(cls) -> dict[str, list[str]]:
        """Modality (speech, face, text) -> the method's input names that carry it."""
        from mmer_bench.features.perturb import modality_of
        from mmer_bench.registry import EXTRACTORS

        groups: dict[str, list[str]] = {}
        for name, extractor in cls.inputs.items():
            groups.setdefault(modality_of(EXTRACTORS.get(extractor)) or name, []).append(name)
        return groups

    def present_groups(self) -> dict[str, list[str]]:
        """``modality_groups`` restricted to the inputs this model was built with (an optional
        input a corpus lacks is not among them)."""
        groups = {g: [n for n in names if n in self.input_dims] for g, names in self.modality_groups().items()}
        return {g: names for g, names in groups.items() if names}

    # --- what a method implements -------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- helpers for methods --------------------------------------------------------------
    def task_heads(self, in_features: int) -> nn.ModuleDict:
        return nn.ModuleDict({t.name: nn.Linear(in_features, t.num_outputs) for t in self.tasks})

    def apply_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    # --- training machinery ---------------------------------------------------------------
    def compute_loss(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for task in self.tasks:
            weights = getattr(self, f"class_weights_{task.name}") if self.hp["class_weighted"] else None
            total = total + task.weight * task.loss(
                logits[task.name].float(), targets[task.name], weights, self.hp["label_smoothing"]
            )
        return total

    def augment_batch(self, batch: dict) -> dict:
        """The training batch after the augmentations the hyperparameters switch on."""
        spec = self.hp["specaugment"]
        if spec:
            options = {**augment.SPEC_AUGMENT_DEFAULTS, **(spec if isinstance(spec, dict) else {})}
            batch = augment.spec_augment(batch, **options)
        if self.hp["mixup"]:
            batch = augment.mixup(batch, self.tasks, self.hp["mixup"])
        if self.hp["modality_dropout"]:
            batch = augment.modality_dropout(batch, self.present_groups(), self.hp["modality_dropout"])
        return batch

    def training_step(self, batch, batch_idx):
        batch = self.augment_batch(batch)
        loss = self.compute_loss(self(batch), batch["targets"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["clip_id"]))
        return loss

    def _eval_step(self, stage: str, batch) -> torch.Tensor:
        logits = self(batch)
        loss = self.compute_loss(logits, batch["targets"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(batch["clip_id"]), sync_dist=True)
        for task in self.tasks:
            metric = self.metrics[f"{stage}_{task.name}"]
            metric.update(task.postprocess(logits[task.name]), batch["targets"][task.name])
        return loss

    def _eval_epoch_end(self, stage: str) -> None:
        for task in self.tasks:
            metric = self.metrics[f"{stage}_{task.name}"]
            for name, value in metric.compute().items():
                self.log(f"{stage}/{task.name}/{name}", value, sync_dist=True)
            metric.reset()

    def validation_step(self, batch, batch_idx):
        return self._eval_step("val", batch)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        return self._eval_step("test", batch)

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Move the batch's tensors only. Lightning's generic version walks every element of
        every list (a batch's clip ids too) through isinstance checks: about 7 ms per step on
        these CPUs, half of an MLP's training step (benchmarks/overhead.py)."""
        return _tensors_to(batch, device)

    def predict_step(self, batch, batch_idx=0):
        logits = self(batch)
        return {"clip_id": batch["clip_id"], **{t.name: t.postprocess(logits[t.name]) for t in self.tasks}}

    def parameter_groups(self) -> list:
        """What the optimiser trains: the trainable parameters, or parameter groups with their own
        learning rates (layer-wise decay when fine-tuning an encoder, methods/finetune.py)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hp
        params = self.parameter_groups()
        if hp["optimizer"] == "adam":
            optimizer = torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        elif hp["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        elif hp["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], nesterov=True,
                                        weight_decay=hp["weight_decay"])
        elif hp["optimizer"] == "ranger":
            optimizer = ranger(params, hp["lr"], hp["weight_decay"])
        else:
            raise ValueError(f"unknown optimizer {hp['optimizer']!r}")
        if hp["scheduler"] is None:
            return optimizer
        if hp["scheduler"] == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp["max_epochs"])
        elif hp["scheduler"] == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp["step_size"], gamma=hp["gamma"])
        else:
            raise ValueError(f"unknown scheduler {hp['scheduler']!r}")
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def ranger(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """RAdam wrapped in Lookahead ("Ranger"), from timm: an optional extra, imported on use."""
    try:
        from timm.optim import create_optimizer_v2
    except ImportError as exc:
        raise ImportError(
            f"optimizer 'ranger' needs timm, which is not importable here ({exc}); install the vision "
            "extra: pip install -e '.[vision]' (see README), or choose optimizer adam / adamw / sgd"
        ) from exc
    return create_optimizer_v2(params, "lookahead_radam", lr=lr, weight_decay=weight_decay)
