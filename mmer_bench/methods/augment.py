"""Training-time batch augmentations that any method can switch on through hyperparameters.

- ``mixup`` (Zhang et al. 2018): convex mixes of pairs of clips and of their targets (one-hot
  for classification, so the loss becomes soft-target cross-entropy; the values themselves for
  regression).
- ``spec_augment`` (Park et al. 2019): zeroed time and feature bands on sequence inputs, drawn
  inside each clip's real frames.
- ``modality_dropout`` (as in Neverova et al. 2016, "ModDrop"): whole modalities of a clip made
  absent (zero input, all-false mask row: what a removed modality looks like at test time), never
  every modality of a clip.

Both take and return the collated batch dict (see mmer_bench/data.py) and never modify it in place.
"""

from __future__ import annotations

import torch

SPEC_AUGMENT_DEFAULTS = {"time_masks": 2, "time_width": 20, "freq_masks": 2, "freq_width": 8}


def mixup(batch: dict, tasks, alpha: float) -> dict:
    """Mix every input and target with a shuffled copy of the batch; classification targets
    become soft (B, C).

    lambda ~ Beta(alpha, alpha), one per batch. Sequence masks become the union of the two
    clips' masks (padding is zero, so a frame real in either clip carries signal).
    """
    size = len(batch["clip_id"])
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    device = next(iter(batch["targets"].values())).device
    perm = torch.randperm(size, device=device)
    inputs = {name: lam * x + (1 - lam) * x[perm] for name, x in batch["inputs"].items()}
    masks = {name: m | m[perm] for name, m in batch["masks"].items()}
    targets = {}
    for task in tasks:
        y = batch["targets"][task.name]
        if task.kind == "classification":
            y = torch.nn.functional.one_hot(y, task.num_classes).float()
        targets[task.name] = lam * y + (1 - lam) * y[perm]
    return {**batch, "inputs": inputs, "masks": masks, "targets": targets}


def _bands(size: int, n_masks: int, max_width: int, limit: torch.Tensor, device) -> torch.Tensor:
    """(B, size) bool: ``n_masks`` bands of width 0..max_width, each inside [0, limit) of its row."""
    index = torch.arange(size, device=device)[None, :]
    out = torch.zeros(limit.shape[0], size, dtype=torch.bool, device=device)
    for _ in range(n_masks):
        width = torch.minimum(torch.randint(0, max_width + 1, limit.shape, device=device), limit)
        start = (torch.rand(limit.shape, device=device) * (limit - width + 1)).floor().long()
        out |= (index >= start[:, None]) & (index < (start + width)[:, None])
    return out


def spec_augment(batch: dict, time_masks: int = 2, time_width: int = 20, freq_masks: int = 2,
                 freq_width: int = 8, inputs: list[str] | None = None) -> dict:
    """Zero random time bands (within each clip's real frames) and feature bands (on real
    frames only) of the sequence inputs named in ``inputs`` (default: every sequence input)."""
    names = inputs if inputs is not None else list(batch["masks"])
    out = dict(batch["inputs"])
    for name in names:
        x, mask = batch["inputs"][name], batch["masks"][name]
        B, T, D = x.shape
        time = _bands(T, time_masks, time_width, mask.sum(1), x.device) & mask
        freq = _bands(D, freq_masks, freq_width, torch.full((B,), D, device=x.device), x.device)
        drop = time[:, :, None] | (freq[:, None, :] & mask[:, :, None])
        out[name] = x.masked_fill(drop, 0.0)
    return {**batch, "inputs": out}


def modality_dropout(batch: dict, groups: dict[str, list[str]], p: float) -> dict:
    """Make each modality of each clip absent with probability ``p``; ``groups`` maps a modality
    to its input names (dropped together). A clip keeps at least one of its modalities."""
    names = [g for g, inputs in groups.items() if inputs]
    if len(names) < 2 or p <= 0:
        return batch
    size = len(batch["clip_id"])
    device = next(iter(batch["inputs"].values())).device
    drop = torch.rand(size, len(names), device=device) < p
    full = drop.all(dim=1)
    if full.any():  # give a clip that lost everything back one modality at random
        keep = torch.randint(len(names), (int(full.sum()),), device=device)
        drop[full.nonzero()[:, 0], keep] = False
    inputs, masks = dict(batch["inputs"]), dict(batch["masks"])
    for column, group in enumerate(names):
        kept = ~drop[:, column]
        for name in groups[group]:
            x = inputs[name]
            inputs[name] = x * kept.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            mask = masks.get(name, torch.ones(size, 1, dtype=torch.bool, device=device))
            masks[name] = mask & kept[:, None]
    return {**batch, "inputs": inputs, "masks": masks}
