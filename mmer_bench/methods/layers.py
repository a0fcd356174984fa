"""Building blocks shared by the methods: masked pooling, recurrent encoders, the text and audio
CNNs, a conv tower, a uniform frame sampler and the one-hidden-layer MLP body.

Batches carry ``masks[name]`` (B, T), True for real frames and False for padding. Everything
here reads only real frames, so a clip's output never depends on how long the other clips of
its batch are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def present(batch: dict, name: str) -> torch.Tensor:
    """(B,) bool: which clips of the batch have input ``name`` (a removed modality reaches a
    method as an absent input whose mask row is all false; a vector input has a (B, 1) mask
    only when some clip lacks it)."""
    mask = batch["masks"].get(name)
    if mask is None:
        return torch.ones(batch["inputs"][name].shape[0], dtype=torch.bool, device=batch["inputs"][name].device)
    return mask.any(dim=-1)


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Real frames per clip, (B,) int64 on the CPU (what pack_padded_sequence wants)."""
    return mask.sum(dim=1).to("cpu", torch.int64)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames: (B, T, D), (B, T) -> (B, D)."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real frames: (B, T, D), (B, T) -> (B, D); padding filled with -inf first."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over time that gives padded frames exactly zero weight: (B, T) -> (B, T)."""
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=1)


def weighted_sum(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D)."""
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class AttentionPooling(nn.Module):
    """Additive self-attention over time: score_t = w2 . tanh(W1 h_t + b1) + b2, softmax over
    the real frames, weighted sum of h_t."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = masked_softmax(self.score(x).squeeze(-1), mask)
        return weighted_sum(x, weights)


class FANPooling(nn.Module):
    """Frame-attention pooling (the self-attention of Meng et al. 2019, "Frame Attention
    Networks"): each frame gets an independent sigmoid score, plus a small floor so that a clip
    whose scores all saturate at 0 still averages its frames; scores are normalised over the
    real frames only."""

    def __init__(self, dim: int, floor: float = 1e-3):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.floor = floor

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (torch.sigmoid(self.score(x).squeeze(-1)) + self.floor) * mask.to(x.dtype)
        return weighted_sum(x, scores / scores.sum(dim=1, keepdim=True))


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A batch-first (Bi)LSTM/GRU over the real frames only (packed, so the backward direction
    starts at each clip's last real frame); padded positions of the output are zero."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # oneDNN has a bf16 LSTM kernel only on CPUs with AVX-512 (bf16): on AVX2-only machines
        # autocast's bf16 input fails to build the primitive. The recurrence runs in the weights'
        # dtype (float32 under *-mixed precision) on every CPU, so results never depend on the model.
        with torch.autocast("cpu", enabled=False):
            return run_rnn(rnn, x.to(next(rnn.parameters()).dtype), mask)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths(mask), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the feature dimension of (B, T, D) sequences whose batch statistics come
    from real frames only (padding would otherwise pull the mean towards zero)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


def sample_frames(x: torch.Tensor, mask: torch.Tensor, count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``count`` frames per clip, evenly spread over its real frames: frame j of a clip of
    n > count real frames is floor((j + 0.5) * n / count), the centre of the j-th of ``count``
    equal parts (the extractors' ``uniform`` sampling); a shorter clip keeps all of its frames.
    Real frames come first in each row, as ``collate`` pads; the batch is cut to its new longest
    clip and padded positions are zero. ``count`` None: the batch as it is."""
    if count is None:
        return x, mask
    length = mask.sum(1)
    new_length = length.clamp(max=count)
    position = torch.arange(int(new_length.max()), device=x.device)[None, :]
    index = ((position + 0.5) * length[:, None] / new_length.clamp(min=1)[:, None]).floor().long()
    index = torch.minimum(index, (length - 1).clamp(min=0)[:, None])
    new_mask = position < new_length[:, None]
    x = torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))
    return x * new_mask[:, :, None], new_mask


def mlp_body(width: int, hidden: int, dropout: float | None = None, input_dropout: float | None = None) -> nn.Sequential:
    """One hidden layer: [Dropout(input_dropout)] -> Linear(width, hidden) -> ReLU -> [Dropout(dropout)]."""
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout is not None else []
    layers += [nn.Linear(width, hidden), nn.ReLU()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


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
            real = start < (length - w + 1).clamp(min=1)
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


def conv_tower(channels: list[int]) -> nn.Sequential:
    """Image encoder: conv3x3-BN-ReLU blocks (``channels[0]`` in, one block per later entry) with
    a 2x2 max-pool between blocks."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(channels, channels[1:])):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)
