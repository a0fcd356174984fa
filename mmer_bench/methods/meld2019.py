"""Baselines from the MELD paper, a three-branch MELD fusion baseline, and CAER-Net.

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
  concatenated, via the benchmark's ``inputs:``). With ``utterance_encoder: cnn`` and word
  vectors as input (``inputs: {meld-bclstm: {text: glove}}``) each utterance goes through the
  text CNN (``filters`` x ``windows``, Dense(``utterance_dim``, ReLU)) first, as in the paper,
  but trained jointly with the bcLSTM in one stage rather than in two.
- ``meld-audio-cnn``: MELD's audio baseline feeds the 34 pyAudioAnalysis features
  (``meld-audio34``, at most 100 frames of 0.2 s) to a classifier; the paper gives no network
  detail beyond its audio-only audio-only weighted-F1.
  Here: two Conv1D layers (``channels`` 64 -> 128, kernel 3, BatchNorm over real frames, ReLU)
  -> masked max and mean pooling over the real frames -> dropout -> heads, class-weighted. It is
  a small, documented stand-in, not a reproduction; no paper figure is shown beside it.
- ``meld-baseline-fusion``: the utterance-level three-branch baseline of the MULTIMODAL-EMOTION-
  RECOGNITION project (github.com/ankurbhatia24/MULTIMODAL-EMOTION-RECOGNITION, notebook
  ``model/multimodal_baseline.ipynb``), built on MELD and its text-CNN: video frames -> ConvLSTM2D (32 filters, 3x3) -> BatchNorm -> a 2-D conv
  stack (64-128-64-32 with 2x2 max-pools); audio frames -> Conv1D stack; GloVe words -> text CNN;
  the three vectors concatenated, one softmax head for the 7 emotions and one for the 3
  sentiments, the two losses summed. The MELD paper reports no figure for it: its own
  multimodal baselines (bcLSTM, DialogueRNN) concatenate text and audio features inside a
  dialogue-level context model and leave video out, so no paper number is shown beside it.
  Here: ``video`` (``face-crops``) -> at most ``max_frames`` (10) of each clip's real frames ->
  optional ``downsample`` average pooling -> a ConvLSTM (``convlstm`` 32 channels, 3x3, written
  here: :class:`ConvLSTMCell`) that advances on real frames only and passes on the state after
  the last real frame (``video_state="last"``, Keras's ``return_sequences=False``) or the mean
  hidden state over the real frames (``"mean"``) -> BatchNorm -> [2x2 max-pool, conv3x3-BN-ReLU]
  for ``video_channels`` 64-128-64-32 -> global average pool (32); ``width`` scales the ConvLSTM
  and conv channels (and ``downsample`` the frames) for a CPU. ``audio`` (``meld-audio34``,
  standardised) -> the ``meld-audio-cnn`` body (:class:`AudioCNN`: Conv1D 64-128, BatchNorm over
  real frames, ReLU, masked max + mean pooling; 256). ``text`` (``glove``) -> the
  ``meld-text-cnn`` body (:class:`TextCNN`: windows 3-4-5 x 50 filters, masked max; 150).
  Concatenation -> Dense(``dense`` 128, ReLU) -> dropout 0.5 -> emotion and sentiment heads,
  class-weighted cross-entropy on each, summed by the base class. What differs from that
  notebook and why:

  * Frames: the notebook feeds 10 whole frames of 84 x 150 per utterance. video.py has no
    plain whole-frame extractor (``context-frames`` blacks out the face box), so the default is
    ``face-crops`` (aligned 96 x 96 face crops, frames without a face left out), the frame-level
    extractor that keeps the expression; a benchmark config may point ``video`` at
    ``context-frames`` (set ``frame_size`` to its (height, width); square sizes are inferred).
    Clips where no frame has a face fail extraction (``skip_missing`` leaves them out). The 10
    frames become ``max_frames``: the centres of 10 equal parts of a longer clip's real frames,
    every frame of a shorter one, instead of a fixed 10 including padding.
  * ConvLSTM: 'same' instead of 'valid' padding, sigmoid gates (Keras 2's default recurrent
    activation was a hard sigmoid), forget-gate bias 1; padded frames never update the state,
    so a prediction does not depend on the other clips of its batch.
  * Conv stack: the notebook's convolutions are linear ('valid', no activation, BatchNorm
    only), which makes the stack one linear map between poolings, and it flattens the last map
    (160 values for 84 x 150 frames); here each conv is followed by BatchNorm and ReLU, and a
    global average pool gives a vector whose size does not depend on the frame size.
  * Audio: the notebook reshapes 40 MFCC values to (10, 4) for a Conv1D 16-32; here the MELD
    release's (100, 34) frame features (``meld-audio34``) go through the ``meld-audio-cnn`` body.
  * Text: the notebook runs Conv1D 64 (width 5) -> max-pool 2 -> Conv1D 100 (width 5) -> global
    max over 20 frozen 300-d GloVe vectors; here the MELD paper's text CNN (``meld-text-cnn``'s
    body) over the 50-d GloVe 6B vectors, masked as described above.
  * Fusion: the notebook puts both softmax heads straight on the concatenation with plain
    cross-entropy; here a Dense(128, ReLU) + dropout 0.5 layer comes first (the MELD text-CNN's
    Dense + dropout, shared by the three branches), and the cross-entropy is class-weighted
    (inverse frequency) because MELD is dominated by *neutral*.

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

import math

import torch
from torch import nn
from torch.nn import functional as F

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.layers import MaskedBatchNorm, masked_mean, run_rnn
from mmer_bench.registry import METHODS


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real frames: (B, T, D), (B, T) -> (B, D); padding filled with -inf first."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


class TextCNN(nn.Module):
    """Kim's (2014) text CNN body: word vectors (B, T, D) -> 1-D convolutions of each window width
    -> ReLU -> max over the windows that start on a real word -> concatenation (B, len(windows) x
    filters). Utterances shorter than the widest window are zero-padded to that width; positions
    past an utterance's real words read zeros and never win the max."""

    def __init__(self, dim: int, filters: int, windows):
        super().__init__()
        self.windows = tuple(int(w) for w in windows)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in self.windows)
        self.out_features = len(self.windows) * filters

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        widest = max(self.windows)
        if x.shape[1] < widest:  # utterances shorter than the widest window: pad with zeros
            pad = widest - x.shape[1]
            x = F.pad(x, (0, 0, 0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        x = torch.where(mask.unsqueeze(-1), x, 0.0)  # padded positions read zeros, whatever was there
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
        return torch.cat(pooled, dim=-1)


class AudioCNN(nn.Module):
    """Conv1D body over frame features (B, T, D): per layer zero the padding, 'same' conv,
    BatchNorm over real frames, ReLU; then masked max and mean pooling -> (B, 2 x channels[-1])."""

    def __init__(self, dim: int, channels, kernel: int):
        super().__init__()
        dims = [dim, *[int(c) for c in channels]]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(MaskedBatchNorm(b) for b in dims[1:])
        self.out_features = 2 * dims[-1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1)
        for conv, norm in zip(self.convs, self.norms):
            # Zero padding before each conv: the 'same' padding of a real edge frame reads zeros,
            # as it would in a batch of one.
            x = conv(torch.where(keep, x, 0.0).transpose(1, 2)).transpose(1, 2)
            x = torch.relu(norm(x, mask))
        return torch.cat([masked_max(x, mask), masked_mean(x, mask)], dim=-1)


@METHODS.register("meld-text-cnn")
class MeldTextCNN(EmotionRecognizer):
    inputs = {"text": "glove"}
    scaling: dict[str, str] = {}
    paper = {"meld": {"weighted_f1": 55.02,
                      "source": "Poria et al. 2019, MELD, ACL, results table, text-CNN row (7 emotions)"}}
    defaults = {"filters": 50, "windows": (3, 4, 5), "dense": 100, "dropout": 0.5,
                "class_weighted": True, "lr": 1e-3, "batch_size": 32, "max_epochs": 100, "patience": 10}

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
    defaults = {"hidden": 300, "layers": 2, "dense": 100, "dropout": 0.5, "rnn_dropout": 0.3,
                "utterance_encoder": "vector", "filters": 50, "windows": (3, 4, 5), "utterance_dim": 100,
                "class_weighted": True, "lr": 1e-3, "batch_size": 16, "max_epochs": 60, "patience": 10}

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
    defaults = {"channels": (64, 128), "kernel": 3, "dropout": 0.3, "class_weighted": True,
                "lr": 1e-3, "batch_size": 32, "max_epochs": 100, "patience": 10}

    def build(self):
        self.audio = AudioCNN(self.input_dims["audio"], self.hp["channels"], self.hp["kernel"])
        self.drop = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(self.audio.out_features)

    def forward(self, batch):
        return self.apply_heads(self.drop(self.audio(batch["inputs"]["audio"], batch["masks"]["audio"])))


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


def pick_frames(x: torch.Tensor, mask: torch.Tensor, count: int | None):
    """At most ``count`` of each clip's real frames: the frames at the centres of ``count`` equal
    parts of a longer clip (the extractors' ``uniform`` sampling), every frame of a shorter one.
    Real frames come first in each row, as ``collate`` pads. (B, T, D), (B, T) -> (B, <=count, D)."""
    if count is None or x.shape[1] <= count:
        return x, mask
    length = mask.sum(1, keepdim=True)  # (B, 1)
    step = torch.arange(count, device=x.device)[None, :]
    spread = ((step + 0.5) * length / count).floor().long()
    index = torch.where(length > count, spread, step)
    x = x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return x, step < length


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
    defaults = {"width": 1.0, "frame_size": None, "downsample": 1, "max_frames": 10, "convlstm": 32,
                "convlstm_kernel": 3, "video_channels": (64, 128, 64, 32), "video_state": "last",
                "audio_channels": (64, 128), "audio_kernel": 3, "filters": 50, "windows": (3, 4, 5),
                "dense": 128, "dropout": 0.5, "class_weighted": True,
                "lr": 1e-3, "batch_size": 16, "max_epochs": 50, "patience": 10}

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
        video = self.video(*pick_frames(inputs["video"], masks["video"], self.hp["max_frames"]))
        audio = self.audio(inputs["audio"], masks["audio"])
        text = self.text(inputs["text"], masks["text"])
        return self.apply_heads(self.fused(torch.cat([video, audio, text], dim=-1)))
