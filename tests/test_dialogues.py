"""Dialogue batching (corpora/base.py) and the MELD bcLSTM that reads whole conversations."""

import numpy as np
import pytest
import torch

from mmer_bench.data import CorpusDataModule, collate_dialogues
from mmer_bench.features.store import FeatureStore
from mmer_bench.registry import CORPORA, METHODS
from mmer_bench.runner import BenchConfig, compatible_methods, run_bench


@pytest.fixture(scope="module")
def synthetic():
    corpus = CORPORA.get("synthetic")()
    manifest = corpus.manifest()
    return corpus, manifest, corpus.plan(manifest)[0]


def test_collate_dialogues_indexes_rows_in_order():
    def item(clip):
        return {"clip_id": clip, "inputs": {"x": np.full(2, float(len(clip)), np.float32)}, "targets": {"emotion": 0}}

    batch = collate_dialogues([[item("a1"), item("a2"), item("a3")], [item("b1")]])
    assert batch["clip_id"] == ["a1", "a2", "a3", "b1"]
    assert batch["dialogues"].tolist() == [[0, 1, 2], [3, -1, -1]]
    assert batch["inputs"]["x"].shape == (4, 2)


def test_dialogue_batches_hold_whole_ordered_dialogues(synthetic, tmp_path):
    corpus, manifest, fold = synthetic
    dm = CorpusDataModule(corpus, manifest, fold, {"text": "minilm"}, store=FeatureStore(tmp_path),
                          batch_size=4, dialogues=True, workers=1)
    dm.setup()
    info = manifest.set_index("clip_id")
    seen = []
    for batch in dm.part_dataloader("test"):
        for row in batch["dialogues"]:
            clips = [batch["clip_id"][i] for i in row.tolist() if i >= 0]
            assert info.loc[clips, "dialogue"].nunique() == 1
            order = info.loc[clips, "utterance"].tolist()
            assert order == sorted(order)
            # A whole dialogue: all six utterances of the take are here.
            assert len(clips) == (info["dialogue"] == info.at[clips[0], "dialogue"]).sum()
            seen += clips
    assert sorted(seen) == sorted(fold.test)
    assert dm.class_counts("emotion").sum() == len(fold.train)


def test_corpora_without_dialogues_refuse_dialogue_methods(synthetic):
    corpus, manifest, fold = synthetic
    ravdess_like = type("NoDialogues", (type(corpus),), {"dialogue_columns": None})()
    with pytest.raises(ValueError, match="no dialogues"):
        CorpusDataModule(ravdess_like, manifest, fold, {"text": "minilm"}, dialogues=True)
    assert "meld-bclstm" not in compatible_methods(ravdess_like, manifest)
    assert "meld-bclstm" in compatible_methods(corpus, manifest)


def make_model(dim=8, **hp):
    from mmer_bench.tasks import ClassificationTask

    cls = METHODS.get("meld-bclstm")
    tasks = (ClassificationTask("emotion", tuple("abcdef")), ClassificationTask("sentiment", tuple("xyz")))
    return cls(tasks, {"text": dim}, None, hidden=16, dense=8, **hp).eval()


def dialogue_batch(lengths, dim=8, seed=0, words=False):
    rng = np.random.default_rng(seed)

    def text():  # a vector per utterance, or word vectors of 1-6 words
        return rng.normal(size=(int(rng.integers(1, 7)), dim) if words else dim).astype(np.float32)

    return [[{"clip_id": f"d{d}u{u}", "inputs": {"text": text()}, "targets": {"emotion": 0, "sentiment": 0}}
             for u in range(n)] for d, n in enumerate(lengths)]


@pytest.mark.parametrize("encoder", ["vector", "cnn"])
def test_bclstm_shapes_context_and_batch_independence(encoder):
    words = encoder == "cnn"
    model = make_model(utterance_encoder=encoder, filters=4, windows=(1, 2), utterance_dim=8)
    dialogues = dialogue_batch([3, 5, 1], words=words)
    with torch.no_grad():
        together = model(collate_dialogues(dialogues))
        alone = model(collate_dialogues(dialogues[:1]))
        assert together["emotion"].shape == (9, 6) and together["sentiment"].shape == (9, 3)
        # The other dialogues of a batch never change a dialogue's predictions.
        torch.testing.assert_close(together["emotion"][:3], alone["emotion"], rtol=1e-5, atol=1e-6)
        # Context is read: changing utterance 3 of a dialogue changes the prediction for utterance 1.
        changed = [dict(it) for it in dialogues[0]]
        changed[2] = {**changed[2], "inputs": {"text": changed[2]["inputs"]["text"] * 5.0 + 3.0}}
        moved = model(collate_dialogues([changed]))
        assert not torch.allclose(moved["emotion"][0], alone["emotion"][0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(collate_dialogues(dialogues))["emotion"].shape == (9, 6)
    with pytest.raises(ValueError, match="whole dialogues"):
        model({"inputs": {"text": torch.zeros(2, 8)}})
    if words:  # garbage in padded word positions changes nothing
        batch = collate_dialogues(dialogues)
        batch["inputs"]["text"][~batch["masks"]["text"]] = 1e3
        with torch.no_grad():
            torch.testing.assert_close(model(batch)["emotion"], together["emotion"], rtol=1e-5, atol=1e-5)


def test_bclstm_learns_on_synthetic(tmp_path):
    hp = {"hidden": 32, "dense": 32, "max_epochs": 40, "patience": None, "lr": 3e-3, "batch_size": 4}
    results = run_bench(BenchConfig(corpus="synthetic", methods=["meld-bclstm"], folds=["fold0"], out=str(tmp_path),
                                    loggers=["csv"], workers=1, hparams={"meld-bclstm": hp}))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.2, accuracy
