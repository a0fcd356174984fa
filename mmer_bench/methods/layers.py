"""Masked sequence layers shared by the methods: pooling over time and recurrent encoders.

Batches carry ``masks[name]`` (B, T), True for real frames and False for padding. Everything
here reads only real frames, so a clip's output never depends on how long the other clips of
its batch are.
"""

from __future__ import annotations

import torch
from torch import nn


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
