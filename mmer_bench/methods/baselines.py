"""Simple baselines that are not tied to one paper."""

from __future__ import annotations

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.registry import METHODS


@METHODS.register("egemaps-mlp")
class EGeMAPSMLP(EmotionRecognizer):
    """Speech baseline: the 88 eGeMAPSv02 functionals (Eyben et al. 2016), standardised on the
    training clips, through one hidden layer. No paper number: eGeMAPS was designed as a
    reference feature set, and this is the plain classifier people put on it."""

    inputs = {"speech": "egemaps"}
    scaling = {"speech": "standard"}
    defaults = {"hidden": 128, "dropout": 0.3, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 150,
                "patience": 30, "batch_size": 64, "refit": True}

    def build(self):
        self.body = nn.Sequential(
            nn.Dropout(0.1),
            nn.Linear(self.input_dims["speech"], self.hp["hidden"]),
            nn.ReLU(),
            nn.Dropout(self.hp["dropout"]),
        )
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        return self.apply_heads(self.body(batch["inputs"]["speech"]))


@METHODS.register("compare-mlp")
class ComParEMLP(EGeMAPSMLP):
    """The same classifier on the 6,373 ComParE 2016 functionals (Schuller et al. 2016, the
    Interspeech computational paralinguistics challenge set): the larger brute-force feature set
    against eGeMAPS's 88 expert-chosen ones, under one protocol."""

    inputs = {"speech": "compare"}
    defaults = {**EGeMAPSMLP.defaults, "hidden": 256, "dropout": 0.5}


@METHODS.register("text-mlp")
class TextMLP(EmotionRecognizer):
    """Text baseline: the MiniLM sentence embedding of the transcript, standardised on the
    training clips, through one hidden layer, with one head per task of the corpus (on MELD:
    emotion and sentiment, trained jointly). No paper number: it is the plain classifier on a
    frozen sentence encoder that text-only results are measured against."""

    inputs = {"text": "minilm"}
    scaling = {"text": "standard"}
    defaults = {"hidden": 256, "dropout": 0.3, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 100,
                "patience": 15, "batch_size": 64}

    def build(self):
        self.body = nn.Sequential(
            nn.Dropout(0.1),
            nn.Linear(self.input_dims["text"], self.hp["hidden"]),
            nn.ReLU(),
            nn.Dropout(self.hp["dropout"]),
        )
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        return self.apply_heads(self.body(batch["inputs"]["text"]))


@METHODS.register("seq-mean-mlp")
class SeqMeanMLP(EmotionRecognizer):
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
    defaults = {"hidden": 128, "dropout": 0.2, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 50,
                "patience": 10, "batch_size": 32}

    def build(self):
        width = sum(self.input_dims[name] for name in self.inputs)
        self.body = nn.Sequential(nn.Linear(width, self.hp["hidden"]), nn.ReLU(), nn.Dropout(self.hp["dropout"]))
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        means = []
        for name in self.inputs:
            values, mask = batch["inputs"][name], batch["masks"][name].unsqueeze(-1).float()
            means.append((values * mask).sum(1) / mask.sum(1).clamp(min=1))
        return self.apply_heads(self.body(torch.cat(means, dim=-1)))


@METHODS.register("wordvec-mlp")
class WordVecMLP(EmotionRecognizer):
    """Text baseline on word vectors shipped with a corpus (MERC2020's 200-d word2vec): the mean
    of a clip's word vectors (padding masked out), standardised per dimension on the training
    clips, through one hidden layer, one head per task. No paper number."""

    inputs = {"words": "npz-word-embed"}
    scaling = {"words": "standard"}
    defaults = {"hidden": 128, "dropout": 0.3, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 100,
                "patience": 15, "batch_size": 32}

    def build(self):
        self.body = nn.Sequential(
            nn.Linear(self.input_dims["words"], self.hp["hidden"]),
            nn.ReLU(),
            nn.Dropout(self.hp["dropout"]),
        )
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        words = batch["inputs"]["words"]
        mask = batch["masks"]["words"].unsqueeze(-1).to(words.dtype)
        pooled = (words * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean over real words only
        return self.apply_heads(self.body(pooled))
