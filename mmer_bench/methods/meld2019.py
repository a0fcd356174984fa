"""Baselines from the MELD paper and CAER-Net.

Poria, Hazarika, Majumder, Naik, Cambria, Mihalcea (2019), "MELD: A Multimodal Multi-Party
Dataset for Emotion Recognition in Conversations", ACL 2019, pp. 527-536. Its utterance-level
baselines (text-CNN: 55.02 weighted-F1 on the 7 emotions):

- ``meld-text-cnn``: the text CNN of Kim (2014) as the MELD paper uses it: GloVe word vectors
  -> 1-D convolutions with windows 3, 4 and 5 of ``filters`` filters each (50 in the paper; 512
  selectable) -> max-pool over time -> concatenation -> Dense(100, ReLU) -> dropout 0.5 -> the
  heads, class-weighted cross-entropy. What differs and why: the paper pads every utterance to
  a fixed length and lets the padding enter the max-pool; here positions past an utterance's
  real words are set to -inf before pooling, so padding never wins the max and a prediction
  does not depend on the other utterances of its batch. Utterances shorter than the widest
  window are zero-padded inside ``forward`` to that width (a window that covers only padding is
  still masked out). The 50-d GloVe 6B vectors (``glove`` default) stand in for the paper's 300-d
  vectors, which are not packaged here.
- ``meld-bclstm``: the MELD paper's contextual model, bcLSTM (Poria et al. 2017, "Context-
  Dependent Sentiment Analysis in User-Generated Videos", ACL; MELD results table, bcLSTM text
  row: 56.44 weighted-F1 on the 7 emotions): utterance vectors of a whole dialogue -> dropout ->
  2 stacked BiLSTM(300) over the utterances in order -> per utterance Dense(100, ReLU) ->
  dropout -> the heads, class-weighted. Batches hold whole dialogues (``reads_dialogues = True``);
  the BiLSTM reads only a dialogue's real utterances (packed), so a dialogue's predictions do not
  depend on the others in its batch. What differs and why: the paper's two-stage pipeline feeds
  utterance features of a text-CNN trained first; here the utterance vector comes from a frozen
  sentence encoder (``minilm`` by default; any per-utterance vector extractor, several
  concatenated, via the benchmark's ``inputs:``), trained end to end in one stage.
- ``meld-audio-cnn``: MELD's audio baseline feeds the 34 pyAudioAnalysis features
  (``meld-audio34``, at most 100 frames of 0.2 s) to a classifier; the paper gives no network
  detail beyond its audio-only audio-only weighted-F1.
  Here: two Conv1D layers (``channels`` 64 -> 128, kernel 3, BatchNorm over real frames, ReLU)
  -> masked max and mean pooling over the real frames -> dropout -> heads, class-weighted. It is
  a small, documented stand-in, not a reproduction; no paper figure is shown beside it.

Lee, Kim, Kim, Park, Sohn (2019), "Context-Aware Emotion Recognition Networks", ICCV 2019,
pp. 10143-10152 (CAER-Net-S, the image variant, Table 3: 73.51% accuracy on CAER-S):

- ``caer-net``: two streams per sampled frame, each five conv blocks of 32-64-128-256-256
  channels (3x3 conv, BatchNorm, ReLU; 2x2 max-pool between blocks), ``width`` scaling the
  channels (1.0 = the paper; less for CPU). The face stream (``face-crops``, ``face_size``
  square, 96 like the extractor default) is global-average-pooled; the context stream
  (``context-frames``, ``context_height`` x ``context_width`` = 96 x 128 like the extractor,
  face box blacked out) is pooled by spatial attention (conv 256-128, ReLU, conv 128-1, softmax
  over positions, attention-weighted sum). Adaptive fusion: a small network per stream maps its
  feature to a scalar, a softmax across the two streams gives the weights, and the weighted
  features are concatenated and go through a fused head (Linear-ReLU-dropout-heads). What differs
  and why: ``face-crops`` leaves out frames without a detected face while ``context-frames``
  keeps every frame, so the two streams of a clip need not have the same frames; each stream's
  per-frame features are therefore averaged over that stream's real frames before fusion (one
  fused prediction per clip), instead of fusing frame pairs. Inputs are scaled to [0, 1] by the
  extractors; no further normalisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.layers import MaskedBatchNorm, masked_mean, run_rnn
from mmer_bench.registry import METHODS


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real frames: (B, T, D), (B, T) -> (B, D); padding filled with -inf first."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


@METHODS.register("meld-text-cnn")
class MeldTextCNN(EmotionRecognizer):
    inputs = {"text": "glove"}
    scaling: dict[str, str] = {}
    paper = {"meld": {"weighted_f1": 55.02,
                      "source": "Poria et al. 2019, MELD, ACL, results table, text-CNN row (7 emotions)"}}
    defaults = {"filters": 50, "windows": (3, 4, 5), "dense": 100, "dropout": 0.5,
                "class_weighted": True, "lr": 1e-3, "batch_size": 32, "max_epochs": 100, "patience": 10}

    def build(self):
        dim = self.input_dims["text"]
        self.windows = tuple(int(w) for w in self.hp["windows"])
        self.convs = nn.ModuleList(nn.Conv1d(dim, self.hp["filters"], w) for w in self.windows)
        self.dense = nn.Sequential(nn.Linear(len(self.windows) * self.hp["filters"], self.hp["dense"]), nn.ReLU(),
                                   nn.Dropout(self.hp["dropout"]))
        self.heads = self.task_heads(self.hp["dense"])

    def forward(self, batch):
        x, mask = batch["inputs"]["text"], batch["masks"]["text"]
        widest = max(self.windows)
        if x.shape[1] < widest:  # utterances shorter than the widest window: pad with zeros
            pad = widest - x.shape[1]
            x = F.pad(x, (0, 0, 0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        x = x * mask.unsqueeze(-1).to(x.dtype)  # padded positions read zeros, whatever was there
        x = x.transpose(1, 2)  # (B, D, T)
        length = mask.sum(1, keepdim=True)
        pooled = []
        for conv, w in zip(self.convs, self.windows):
            out = torch.relu(conv(x)).transpose(1, 2)  # (B, T - w + 1, F)
            start = torch.arange(out.shape[1], device=x.device)[None, :]
            # A window is real when it starts on a real word; the first window always is (so an
            # utterance shorter than w still yields its one zero-padded window).
            real = (start < (length - w + 1).clamp(min=1))
            pooled.append(masked_max(out, real))
        return self.apply_heads(self.dense(torch.cat(pooled, dim=-1)))


@METHODS.register("meld-bclstm")
class MeldBcLSTM(EmotionRecognizer):
    inputs = {"text": "minilm"}
    scaling = {"text": "standard"}
    reads_dialogues = True
    paper = {"meld": {"weighted_f1": 56.44,
                      "source": "Poria et al. 2019, MELD, ACL, results table, bcLSTM text row (7 emotions)"}}
    defaults = {"hidden": 300, "layers": 2, "dense": 100, "dropout": 0.5, "rnn_dropout": 0.3,
                "class_weighted": True, "lr": 1e-3, "batch_size": 16, "max_epochs": 60, "patience": 10}

    def build(self):
        hp = self.hp
        width = sum(self.input_dims[name] for name in self.inputs)
        self.drop = nn.Dropout(hp["dropout"])
        self.rnn = nn.LSTM(width, hp["hidden"], num_layers=hp["layers"], batch_first=True, bidirectional=True,
                           dropout=hp["rnn_dropout"] if hp["layers"] > 1 else 0.0)
        self.dense = nn.Sequential(nn.Linear(2 * hp["hidden"], hp["dense"]), nn.ReLU(), nn.Dropout(hp["dropout"]))
        self.heads = self.task_heads(hp["dense"])

    def forward(self, batch):
        if "dialogues" not in batch:
            raise ValueError("meld-bclstm needs batches of whole dialogues (CorpusDataModule(dialogues=True))")
        utterances = torch.cat([batch["inputs"][name] for name in self.inputs], dim=-1)  # (N, D)
        index = batch["dialogues"]  # (B, U) rows of the batch, -1 past a dialogue's end
        real = index >= 0
        sequences = self.drop(utterances)[index.clamp(min=0)] * real.unsqueeze(-1).to(utterances.dtype)
        states = run_rnn(self.rnn, sequences, real)  # (B, U, 2 * hidden)
        per_row = states.new_zeros(len(utterances), states.shape[-1])
        per_row[index[real]] = states[real]  # back to the batch's utterance order
        return self.apply_heads(self.dense(per_row))


@METHODS.register("meld-audio-cnn")
class MeldAudioCNN(EmotionRecognizer):
    inputs = {"audio": "meld-audio34"}
    scaling = {"audio": "standard"}
    defaults = {"channels": (64, 128), "kernel": 3, "dropout": 0.3, "class_weighted": True,
                "lr": 1e-3, "batch_size": 32, "max_epochs": 100, "patience": 10}

    def build(self):
        dims = [self.input_dims["audio"], *[int(c) for c in self.hp["channels"]]]
        k = self.hp["kernel"]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k, padding=k // 2) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(MaskedBatchNorm(b) for b in dims[1:])
        self.drop = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(2 * dims[-1])

    def forward(self, batch):
        x, mask = batch["inputs"]["audio"], batch["masks"]["audio"]
        keep = mask.unsqueeze(-1).to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            # Zero padding before each conv: the 'same' padding of a real edge frame reads zeros,
            # as it would in a batch of one.
            x = conv((x * keep).transpose(1, 2)).transpose(1, 2)
            x = torch.relu(norm(x, mask))
        pooled = torch.cat([masked_max(x, mask), masked_mean(x, mask)], dim=-1)
        return self.apply_heads(self.drop(pooled))


def conv_tower(channels: list[int]) -> nn.Sequential:
    """CAER-Net's encoder: conv3x3-BN-ReLU blocks with 2x2 max-pool between blocks."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(channels, channels[1:])):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@METHODS.register("caer-net")
