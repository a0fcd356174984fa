"""Frame-level training, video-level prediction.

``FrameLevelRecognizer`` is the base of methods that predict every frame of a clip (C-EXPR-DB's
protocol): ``forward`` returns logits per frame, {task: (B, T, C)}; the loss is the task loss
over every real frame with the clip's label on each; validation metrics, early stopping and
predictions use the clip-level probabilities that ``aggregate`` (vote | mean_probs |
mean_logits, see mmer_bench/aggregate.py) makes of the frames. The frames of one clip stay in
one batch, so the runner, the data module and the results need nothing frame-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mmer_bench.aggregate import aggregate_frames, check_aggregation
from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.layers import mlp_body
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


class FrameLevelRecognizer(EmotionRecognizer):
    frame_input: ClassVar[str] = ""  # the input whose mask marks the real frames

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        aggregate: str = "mean_probs"  # frames -> clip: vote | mean_probs | mean_logits

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_aggregation(self.hp["aggregate"])

    def _frames(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self(batch)
        return logits, batch["masks"][self.frame_input]

    def frame_loss(self, logits: dict[str, torch.Tensor], mask: torch.Tensor, targets: dict) -> torch.Tensor:
        """The base loss on the real frames, each labelled with its clip's label."""
        per_frame = {name: value[mask] for name, value in logits.items()}
        # (B,) class indices, or (B, C) soft / regression targets after mixup: one copy per frame.
        labels = {name: target[:, None].expand(*mask.shape, *target.shape[1:])[mask] for name, target in targets.items()}
        return self.compute_loss(per_frame, labels)

    def clip_probs(self, logits: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: aggregate_frames(value, mask, self.hp["aggregate"]) for name, value in logits.items()}

    def training_step(self, batch, batch_idx):
        batch = self.augment_batch(batch)
        logits, mask = self._frames(batch)
        loss = self.frame_loss(logits, mask, batch["targets"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["clip_id"]))
        return loss

    def _eval_step(self, stage: str, batch) -> torch.Tensor:
        logits, mask = self._frames(batch)
        loss = self.frame_loss(logits, mask, batch["targets"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(batch["clip_id"]), sync_dist=True)
        for name, probs in self.clip_probs(logits, mask).items():
            self.metrics[f"{stage}_{name}"].update(probs, batch["targets"][name])
        return loss

    def predict_step(self, batch, batch_idx=0):
        logits, mask = self._frames(batch)
        return {"clip_id": batch["clip_id"], **self.clip_probs(logits, mask)}


@METHODS.register("au-frame-mlp")
class AUFrameMLP(FrameLevelRecognizer):
    """Face baseline for frame-labelled corpora: each frame's 35 OpenFace AUs (standardised on
    the training clips) through one hidden layer, trained per frame, clips predicted by
    aggregating their frames. No paper number."""

    inputs = {"au": "au-sequence"}
    scaling = {"au": "standard"}
    frame_input = "au"
    recipe = TrainRecipe(max_epochs=60, patience=15, batch_size=16)

    @dataclass(frozen=True)
    class Settings(FrameLevelRecognizer.Settings):
        hidden: int = 64  # units of the hidden layer
        dropout: float = 0.2  # after the hidden layer
        lr: float = 1e-3  # learning rate
        weight_decay: float = 1e-4  # Adam's L2 penalty

    def build(self):
        self.body = mlp_body(self.input_dims["au"], self.hp["hidden"], self.hp["dropout"])
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        return self.apply_heads(self.body(batch["inputs"]["au"]))  # linear heads act on every frame
