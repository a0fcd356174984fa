"""A small learning check for methods whose real inputs (video, raw audio) are too slow to
extract in a unit test: fixture clips whose inputs carry the label, a short training loop with
the method's own loss, and accuracy on held-out fixture clips."""

from __future__ import annotations

import numpy as np
import torch

from mmer_bench.data import collate


def fixture_items(make_inputs, labels: dict[str, int] | None, n: int, n_classes: int, seed: int,
                  tasks: tuple) -> list[dict]:
    """``n`` clips with balanced labels; ``make_inputs(label, rng)`` -> {input name: array}."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = i % n_classes
        items.append({"clip_id": f"c{seed}-{i}", "inputs": make_inputs(label, rng),
                      "targets": {t.name: label for t in tasks}})
    return items


def held_out_accuracy(model, make_inputs, n_classes: int, steps: int = 60, lr: float = 3e-3,
                      batch_size: int = 12, n_train: int = 72, n_test: int = 42, seed: int = 0) -> float:
    """Train ``model`` for ``steps`` optimiser steps on fixture clips; accuracy of its first task
    on other fixture clips drawn the same way."""
    torch.manual_seed(seed)
    train = fixture_items(make_inputs, None, n_train, n_classes, seed, model.tasks)
    test = fixture_items(make_inputs, None, n_test, n_classes, seed + 1000, model.tasks)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = collate([train[i] for i in rng.choice(n_train, batch_size, replace=False)])
        optimizer.zero_grad()
        model.compute_loss(model(batch), batch["targets"]).backward()
        optimizer.step()
    model.eval()
    task = model.tasks[0].name
    with torch.no_grad():
        batch = collate(test)
        predicted = model(batch)[task].argmax(dim=-1)
    return float((predicted == batch["targets"][task]).float().mean())


def coloured_frames(label: int, rng, size: int, frames: int, width: int | None = None) -> np.ndarray:
    """(frames, 3 * size * width) images in [0, 1]: noise, the label's colour channel raised, and
    for labels past 2 a bright top half: visible to a small CNN, not to a constant."""
    width = width or size
    images = rng.uniform(0.0, 0.4, (frames, 3, size, width))
    images[:, label % 3] += 0.5
    if label >= 3:
        images[:, :, : size // 2] += 0.3
    return images.clip(0, 1).reshape(frames, -1).astype(np.float32)
