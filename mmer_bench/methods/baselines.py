"""Simple baselines that are not tied to one paper: one hidden layer over pooled inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.layers import masked_mean, mlp_body, present
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


@dataclass(frozen=True)
class MLPSettings(ModelSettings):
    """What the one-hidden-layer baselines read; each states only the defaults it changes."""

    hidden: int = 128  # units of the hidden layer
    dropout: float = 0.3  # after the hidden layer
    lr: float = 1e-3  # learning rate
    weight_decay: float = 1e-4  # Adam's L2 penalty


class PooledMLP(EmotionRecognizer):
    """Each input pooled to one vector (a frame sequence: its masked mean), concatenated in
    ``inputs`` order, through ``mlp_body`` (hidden units ``hidden``, dropout ``dropout``), one
    head per task. A subclass states its inputs, scaling and recipe."""

    input_dropout: ClassVar[float | None] = None  # dropout on the input vector, before the layer

    def build(self):
        width = sum(self.input_dims[name] for name in self.inputs)
        self.body = mlp_body(width, self.hp["hidden"], self.hp.get("dropout"), self.input_dropout)
        self.heads = self.task_heads(self.hp["hidden"])

    def pooled(self, batch) -> torch.Tensor:
        parts = [masked_mean(batch["inputs"][name], batch["masks"][name]) if name in batch["masks"]
                 else batch["inputs"][name] for name in self.inputs]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(self, batch):
        return self.apply_heads(self.body(self.pooled(batch)))


@METHODS.register("egemaps-mlp")
class EGeMAPSMLP(PooledMLP):
    """Speech baseline: the 88 eGeMAPSv02 functionals (Eyben et al. 2016), standardised on the
    training clips, through one hidden layer. No paper number: eGeMAPS was designed as a
    reference feature set, and this is the plain classifier people put on it."""

    inputs = {"speech": "egemaps"}
    scaling = {"speech": "standard"}
    input_dropout = 0.1
    # Epochs chosen on the validation part, then a refit on train + validation for that many.
    recipe = TrainRecipe(max_epochs=150, patience=30, batch_size=64, refit=True)

    Settings = MLPSettings


@METHODS.register("compare-mlp")
class ComParEMLP(EGeMAPSMLP):
    """The same classifier on the 6,373 ComParE 2016 functionals (Schuller et al. 2016, the
    Interspeech computational paralinguistics challenge set): the larger brute-force feature set
    against eGeMAPS's 88 expert-chosen ones, under one protocol."""

    inputs = {"speech": "compare"}

    @dataclass(frozen=True)
    class Settings(EGeMAPSMLP.Settings):
        hidden: int = 256  # units of the hidden layer (more inputs than eGeMAPS)
        dropout: float = 0.5  # after the hidden layer


@METHODS.register("text-mlp")
class TextMLP(PooledMLP):
    """Text baseline: the MiniLM sentence embedding of the transcript, standardised on the
    training clips, through one hidden layer, with one head per task of the corpus (on MELD:
    emotion and sentiment, trained jointly). No paper number: it is the plain classifier on a
    frozen sentence encoder that text-only results are measured against."""

    inputs = {"text": "minilm"}
    scaling = {"text": "standard"}
    input_dropout = 0.1
    recipe = TrainRecipe(max_epochs=100, patience=15, batch_size=64)

    @dataclass(frozen=True)
    class Settings(MLPSettings):
        hidden: int = 256  # units of the hidden layer


@METHODS.register("seq-mean-mlp")
class SeqMeanMLP(PooledMLP):
    """CMU-MOSEI baseline: the masked mean over words of each word-aligned modality (GloVe,
    COVAREP, FACET), standardised on the training segments, concatenated, through one hidden
    layer, with a head per task (emotion intensities and sentiment). No paper number: it is the
    order-free floor that sequence models of CMU-MOSEI are measured against.

    An absent modality (all-false mask) contributes a zero mean, which after the standardisation
    is its training mean: the hidden layer sees the other modalities plus an average of the
    missing one."""

    handles_absent_inputs = True

    inputs = {"words": "mosei-glove", "acoustic": "mosei-covarep", "visual": "mosei-facet"}
    scaling = {"words": "standard", "acoustic": "standard", "visual": "standard"}
    recipe = TrainRecipe(max_epochs=50, patience=10, batch_size=32)

    @dataclass(frozen=True)
    class Settings(MLPSettings):
        dropout: float = 0.2  # after the hidden layer


@METHODS.register("wordvec-mlp")
class WordVecMLP(PooledMLP):
    """Text baseline on word vectors shipped with a corpus (MERC2020's 200-d word2vec): the mean
    of a clip's word vectors (padding masked out), standardised per dimension on the training
    clips, through one hidden layer, one head per task. No paper number."""

    inputs = {"words": "npz-word-embed"}
    scaling = {"words": "standard"}
    recipe = TrainRecipe(max_epochs=100, patience=15, batch_size=32)

    Settings = MLPSettings


@METHODS.register("early-fusion-mlp")
class EarlyFusionMLP(PooledMLP):
    """Multimodal baseline by early (feature-level) fusion: the clip-level features of speech (88
    eGeMAPSv02 functionals, Eyben et al. 2016), of the face (the clip means of the OpenFace Action
    Unit intensities and presences) and, where the corpus has transcripts, of the text (the MiniLM
    sentence embedding), each standardised on the training clips, concatenated, through one hidden
    layer, one head per task. Text is optional (``optional_inputs``): on a corpus without
    transcripts (RAVDESS) the method fuses speech and face. No paper number: it is the plain
    fusion floor that the late fusions and the unimodal rows are measured against.

    An absent modality (a removed input at test time, or ``modality_dropout`` in training)
    contributes zeros, which after the standardisation is its training mean: the hidden layer sees
    the other modalities plus an average of the missing one. Trained without modality dropout it
    has never seen that, so the ``+moddrop`` variant of a benchmark (``modality_dropout: p``) is
    the row that learned to cope (Neverova et al. 2016, "ModDrop")."""

    handles_absent_inputs = True

    inputs = {"speech": "egemaps", "face": "au-means", "text": "minilm"}
    optional_inputs = ("text",)
    scaling = {"speech": "standard", "face": "standard", "text": "standard"}
    input_dropout = 0.1
    recipe = TrainRecipe(max_epochs=150, patience=30, batch_size=64, refit=True)

    Settings = MLPSettings

    def build(self):
        self.fused = [name for name in self.inputs if name in self.input_dims]  # the inputs this corpus gave
        width = sum(self.input_dims[name] for name in self.fused)
        self.body = mlp_body(width, self.hp["hidden"], self.hp.get("dropout"), self.input_dropout)
        self.heads = self.task_heads(self.hp["hidden"])

    def pooled(self, batch) -> torch.Tensor:
        # Zero (the training mean) for a clip whose input is absent, whatever its placeholder holds.
        parts = [batch["inputs"][name] * present(batch, name)[:, None].to(batch["inputs"][name].dtype)
                 for name in self.fused]
        return torch.cat(parts, dim=-1)
