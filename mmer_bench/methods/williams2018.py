"""Williams, Kleinegesse, Comanescu, Radu (2018), "Recognizing Emotions in Video Using
Multimodal DNN Feature Fusion", Proc. Grand Challenge and Workshop on Human Multimodal Language
(ACL 2018), pp. 11-19. Early (input-level) fusion of word-aligned text, audio and video features
on CMU-MOSEI: BatchNorm -> 1-3 stacked BiLSTMs of 64 units with dropout -> Dense(100, ReLU) ->
dropout -> output layer, inputs cut or zero-padded to 20 steps (words), Adam, early stopping on
the validation loss (patience 10). The paper reports CMU-MOSEI multi-label emotion presence and
intensity (e.g. 90% overall binary accuracy); there is no RAVDESS number to compare with.

``williams2018-bilstm-mosei``: the paper's setting: GloVe word vectors | COVAREP | FACET
averaged per word (``mosei-glove``, ``mosei-covarep``, ``mosei-facet``, word-aligned by the
corpus), concatenated per word, the first 20 words (``block_frames`` 1), MAE loss on the six
emotion intensities (the corpus's ``emotions`` task, whose loss is L1) and, because CMU-MOSEI
also labels it, on sentiment through a second head (summed, as every task of a corpus is);
evaluated with the corpus's MOSEI metrics (per-emotion MAE, weighted accuracy and F1 of
presence). The paper's 300-d GloVe 840B vectors are what the SDK's word vectors hold.

``williams2018-bilstm``: the same network as a single-label classifier (cross-entropy) on the
corpus's task. What differs and why:

- Input. Every input of the method is reduced to ``max_steps`` steps and the steps are
  concatenated (early fusion). On RAVDESS the only frame-level features are speech, so the input
  is the 25 eGeMAPSv02 LLDs at 10 ms (``egemaps-lld``); with ``block_frames`` None (default)
  each clip is cut into ``max_steps`` equal blocks of frames and each block averaged, so the
  whole clip fits the fixed step count (20 steps of ~175 ms for a 3.5 s RAVDESS clip) instead of
  keeping only its first 20 frames; a clip shorter than ``max_steps`` frames keeps its frames and
  is padded. ``block_frames`` k averages blocks of k frames, then cuts to ``max_steps`` (k = 1:
  the paper's word steps, once word-aligned MOSEI features exist).
- Padding. The paper zero-pads to 20 steps and runs the BiLSTM over the padding; here the
  recurrence is packed to each clip's real steps, the BatchNorm takes its statistics from real
  steps only, and the last states of the two directions feed the dense layer, so padding never
  changes a prediction.
- Selection. ``monitor: loss`` makes the runner select the epoch and stop on the validation loss
  as the paper did (the suite's default is the corpus's primary metric).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.layers import MaskedBatchNorm, present, run_rnn
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


def pool_steps(x: torch.Tensor, mask: torch.Tensor, steps: int, block: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the real frames of (B, T, D) into at most ``steps`` steps -> (B, steps, D), mask.

    block None: frame t of a clip of L >= steps frames goes to step floor(t * steps / L) (equal
    blocks covering the whole clip); shorter clips keep one frame per step. block k: frame t goes
    to step t // k and steps past ``steps`` are dropped.
    """
    B, T, D = x.shape
    t = torch.arange(T, device=x.device)[None, :].expand(B, T)
    length = mask.sum(1, keepdim=True)
    if block is None:
        step = torch.where(length >= steps, torch.div(t * steps, length.clamp(min=1), rounding_mode="floor"), t)
    else:
        step = torch.div(t, block, rounding_mode="floor")
    keep = mask & (step < steps)
    step = torch.where(keep, step, torch.zeros_like(step))
    weight = keep.to(x.dtype)
    sums = x.new_zeros(B, steps, D).scatter_add_(1, step[:, :, None].expand(B, T, D), x * weight[:, :, None])
    counts = x.new_zeros(B, steps).scatter_add_(1, step, weight)
    return sums / counts.clamp(min=1)[:, :, None], counts > 0


@METHODS.register("williams2018-bilstm")
class Williams2018BiLSTM(EmotionRecognizer):
    inputs = {"speech": "egemaps-lld"}
    scaling: dict[str, str] = {}  # the network's input BatchNorm normalises
    recipe = TrainRecipe(monitor="loss", patience=10, max_epochs=200, batch_size=32)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        max_steps: int = 20  # time steps the frames are averaged into
        block_frames: int | None = None  # None: equal blocks over the clip; k: k frames a step
        layers: int = 1  # BiLSTM layers (1 to 3)
        hidden: int = 64  # units per direction
        dense: int = 100  # units of the layer before the heads
        dropout: float = 0.2

    def build(self):
        if not 1 <= self.hp["layers"] <= 3:
            raise ValueError("williams2018-bilstm stacks 1 to 3 BiLSTM layers")
        dims = sum(self.input_dims[name] for name in self.inputs)
        hidden = self.hp["hidden"]
        self.norm = MaskedBatchNorm(dims)
        self.rnn = nn.LSTM(dims, hidden, num_layers=self.hp["layers"], batch_first=True, bidirectional=True,
                           dropout=self.hp["dropout"] if self.hp["layers"] > 1 else 0.0)
        self.dense = nn.Sequential(nn.Dropout(self.hp["dropout"]), nn.Linear(2 * hidden, self.hp["dense"]),
                                   nn.ReLU(), nn.Dropout(self.hp["dropout"]))
        self.heads = self.task_heads(self.hp["dense"])

    def forward(self, batch):
        pooled = [pool_steps(batch["inputs"][name], batch["masks"][name], self.hp["max_steps"], self.hp["block_frames"])
                  for name in self.inputs]
        x = torch.cat([p[0] for p in pooled], dim=-1)
        mask = torch.stack([p[1] for p in pooled]).any(dim=0)
        normed = self.norm(x, mask)
        kept = [present(batch, name) for name in self.inputs]
        if not all(bool(k.all()) for k in kept):
            # An absent modality's columns become 0 after the BatchNorm: its training mean.
            keep = torch.cat([k[:, None].expand(-1, p[0].shape[-1]) for k, p in zip(kept, pooled)], dim=-1)
            normed = normed * keep[:, None, :].to(normed.dtype)
        states = run_rnn(self.rnn, normed, mask)
        hidden = self.hp["hidden"]
        last = mask.sum(1) - 1  # the forward direction ends at the last real step, the backward at step 0
        forward_end = states[torch.arange(len(last), device=x.device), last, :hidden]
        summary = torch.cat([forward_end, states[:, 0, hidden:]], dim=-1)
        return self.apply_heads(self.dense(summary))


@METHODS.register("williams2018-bilstm-mosei")
class Williams2018BiLSTMMosei(Williams2018BiLSTM):
    """An absent modality (a robustness condition that removes it, or ``modality_dropout``)
    enters every step as its training mean (zero after the input BatchNorm); the recurrence runs
    over the steps of the modalities present. In training, the BatchNorm's batch statistics
    still include the raw zeros of dropped modalities."""

    handles_absent_inputs = True
    inputs = {"text": "mosei-glove", "audio": "mosei-covarep", "visual": "mosei-facet"}

    @dataclass(frozen=True)
    class Settings(Williams2018BiLSTM.Settings):
        block_frames: int | None = 1  # one word-aligned step per word
