"""Video-level predictions from frame-level ones.

A frame-level model is trained with its video's label on every frame and predicts every frame;
the video's prediction then aggregates its frames by one of three rules (``AGGREGATIONS``):

- ``"vote"``: each frame votes for its arg-max class and the video takes the most voted class.
  A tie goes to the tied class with the higher mean frame probability, so the answer never
  depends on the order of the frames or of the classes (unless those are tied too).
- ``"mean_probs"``: the mean of the frames' softmax probabilities.
- ``"mean_logits"``: the softmax of the frames' mean logits (a geometric-mean-like pooling that
  lets confident frames weigh more than under ``mean_probs``).

Every rule returns probabilities (videos x classes, rows summing to 1), so metrics, prediction
files and late fusion read them like any clip-level posterior. For ``"vote"`` they are the vote
shares, nudged by 1e-3 x the mean probability so that the arg-max is the tie-broken winner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

AGGREGATIONS = ("vote", "mean_probs", "mean_logits")
_TIE_NUDGE = 1e-3  # < 1 vote, so it only ever decides between classes with equal vote counts


def check_aggregation(how: str) -> str:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {', '.join(AGGREGATIONS)}")
    return how


def aggregate_frames(logits: torch.Tensor, mask: torch.Tensor | None = None, how: str = "mean_probs") -> torch.Tensor:
    """Per-video probabilities (B, C) from frame logits (B, T, C); ``mask`` (B, T) is True for
    real frames (padding is False). Every video needs at least one real frame."""
    check_aggregation(how)
    logits = logits.float()
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    weights = mask.to(logits.dtype).unsqueeze(-1)  # (B, T, 1)
    n_frames = weights.sum(dim=1)  # (B, 1)
    if bool((n_frames == 0).any()):
        raise ValueError("a video has no frames to aggregate")
    mean_probs = (torch.softmax(logits, dim=-1) * weights).sum(dim=1) / n_frames
    if how == "mean_probs":
        return mean_probs
    if how == "mean_logits":
        return torch.softmax((logits * weights).sum(dim=1) / n_frames, dim=-1)
    votes = torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    scores = (votes * weights).sum(dim=1) + _TIE_NUDGE * mean_probs
    return scores / scores.sum(dim=-1, keepdim=True)


def aggregate_by_video(
    frame_logits: np.ndarray, video_ids: Sequence, how: str = "mean_probs"
) -> tuple[list, np.ndarray]:
    """The same rules for frame rows of a table: ``frame_logits`` (N, C) with the video of each
    row in ``video_ids`` (N,). Returns the videos (in order of first appearance) and their
    probabilities (videos x classes)."""
    frame_logits = np.asarray(frame_logits, dtype=np.float32)
    if frame_logits.ndim != 2 or len(frame_logits) != len(video_ids):
        raise ValueError(f"expected frame logits (N, C) with one video id per row, got {frame_logits.shape} "
                         f"and {len(video_ids)} ids")
    videos = list(dict.fromkeys(video_ids))
    index = {v: i for i, v in enumerate(videos)}
    rows = np.array([index[v] for v in video_ids], dtype=np.int64)
    longest = int(np.bincount(rows, minlength=len(videos)).max()) if len(rows) else 0
    padded = np.zeros((len(videos), longest, frame_logits.shape[1]), dtype=np.float32)
    mask = np.zeros((len(videos), longest), dtype=bool)
    filled = np.zeros(len(videos), dtype=np.int64)
    for row, video in enumerate(rows):  # padded (videos, frames, classes), like a collated batch
        padded[video, filled[video]] = frame_logits[row]
        mask[video, filled[video]] = True
        filled[video] += 1
    probs = aggregate_frames(torch.from_numpy(padded), torch.from_numpy(mask), how)
    return videos, probs.numpy()
