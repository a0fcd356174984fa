"""LFAN, the leader-follower attention network of the feature-based system in

Richet, Belharbi, Aslam, Schadt, González-González, Cortal, Koerich, Pedersoli, Finkel, Bacon,
Granger (2024), "Text- and Feature-based Models for Compound Multimodal Emotion Recognition in
the Wild", arXiv:2407.12927 (7th ABAW challenge; C-EXPR-DB compound emotions, and MELD).

``lfan``: frame-level ``video`` (``face-embedding``), ``audio`` (``vggish``) and ``text``
(``bert-frames``) inputs, each resampled to the leader's (video) frames by relative time
(``gather_windows``), cut into windows of ``window`` leader frames (one random window per clip
in training; every ``hop`` frames at evaluation, logits averaged where windows overlap); a TCN
per modality, BatchNorm over real frames, per-step attention across the modalities, the
attended features concatenated with the leader's, a linear head per frame; clips aggregate
their frames (``FrameLevelRecognizer``). Recipe: the authors' MELD command (SGD, lr 1e-4).
No paper number is shown (it could not be checked offline). The steps in detail, the recipe and
every deviation from the original with its reason are in the README (Method notes:
methods/lfan.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from mmer_bench.methods.frames import FrameLevelRecognizer
from mmer_bench.methods.layers import MaskedBatchNorm
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


class TemporalBlock(nn.Module):
    """Two weight-normed dilated convolutions (ReLU, dropout each) plus a residual connection."""

    def __init__(self, n_in: int, n_out: int, kernel: int, dilation: int, dropout: float, causal: bool):
        super().__init__()
        total = (kernel - 1) * dilation
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv1 = weight_norm(nn.Conv1d(n_in, n_out, kernel, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(n_out, n_out, kernel, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.residual = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, L)
        out = self.drop(torch.relu(self.conv1(F.pad(x, self.pad))))
        out = self.drop(torch.relu(self.conv2(F.pad(out, self.pad))))
        return torch.relu(out + self.residual(x))


class TCN(nn.Module):
    """TemporalBlocks with dilations 1, 2, 4, ... over ``channels``: (N, L, D) -> (N, L, channels[-1])."""

    def __init__(self, n_in: int, channels: list[int], kernel: int, dropout: float, causal: bool):
        super().__init__()
        widths = [n_in, *channels]
        self.blocks = nn.Sequential(*(TemporalBlock(a, b, kernel, 2**i, dropout, causal)
                                      for i, (a, b) in enumerate(zip(widths, widths[1:]))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)


class ModalityAttention(nn.Module):
    """At each time step, multi-head attention across the modalities: q, k, v per modality
    (``dim`` wide), attended values plus the values (residual), output projection, dropout,
    LayerNorm. (N, L, d_m) per modality -> (N, L, M * dim)."""

    def __init__(self, dims: list[int], dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"lfan: modal_dim {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q = nn.ModuleList(nn.Linear(d, dim) for d in dims)
        self.k = nn.ModuleList(nn.Linear(d, dim) for d in dims)
        self.v = nn.ModuleList(nn.Linear(d, dim) for d in dims)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        def project(layers):  # -> (N, L, heads, M, dim / heads)
            stacked = torch.stack([layer(f) for layer, f in zip(layers, feats)], dim=2)
            return stacked.unflatten(-1, (self.heads, -1)).transpose(2, 3)

        q, k, v = project(self.q), project(self.k), project(self.v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        attended = (weights @ v + v).transpose(2, 3).flatten(-2)  # (N, L, M, dim)
        return self.norm(self.drop(self.out(attended))).flatten(-2)


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Evaluation windows of a clip of ``length`` frames: every ``hop`` frames, the last one
    ending at the clip's end (one window, from 0, for a clip no longer than ``window``)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@METHODS.register("lfan")
class LFAN(FrameLevelRecognizer):
    """See the module docstring. The video leads (its frames are the time axis) and the
    attention has no mask over modalities, so a condition that removes a modality is reported
    "n/a" for it."""

    inputs = {"video": "face-embedding", "audio": "vggish", "text": "bert-frames"}
    scaling = {"video": "standard", "audio": "standard", "text": "standard"}
    frame_input = "video"
    # The authors' MELD command: SGD, batch 2, 200 epochs.
    recipe = TrainRecipe(batch_size=2, max_epochs=200, patience=50)

    @dataclass(frozen=True)
    class Settings(FrameLevelRecognizer.Settings):
        leader: str = "video"  # the modality whose frames set the time axis and join the attended features
        # TCN channels per block, per modality
        channels: dict = field(default_factory=lambda: {
            "video": (256, 256, 128, 128), "audio": (64, 64, 32, 32), "text": (256, 256, 128, 128)})
        kernel: int = 5  # TCN kernel size
        causal: bool = True  # TCN sees only past frames (else centred convolutions)
        dropout: float = 0.1  # in the TCNs and the modality attention
        modal_dim: int = 32  # each modality's width in the attention
        heads: int = 2  # attention heads across the modalities
        window: int = 300  # leader frames per window
        hop: int = 200  # leader frames between evaluation windows
        eval_windows: int = 64  # windows per forward pass at evaluation
        aggregate: str = "mean_logits"  # frames -> clip: vote | mean_probs | mean_logits
        optimizer: str = "sgd"  # the authors' optimiser
        lr: float = 1e-4  # learning rate
        momentum: float = 0.9  # SGD momentum
        weight_decay: float = 1e-4  # L2 penalty
        scheduler: str | None = "step"  # lr times gamma every step_size epochs
        step_size: int = 50  # epochs per learning-rate decay
        gamma: float = 0.9  # learning-rate decay factor

    def build(self):
        hp = self.hp
        self.modalities = list(self.input_dims)
        if hp["leader"] not in self.modalities:
            raise ValueError(f"lfan: leader {hp['leader']!r} is not one of the inputs {self.modalities}")
        missing = set(self.modalities) - set(hp["channels"])
        if missing:
            raise ValueError(f"lfan: no TCN channels for inputs {sorted(missing)}")
        if hp["hop"] < 1 or hp["window"] < 1:
            raise ValueError("lfan: window and hop must be positive")
        self.tcns = nn.ModuleDict({m: TCN(self.input_dims[m], [int(c) for c in hp["channels"][m]], hp["kernel"],
                                          hp["dropout"], hp["causal"]) for m in self.modalities})
        widths = [int(hp["channels"][m][-1]) for m in self.modalities]
        self.norms = nn.ModuleDict({m: MaskedBatchNorm(w) for m, w in zip(self.modalities, widths)})
        self.attention = ModalityAttention(widths, hp["modal_dim"], hp["heads"], hp["dropout"])
        leader_width = widths[self.modalities.index(hp["leader"])]
        self.heads = self.task_heads(len(self.modalities) * hp["modal_dim"] + leader_width)

    # --- windows ----------------------------------------------------------------------------
    def gather_windows(self, batch, clips: torch.Tensor, starts: torch.Tensor, width: int):
        """The inputs of windows (clip ``clips[j]`` from leader frame ``starts[j]``, ``width``
        frames), each modality resampled to the leader's frames; and the real-frame mask."""
        leader = self.hp["leader"]
        n_lead = batch["masks"][leader].sum(1)[clips].clamp(min=1)
        position = starts[:, None] + torch.arange(width, device=starts.device)[None, :]
        real = position < n_lead[:, None]
        frame = torch.minimum(position, n_lead[:, None] - 1)  # repeat the last frame past the end
        windows = {}
        for m in self.modalities:
            x = batch["inputs"][m][clips]
            n_m = batch["masks"][m].sum(1)[clips].clamp(min=1)
            index = frame if m == leader else ((frame + 0.5) * n_m[:, None] / n_lead[:, None]).floor().long()
            index = torch.minimum(index, n_m[:, None] - 1)
            windows[m] = torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))
        return windows, real

    def encode(self, windows: dict[str, torch.Tensor], real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame logits of windows, {task: (N, L, C)}."""
        feats = {m: self.norms[m](self.tcns[m](windows[m]), real) for m in self.modalities}
        fused = self.attention([feats[m] for m in self.modalities])
        return self.apply_heads(torch.cat([fused, feats[self.hp["leader"]]], dim=-1))

    def frame_logits(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Training: logits of one random window per clip and its real-frame mask. Evaluation:
        logits on each clip's leader frames (averaged over overlapping windows; zero at padding)
        and the leader's mask."""
        mask = batch["masks"][self.hp["leader"]]
        length = mask.sum(1)
        window, device = self.hp["window"], mask.device
        clips = torch.arange(len(length), device=device)
        if self.training:
            width = min(window, int(length.max())) if self.hp["causal"] else window
            starts = (torch.rand(len(length), device=device) * (length - window + 1).clamp(min=1)).floor().long()
            windows, real = self.gather_windows(batch, clips, starts, width)
            return self.encode(windows, real), real
        plan = [(b, s) for b, n in enumerate(length.tolist()) for s in window_starts(n, window, self.hp["hop"])]
        width = min(window, int(length.max())) if self.hp["causal"] else window
        total = {t.name: None for t in self.tasks}
        counts = torch.zeros(mask.shape, device=device)
        for chunk in range(0, len(plan), self.hp["eval_windows"]):
            part = torch.tensor(plan[chunk : chunk + self.hp["eval_windows"]], device=device)
            windows, real = self.gather_windows(batch, part[:, 0], part[:, 1], width)
            logits = self.encode(windows, real)
            position = (part[:, 1:2] + torch.arange(width, device=device)[None, :])
            flat = (part[:, :1] * mask.shape[1] + position.clamp(max=mask.shape[1] - 1))[real]
            counts.view(-1).index_add_(0, flat, torch.ones(len(flat), device=device))
            for name, value in logits.items():
                if total[name] is None:
                    total[name] = torch.zeros(*mask.shape, value.shape[-1], device=device)
                total[name].view(-1, value.shape[-1]).index_add_(0, flat, value[real].float())
        out = {name: value / counts.clamp(min=1)[..., None] for name, value in total.items()}
        return out, mask

    def forward(self, batch):
        return self.frame_logits(batch)[0]

    def _frames(self, batch):
        return self.frame_logits(batch)