class CAERNet(EmotionRecognizer):
    inputs = {"face": "face-crops", "context": "context-frames"}
    scaling: dict[str, str] = {}
    paper = {"caer": {"accuracy": 73.51, "source": "Lee et al. 2019, CAER-Net, ICCV, Table 3 (CAER-Net-S, CAER-S)"}}
    defaults = {"width": 1.0, "face_size": 96, "context_height": 96, "context_width": 128, "attention": 128,
                "fusion_hidden": 128, "hidden": 128, "dropout": 0.5, "frame_chunk": 64,
                "lr": 1e-3, "batch_size": 8, "max_epochs": 50, "patience": 10}
    BLOCKS = (32, 64, 128, 256, 256)

    def build(self):
        hp = self.hp
        for name, (h, w) in {"face": (hp["face_size"], hp["face_size"]),
                             "context": (hp["context_height"], hp["context_width"])}.items():
            if self.input_dims[name] != 3 * h * w:
                raise ValueError(f"caer-net: {name} rows have {self.input_dims[name]} values, expected 3 x {h} x {w}; "
                                 "set face_size / context_height / context_width to the extractor's sizes")
        ch = [3, *[max(1, round(c * hp["width"])) for c in self.BLOCKS]]
        top = ch[-1]
        attn = max(1, round(hp["attention"] * hp["width"]))
        self.face = conv_tower(ch)
        self.context = conv_tower(ch)
        self.attention = nn.Sequential(nn.Conv2d(top, attn, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(attn, 1, 3, padding=1))
        fh = hp["fusion_hidden"]
        self.face_weight = nn.Sequential(nn.Linear(top, fh), nn.ReLU(), nn.Linear(fh, 1))
        self.context_weight = nn.Sequential(nn.Linear(top, fh), nn.ReLU(), nn.Linear(fh, 1))
        self.fused = nn.Sequential(nn.Linear(2 * top, hp["hidden"]), nn.ReLU(), nn.Dropout(hp["dropout"]))
        self.heads = self.task_heads(hp["hidden"])

    def _frames(self, name: str, x: torch.Tensor, mask: torch.Tensor, encode) -> torch.Tensor:
        """Encode the real frames of (B, T, 3*H*W) -> per-frame features (B, T, C), zeros at padding."""
        h, w = (self.hp["face_size"],) * 2 if name == "face" else (self.hp["context_height"], self.hp["context_width"])
        frames = x[mask].reshape(-1, 3, h, w)
        chunk = self.hp["frame_chunk"]
        feats = torch.cat([encode(part) for part in frames.split(chunk)]) if len(frames) else x.new_zeros(0, 1)
        out = feats.new_zeros(*mask.shape, feats.shape[-1])
        out[mask] = feats
        return out

    def _face(self, images: torch.Tensor) -> torch.Tensor:
        return self.face(images).mean(dim=(2, 3))

    def _context(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.context(images)  # (N, C, h, w)
        scores = self.attention(maps).flatten(1)  # (N, h*w)
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(maps.flatten(2), weights.unsqueeze(-1)).squeeze(-1)

    def forward(self, batch):
        inputs, masks = batch["inputs"], batch["masks"]
        face = masked_mean(self._frames("face", inputs["face"], masks["face"], self._face), masks["face"])
        context = masked_mean(self._frames("context", inputs["context"], masks["context"], self._context),
                              masks["context"])
        weights = torch.softmax(torch.cat([self.face_weight(face), self.context_weight(context)], dim=-1), dim=-1)
        fused = torch.cat([face * weights[:, :1], context * weights[:, 1:]], dim=-1)
        return self.apply_heads(self.fused(fused))
