"""MELD baselines (text CNN, audio CNN) and CAER-Net: shapes, padding invariance, a training
step, and learning on the synthetic corpus for the two CNNs (CAER-Net's video extraction is too
slow for a unit test, so it runs on random tensors only)."""

import numpy as np
import pytest
import torch

from mmer_bench.corpora.base import collate
from mmer_bench.registry import METHODS
from mmer_bench.runner import BenchConfig, run_bench
from mmer_bench.tasks import ClassificationTask

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d", "e", "f")),)
SMALL_CAER = {"width": 0.125, "face_size": 16, "context_height": 16, "context_width": 24, "attention": 16,
              "fusion_hidden": 8, "hidden": 16}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(dims: dict[str, int], lengths: dict[str, list[int]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(next(iter(lengths.values())))
    items = [{"clip_id": f"c{i}", "targets": {"emotion": i % 6},
              "inputs": {name: rng.random((lengths[name][i], dim), dtype=np.float32) for name, dim in dims.items()}}
             for i in range(n)]
    return collate(items)


CASES = {
    "meld-text-cnn": ({"text": 50}, {"text": [7, 2, 12]}, {"text": [7, 2, 12, 30]}, {}),
    "meld-audio-cnn": ({"audio": 34}, {"audio": [40, 3, 100]}, {"audio": [40, 3, 100, 120]}, {"channels": (16, 32)}),
    "caer-net": ({"face": 3 * 16 * 16, "context": 3 * 16 * 24}, {"face": [3, 1, 4], "context": [4, 2, 4]},
                 {"face": [3, 1, 4, 6], "context": [4, 2, 4, 7]}, SMALL_CAER),
}


@pytest.mark.parametrize("method", list(CASES))
def test_shapes_and_padding_invariance(method):
    torch.manual_seed(0)
    dims, short, long, hp = CASES[method]
    model = METHODS.get(method)(TASKS, dims, **hp).eval()
    alone = make_batch(dims, short)
    padded = make_batch(dims, long)  # a longer clip pads the others
    for name in dims:
        padded["inputs"][name][:3][~padded["masks"][name][:3]] = 1e3  # garbage in padding must not matter
    with torch.no_grad():
        a = model(alone)["emotion"]
        b = model(padded)["emotion"]
    assert a.shape == (3, 6) and b.shape == (4, 6) and torch.isfinite(b).all()
    assert torch.allclose(a, b[:3], atol=1e-5), (a - b[:3]).abs().max()


def test_text_cnn_handles_utterances_shorter_than_the_widest_window():
    model = METHODS.get("meld-text-cnn")(TASKS, {"text": 50}).eval()
    batch = make_batch({"text": 50}, {"text": [1, 2]})
    with torch.no_grad():
        out = model(batch)["emotion"]
    assert out.shape == (2, 6) and torch.isfinite(out).all()
    assert model.hp["filters"] == 50 and model.hp["class_weighted"]
    assert METHODS.get("meld-text-cnn")(TASKS, {"text": 50}, filters=512).convs[0].out_channels == 512


def test_caer_net_checks_crop_sizes_and_learns_a_batch():
    with pytest.raises(ValueError, match="face_size"):
        METHODS.get("caer-net")(TASKS, {"face": 3 * 96 * 96, "context": 3 * 16 * 24}, **SMALL_CAER)
    defaults = METHODS.get("caer-net").hparam_defaults()
    assert (defaults["face_size"], defaults["context_height"], defaults["context_width"]) == (96, 96, 128)
    torch.manual_seed(0)
    dims, short, _, hp = CASES["caer-net"]
    model = METHODS.get("caer-net")(TASKS, dims, **hp, dropout=0.0).train()
    batch = make_batch(dims, short)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.compute_loss(model(batch), batch["targets"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


SMALL = {
    "meld-text-cnn": {"filters": 16, "dense": 32, "max_epochs": 30, "patience": None, "lr": 3e-3},
    "meld-audio-cnn": {"channels": (16, 32), "max_epochs": 20, "patience": None, "lr": 3e-3},
}


@pytest.mark.parametrize("method", list(SMALL))
def test_learns_on_synthetic(tmp_path, method):
    results = run_bench(BenchConfig(corpus="synthetic", methods=[method], folds=["fold0"], out=str(tmp_path),
                                    loggers=["csv"], workers=1, hparams={method: SMALL[method]}))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.2, f"{method}: {accuracy:.2f}"


def test_caer_net_learns_face_and_context_fixture():
    from learning import coloured_frames, held_out_accuracy

    torch.manual_seed(0)
    model = METHODS.get("caer-net")(TASKS, CASES["caer-net"][0], **SMALL_CAER)

    def inputs(label, rng):
        frames = int(rng.integers(1, 4))
        return {"face": coloured_frames(label, rng, 16, frames),
                "context": coloured_frames(label, rng, 16, frames + 1, width=24)}

    accuracy = held_out_accuracy(model, inputs, 6, steps=60)
    assert accuracy > 1 / 6 + 0.3, accuracy
