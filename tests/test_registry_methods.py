"""Tests written once against the registries, over every registered method with its small
configuration from tests/method_table.py (output shapes and padding invariance; learning a class
signal carried by fixture inputs) and every registered extractor (its row says how it is
checked)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.media import write_tone
from method_table import CASES, EXTRACTOR_CASES, TASKS

from mmer_bench.data import collate, collate_dialogues
from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.registry import EXTRACTORS, METHODS


def builtin(cls) -> bool:
    """Shipped with the package (tests such as test_readme register throwaway examples)."""
    return cls.__module__.startswith("mmer_bench.")


def recognizers() -> list[str]:
    return [name for name, cls in METHODS.items()
            if isinstance(cls, type) and issubclass(cls, EmotionRecognizer) and builtin(cls)]


def test_every_registered_method_has_a_row():
    missing = sorted(set(recognizers()) - set(CASES))
    assert not missing, f"add a small configuration for {missing} to tests/method_table.py"
    assert not set(CASES) - set(recognizers()), "tests/method_table.py has rows for unregistered methods"


def build(method: str):
    case = CASES[method]
    torch.manual_seed(0)
    return METHODS.get(method)(case.get("tasks", TASKS), case["dims"], **case["hp"])


def default_inputs(method: str):
    """Noise around a per-class prototype: a vector, or 3-12 frames, as each input's extractor gives."""
    cls, dims = METHODS.get(method), CASES[method]["dims"]
    centres = {name: np.random.default_rng(7).normal(0, 1, (8, dim)) for name, dim in dims.items()}

    def make(label: int, rng) -> dict:
        out = {}
        for name, dim in dims.items():
            sequence = EXTRACTORS.get(cls.inputs[name]).kind == "sequence"
            shape = (int(rng.integers(3, 13)), dim) if sequence else (dim,)
            out[name] = (centres[name][label] + rng.normal(0, 1, shape)).astype(np.float32)
        return out

    return CASES[method].get("inputs") or make


def items(method: str, labels, seed: int) -> list[dict]:
    make, tasks = default_inputs(method), CASES[method].get("tasks", TASKS)
    rng = np.random.default_rng(seed)
    return [{"clip_id": f"c{seed}-{i}", "inputs": make(label, rng), "targets": {t.name: label for t in tasks}}
            for i, label in enumerate(labels)]


def batch_of(method: str, clips: list[dict], dialogue_size: int = 3) -> dict:
    if not METHODS.get(method).reads_dialogues:
        return collate(clips)
    return collate_dialogues([clips[i : i + dialogue_size] for i in range(0, len(clips), dialogue_size)])


def longer(item: dict, than: list[dict], clip_id: str) -> dict:
    """``item`` with each frame sequence repeated until it is longer than those of ``than``."""
    inputs = {}
    for name, array in item["inputs"].items():
        if array.ndim == 1:
            inputs[name] = array
        else:
            longest = max(it["inputs"][name].shape[0] for it in than)
            inputs[name] = np.concatenate([array] * (longest // array.shape[0] + 2))
    return {**item, "clip_id": clip_id, "inputs": inputs}


@pytest.mark.parametrize("method", sorted(CASES))
def test_shapes_and_padding_invariance(method):
    model = build(method).eval()
    clips = items(method, [0, 1, 2, 3], seed=0)
    alone_clips = clips[:3]
    extra = [longer(clips[3], alone_clips, f"long{i}") for i in range(3)]  # pads the first three
    if model.reads_dialogues:  # the first three as dialogues [c0, c1], [c2]; a longer dialogue pads them
        alone = collate_dialogues([alone_clips[:2], alone_clips[2:]])
        padded = collate_dialogues([alone_clips[:2], alone_clips[2:], extra])
    else:
        alone, padded = collate(alone_clips), collate([*alone_clips, extra[0]])
    with torch.no_grad():
        a, b = model.predict_step(alone), model.predict_step(padded)
    for task in model.tasks:
        assert a[task.name].shape == (3, task.num_outputs), (task.name, a[task.name].shape)
        assert torch.isfinite(b[task.name]).all()
        assert torch.allclose(a[task.name], b[task.name][:3], atol=1e-5), (a[task.name] - b[task.name][:3]).abs().max()
    # Training mode runs on the padded batch and gives a finite loss with gradients.
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step(padded, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_learns_a_class_signal(method):
    """Trained on fixture clips whose inputs carry the label, the method beats chance on others."""
    model = build(method)
    learn = {"steps": 60, "lr": 3e-3, **CASES[method].get("learn", {})}
    n_classes = model.tasks[0].num_classes
    train = items(method, [i % n_classes for i in range(72)], seed=0)
    test = items(method, [i % n_classes for i in range(42)], seed=1000)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learn["lr"])
    rng = np.random.default_rng(0)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        for _ in range(learn["steps"]):
            optimizer.zero_grad()
            model.training_step(batch_of(method, [train[i] for i in rng.choice(len(train), 12, replace=False)]), 0).backward()
            optimizer.step()
    model.eval()
    batch = batch_of(method, test)
    with torch.no_grad():
        probs = model.predict_step(batch)[model.tasks[0].name]
    accuracy = float((probs.argmax(-1) == batch["targets"][model.tasks[0].name]).float().mean())
    assert accuracy > 1 / n_classes + 0.2, f"{method}: {accuracy:.2f}"


# --- extractors -----------------------------------------------------------------------------------
def test_every_registered_extractor_has_a_row():
    names = {name for name, cls in EXTRACTORS.items() if builtin(cls)}
    missing = sorted(names - set(EXTRACTOR_CASES))
    assert not missing, f"add {missing} to EXTRACTOR_CASES in tests/method_table.py"
    assert not set(EXTRACTOR_CASES) - names, "EXTRACTOR_CASES has rows for unregistered extractors"
    for name, case in EXTRACTOR_CASES.items():
        if "covered_by" in case:  # the named test file must exercise it (by name or class)
            text = (Path(__file__).parents[1] / case["covered_by"]).read_text()
            cls = EXTRACTORS.get(name)
            assert f'"{name}"' in text or re.search(rf"\b{cls.__name__}\b", text), (name, case["covered_by"])


@pytest.mark.parametrize("name", sorted(n for n, c in EXTRACTOR_CASES.items() if c.get("source") == "tone"))
def test_extractor_output_on_a_tone(tmp_path, name):
    path = tmp_path / "tone.wav"
    write_tone(path, seconds=1.0)
    extractor = EXTRACTORS.get(name)(**EXTRACTOR_CASES[name].get("params", {}))
    first, second = extractor.extract_clip(str(path)), extractor.extract_clip(str(path))
    assert first.ndim == (1 if extractor.kind == "vector" else 2), first.shape
    assert first.size and np.isfinite(first).all()
    assert np.array_equal(first, second)  # deterministic: the store caches by parameters only
