"""Baselines from the MELD paper, a three-branch MELD fusion baseline, and CAER-Net.

Poria, Hazarika, Majumder, Naik, Cambria, Mihalcea (2019), "MELD: A Multimodal Multi-Party
Dataset for Emotion Recognition in Conversations", ACL 2019, pp. 527-536, results table:

- ``meld-text-cnn``: Kim's (2014) text CNN over GloVe (text-CNN row: 55.02 weighted-F1, 7 emotions).
- ``meld-bclstm``: bcLSTM (Poria et al. 2017, ACL) over a whole dialogue's utterance vectors
  (bcLSTM text row: 56.44 weighted-F1); batches hold whole dialogues (``reads_dialogues``).
- ``meld-audio-cnn``: a small Conv1D stand-in on the three-branch baseline's 34 pyAudioAnalysis
  audio features (no paper figure).
- ``meld-baseline-fusion``: the three-branch video ConvLSTM + audio Conv1D + text CNN baseline of
  github.com/ankurbhatia24/MULTIMODAL-EMOTION-RECOGNITION (``model/multimodal_baseline.ipynb``);
  no paper figure.

Lee, Kim, Kim, Park, Sohn (2019), "Context-Aware Emotion Recognition Networks", ICCV 2019,
pp. 10143-10152, Table 3 (CAER-Net-S on CAER-S: 73.51% accuracy):

- ``caer-net``: face and context conv streams, attention-pooled context, adaptive fusion.

Every branch reads only real frames / words, so a prediction never depends on its batch. The
architectures in detail and each deviation from the originals, with its reason, are in the
README (Method notes: methods/meld2019.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.layers import AudioCNN, TextCNN, conv_tower, masked_mean, run_rnn, sample_frames
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


@METHODS.register("meld-text-cnn")
class MeldTextCNN(EmotionRecognizer):
    inputs = {"text": "glove"}
    scaling: dict[str, str] = {}
    paper = {"meld": {"weighted_f1": 55.02,
                      "source": "Poria et al. 2019, MELD, ACL, results table, text-CNN row (7 emotions)"}}
    recipe = TrainRecipe(batch_size=32, max_epochs=100, patience=10)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        filters: int = 50  # convolution filters per window size
        windows: tuple[int, ...] = (3, 4, 5)  # window sizes in words (Kim 2014)
        dense: int = 100  # units of the Dense layer after max-pooling
        dropout: float = 0.5  # after the Dense layer
        # No class weights: the setting MELD dev preferred (weighted-F1 51.61 vs 50.76 with them),
        # the same rule that set meld-bclstm's (README, Method notes).
        class_weighted: bool = False
        lr: float = 1e-3  # learning rate

    def build(self):
        self.text = TextCNN(self.input_dims["text"], self.hp["filters"], self.hp["windows"])
        self.dense = nn.Sequential(nn.Linear(self.text.out_features, self.hp["dense"]), nn.ReLU(),
                                   nn.Dropout(self.hp["dropout"]))
        self.heads = self.task_heads(self.hp["dense"])

    def forward(self, batch):
        return self.apply_heads(self.dense(self.text(batch["inputs"]["text"], batch["masks"]["text"])))


@METHODS.register("meld-bclstm")
class MeldBcLSTM(EmotionRecognizer):
    inputs = {"text": "minilm"}
    scaling = {"text": "standard"}
    reads_dialogues = True
    paper = {"meld": {"weighted_f1": 56.44,
                      "source": "Poria et al. 2019, MELD, ACL, results table, bcLSTM text row (7 emotions)"}}
    recipe = TrainRecipe(batch_size=16, max_epochs=60, patience=10)  # batches of 16 dialogues

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        hidden: int = 300  # LSTM units per direction, over a dialogue's utterances
        layers: int = 2  # LSTM layers
        dense: int = 100  # units of the Dense layer on each utterance's state
        dropout: float = 0.5  # on the utterance vectors and after the Dense layer
        rnn_dropout: float = 0.3  # between LSTM layers
        # "vector": one given vector per utterance; "cnn": word vectors through a text CNN
        utterance_encoder: str = "vector"
        filters: int = 50  # "cnn": convolution filters per window size
        windows: tuple[int, ...] = (3, 4, 5)  # "cnn": window sizes in words
        utterance_dim: int = 100  # "cnn": units of the projection of each input's CNN vector
        # Plain cross-entropy, as the released MELD baseline (README, Method notes).
        class_weighted: bool = False
        lr: float = 1e-3  # learning rate

    def build(self):
        hp = self.hp
        if hp["utterance_encoder"] == "cnn":  # word vectors per utterance -> text CNN -> Dense
            self.encoders = nn.ModuleDict({
                name: TextCNN(self.input_dims[name], hp["filters"], hp["windows"]) for name in self.inputs})
            self.projections = nn.ModuleDict({
                name: nn.Sequential(nn.Linear(enc.out_features, hp["utterance_dim"]), nn.ReLU())
                for name, enc in self.encoders.items()})
            width = hp["utterance_dim"] * len(self.inputs)
        elif hp["utterance_encoder"] == "vector":  # one vector per utterance, used as it is
            width = sum(self.input_dims[name] for name in self.inputs)
        else:
            raise ValueError(f"meld-bclstm: utterance_encoder {hp['utterance_encoder']!r} is not 'vector' or 'cnn'")
        self.drop = nn.Dropout(hp["dropout"])
        self.rnn = nn.LSTM(width, hp["hidden"], num_layers=hp["layers"], batch_first=True, bidirectional=True,
                           dropout=hp["rnn_dropout"] if hp["layers"] > 1 else 0.0)
        self.dense = nn.Sequential(nn.Linear(2 * hp["hidden"], hp["dense"]), nn.ReLU(), nn.Dropout(hp["dropout"]))
        self.heads = self.task_heads(hp["dense"])

    def forward(self, batch):
        if "dialogues" not in batch:
            raise ValueError("meld-bclstm needs batches of whole dialogues (CorpusDataModule(dialogues=True))")
        if self.hp["utterance_encoder"] == "cnn":
            parts = [self.projections[name](self.encoders[name](batch["inputs"][name], batch["masks"][name]))
                     for name in self.inputs]
        else:
            parts = [batch["inputs"][name] for name in self.inputs]
        utterances = torch.cat(parts, dim=-1)  # (N, D): one row per utterance of the batch
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
    recipe = TrainRecipe(batch_size=32, max_epochs=100, patience=10)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        channels: tuple[int, ...] = (64, 128)  # Conv1D channels per layer
        kernel: int = 3  # Conv1D kernel size (frames)
        dropout: float = 0.3  # before the heads
        class_weighted: bool = True  # inverse-frequency class weights in the loss
        lr: float = 1e-3  # learning rate

    def build(self):
        self.audio = AudioCNN(self.input_dims["audio"], self.hp["channels"], self.hp["kernel"])
        self.drop = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(self.audio.out_features)

    def forward(self, batch):
        return self.apply_heads(self.drop(self.audio(batch["inputs"]["audio"], batch["masks"]["audio"])))


@METHODS.register("caer-net")
class CAERNet(EmotionRecognizer):
    inputs = {"face": "face-crops", "context": "context-frames"}
    scaling: dict[str, str] = {}
    paper = {"caer": {"accuracy": 73.51, "source": "Lee et al. 2019, CAER-Net, ICCV, Table 3 (CAER-Net-S, CAER-S)"}}
    recipe = TrainRecipe(batch_size=8, max_epochs=50, patience=10)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        width: float = 1.0  # multiplier of every conv stream's channels (and of ``attention``)
        face_size: int = 96  # face crops are face_size x face_size (the extractor's size)
        context_height: int = 96  # context frames are context_height x context_width
        context_width: int = 128  # (the extractor's sizes)
        attention: int = 128  # channels of the context attention's hidden conv
        fusion_hidden: int = 128  # units of each stream's fusion-weight network
        hidden: int = 128  # units of the layer after fusion
        dropout: float = 0.5  # after that layer
        frame_chunk: int = 64  # frames per conv pass (bounds memory, not the result)
        lr: float = 1e-3  # learning rate
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


class ConvLSTMCell(nn.Module):
    """One step of a convolutional LSTM (Shi et al. 2015, without peephole terms, as in Keras's
    ``ConvLSTM2D``): the four gates are one 'same'-padded convolution over the input frame and
    the hidden state stacked on channels, so the state keeps the frame's (H, W)::

        i, f, g, o = conv([x_t, h_{t-1}])
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    The forget gate's bias starts at 1 (Keras's ``unit_forget_bias``)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.gates.bias[hidden : 2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h.to(x.dtype)], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTMVideo(nn.Module):
    """Video branch: a ConvLSTM over each clip's real frames, then a conv stack on its state.

    Frames (B, T, 3*H*W) in [0, 1] -> optional ``downsample`` x ``downsample`` average pooling ->
    ConvLSTM (``hidden`` channels). The state advances only on real frames (padded steps keep the
    previous state), and ``state`` picks what goes on: ``"last"`` the state after each clip's last
    real frame (Keras's ``return_sequences=False``) or ``"mean"`` the mean of the hidden states
    over the real frames. That map -> BatchNorm -> [2x2 max-pool, conv3x3-BN-ReLU] per entry of
    ``channels`` -> global average pool -> (B, channels[-1]). A clip without a real frame reads
    the zero initial state."""

    def __init__(self, height: int, width: int, hidden: int, channels, kernel: int = 3, downsample: int = 1,
                 state: str = "last"):
        super().__init__()
        if state not in ("last", "mean"):
            raise ValueError(f"video_state must be 'last' or 'mean', not {state!r}")
        self.shape, self.downsample, self.state = (3, height, width), int(downsample), state
        channels = [int(c) for c in channels]
        smallest = min(height, width) // self.downsample
        if smallest < 2 ** len(channels):
            raise ValueError(f"frames of {height} x {width} downsampled by {self.downsample} are too small for "
                             f"{len(channels)} 2x2 max-pools: use fewer video_channels or a smaller downsample")
        self.cell = ConvLSTMCell(3, hidden, kernel)
        self.stack = nn.Sequential(nn.BatchNorm2d(hidden), nn.MaxPool2d(2), conv_tower([hidden, *channels]))
        self.out_features = channels[-1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, steps = mask.shape
        x = torch.where(mask.unsqueeze(-1), x, 0.0)  # garbage in padded frames never enters a conv
        frames = x.reshape(batch * steps, *self.shape)
        if self.downsample > 1:
            frames = F.avg_pool2d(frames, self.downsample)
        frames = frames.reshape(batch, steps, *frames.shape[1:])
        size = frames.shape[-2:]
        h = frames.new_zeros(batch, self.cell.hidden, *size, dtype=torch.float32)
        c = torch.zeros_like(h)
        total = torch.zeros_like(h)
        real_steps = mask.any(0).nonzero()
        for t in range(int(real_steps.max()) + 1 if len(real_steps) else 0):
            real = mask[:, t].view(batch, 1, 1, 1)
            h_t, c_t = self.cell(frames[:, t], (h, c))
            h, c = torch.where(real, h_t, h), torch.where(real, c_t, c)
            if self.state == "mean":
                total = total + torch.where(real, h_t, 0.0)
        if self.state == "mean":
            h = total / mask.sum(1).clamp(min=1).view(batch, 1, 1, 1).to(total.dtype)
        return self.stack(h).mean(dim=(2, 3))


def frame_shape(dim: int, size) -> tuple[int, int]:
    """(H, W) of 3 x H x W frame rows: ``size`` None infers square frames, an int is square,
    a pair is (H, W)."""
    if size is None:
        side = math.isqrt(dim // 3)
        height = width = side
    elif isinstance(size, int):
        height = width = size
    else:
        height, width = (int(s) for s in size)
    if 3 * height * width != dim:
        raise ValueError(f"meld-baseline-fusion: video rows have {dim} values, not 3 x {height} x {width}; "
                         "set frame_size to the extractor's (height, width)")
    return height, width


@METHODS.register("meld-baseline-fusion")
class MeldBaselineFusion(EmotionRecognizer):
    """Three branches (video ConvLSTM, audio Conv1D, text CNN) concatenated, Dense-ReLU-dropout,
    one head per MELD task (emotion, sentiment), trained jointly; see the module docstring.

    It has no path for an absent branch (its video ConvLSTM needs frames): a condition that
    removes the video, audio or text is reported "n/a" for it."""

    inputs = {"video": "face-crops", "audio": "meld-audio34", "text": "glove"}
    scaling = {"audio": "standard"}
    recipe = TrainRecipe(batch_size=16, max_epochs=50, patience=10)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        width: float = 1.0  # multiplier of the video branch's channels
        # Video frame (height, width), one int for square frames, None: square, inferred from the rows
        frame_size: Any = None
        downsample: int = 1  # average-pool video frames by this factor first
        max_frames: int | None = 10  # video frames per clip, evenly spread over it (None: every frame)
        convlstm: int = 32  # ConvLSTM channels
        convlstm_kernel: int = 3  # ConvLSTM kernel size
        video_channels: tuple[int, ...] = (64, 128, 64, 32)  # conv stack after the ConvLSTM
        video_state: str = "last"  # ConvLSTM state that goes on: "last" real frame's or "mean" over frames
        audio_channels: tuple[int, ...] = (64, 128)  # audio Conv1D channels per layer
        audio_kernel: int = 3  # audio Conv1D kernel size (frames)
        filters: int = 50  # text CNN filters per window size
        windows: tuple[int, ...] = (3, 4, 5)  # text CNN window sizes in words
        dense: int = 128  # units of the Dense layer after concatenating the branches
        dropout: float = 0.5  # after that layer
        class_weighted: bool = True  # inverse-frequency class weights in the loss
        lr: float = 1e-3  # learning rate

    def build(self):
        hp = self.hp

        def scaled(c):
            return max(1, round(int(c) * hp["width"]))

        height, width = frame_shape(self.input_dims["video"], hp["frame_size"])
        self.video = ConvLSTMVideo(height, width, scaled(hp["convlstm"]), [scaled(c) for c in hp["video_channels"]],
                                   hp["convlstm_kernel"], hp["downsample"], hp["video_state"])
        self.audio = AudioCNN(self.input_dims["audio"], hp["audio_channels"], hp["audio_kernel"])
        self.text = TextCNN(self.input_dims["text"], hp["filters"], hp["windows"])
        size = self.video.out_features + self.audio.out_features + self.text.out_features
        self.fused = nn.Sequential(nn.Linear(size, hp["dense"]), nn.ReLU(), nn.Dropout(hp["dropout"]))
        self.heads = self.task_heads(hp["dense"])

    def forward(self, batch):
        inputs, masks = batch["inputs"], batch["masks"]
        video = self.video(*sample_frames(inputs["video"], masks["video"], self.hp["max_frames"]))
        audio = self.audio(inputs["audio"], masks["audio"])
        text = self.text(inputs["text"], masks["text"])
        return self.apply_heads(self.fused(torch.cat([video, audio, text], dim=-1)))
