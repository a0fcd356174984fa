"""Pretrained encoders (features/encoders.py, methods/ssl.py, methods/finetune.py), offline:
tiny randomly initialised checkpoints of every family, built from config classes and saved to a
temporary folder, go through loading by path and by hub id (a fake local hub cache), frozen
extraction (batched = one clip at a time, cache hits, checkpoint identity in the key) and both
protocols (ssl-mlp, ssl-ft / text-encoder-ft). Nothing touches the network."""

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from mmer_bench.data import collate
from mmer_bench.features.base import extract
from mmer_bench.features.encoders import (
    AUDIO_FAMILIES,
    AudioEncoderFeatures,
    EncoderNotAvailableError,
    TextEncoderFeatures,
    load_encoder,
    resolve_model,
    save_random_encoder,
)
from mmer_bench.features.store import FeatureStore
from mmer_bench.methods.finetune import layer_depths
from mmer_bench.registry import EXTRACTORS, METHODS
from mmer_bench.tasks import ClassificationTask

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d")),)
LENGTHS = (4000, 9000, 6400, 12000, 3000)  # samples at 16 kHz, unsorted on purpose


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MMER_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MMER_CACHE", str(tmp_path / "cache"))  # checksum memo of this test only
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {family: str(save_random_encoder(family, root / family)) for family in (*AUDIO_FAMILIES, "bert")}


def tone_clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = [np.arange(n) / 16000 for n in LENGTHS]
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(120, 400) * x) + rng.normal(0, 0.02, x.size)).astype(np.float32)
            for x in t]


def wav_manifest(folder) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, clip in enumerate(tone_clips()):
        path = folder / f"c{i}.wav"
        sf.write(path, clip, 16000)
        rows.append({"clip_id": f"c{i}", "audio_path": str(path)})
    rows.append({"clip_id": "broken", "audio_path": str(folder / "missing.wav")})
    return pd.DataFrame(rows)


# --- loading and identity ----------------------------------------------------------------------
@pytest.mark.parametrize("family", [*AUDIO_FAMILIES, "bert"])
def test_every_family_loads_by_path_through_the_auto_classes(models, family):
    enc = load_encoder(models[family])
    assert enc.family == family and enc.modality == ("text" if family == "bert" else "audio")
    assert enc.num_states == 3 and enc.hidden_size == 32
    if family == "whisper":  # the encoder submodule only, over the log-mel front end
        assert type(enc.module).__name__ == "WhisperEncoder" and enc.input_name == "input_features"


def test_a_hub_id_offline_fails_saying_how_to_allow_it_or_where_to_put_a_copy():
    with pytest.raises(EncoderNotAvailableError) as info:
        resolve_model("microsoft/wavlm-large")
    message = str(info.value)
    assert "microsoft/wavlm-large" in message and "HF_HUB_OFFLINE=1" in message
    assert "allow_download: true" in message and "MMER_ALLOW_DOWNLOAD=1" in message
    assert "--local-dir /models/wavlm-large" in message
    with pytest.raises(EncoderNotAvailableError):
        AudioEncoderFeatures(model="microsoft/wavlm-large").cache_key("m")  # before any extraction
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("/models/nowhere/xlsr-53")
    with pytest.raises(ValueError, match="needs model"):
        AudioEncoderFeatures().cache_key("m")


def test_a_hub_id_in_the_local_cache_loads_offline_and_is_keyed_by_its_commit(models, tmp_path, monkeypatch):
    import huggingface_hub

    repo = tmp_path / "hub" / "models--org--tiny-hubert"
    shutil.copytree(models["hubert"], repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = resolve_model("org/tiny-hubert")
    assert resolved.identity == {"hub": "org/tiny-hubert", "commit": "0123abcd"}
    assert load_encoder("org/tiny-hubert").family == "hubert"
    params = AudioEncoderFeatures(model="org/tiny-hubert").params()
    assert params["model_identity"]["commit"] == "0123abcd"


# --- frozen extraction -------------------------------------------------------------------------
@pytest.mark.parametrize("family", AUDIO_FAMILIES)
def test_batched_extraction_equals_one_clip_at_a_time(models, family):
    clips = tone_clips()
    items = [(str(i), c) for i, c in enumerate(clips)]
    for layer, shape in (("all", (3, 32)), (-1, (32,)), ("mean", (32,))):
        batched = AudioEncoderFeatures(model=models[family], layer=layer, batch_size=4).encode_all(items, 1)
        for i, clip in enumerate(clips):
            alone = AudioEncoderFeatures(model=models[family], layer=layer).encode_all([("x", clip)], 1)["x"]
            assert batched[str(i)].shape == shape
            np.testing.assert_allclose(batched[str(i)], alone, atol=2e-5, err_msg=f"{family} layer {layer} clip {i}")
    frames = AudioEncoderFeatures(model=models[family], layer=1, pooling="none").encode_all(items, 1)
    # 50 frames per second: Whisper's ceil(n / 320) of its log-mel; a 400-sample receptive field
    # with a 320-sample stride for the convolutional families.
    expected = [-(-n // 320) if family == "whisper" else (n - 400) // 320 + 1 for n in LENGTHS]
    assert [frames[str(i)].shape[0] for i in range(len(clips))] == expected, family
    assert AudioEncoderFeatures(model=models[family], layer=1, pooling="none").kind == "sequence"


def test_extraction_is_cached_and_a_changed_checkpoint_is_a_new_key(models, tmp_path, monkeypatch):
    folder = tmp_path / "w2v2"
    shutil.copytree(models["wav2vec2"], folder)
    manifest = wav_manifest(tmp_path / "clips")
    store = FeatureStore(tmp_path / "store")
    extractor = EXTRACTORS.get("audio-encoder")(model=str(folder))
    first = extract(extractor, manifest, "m1", store, workers=1)
    assert sorted(first.arrays) == ["c0", "c1", "c2", "c3", "c4"] and first.arrays["c0"].shape == (3, 32)
    assert "missing.wav" in first.errors["broken"]  # a bad file is an error naming it, never a zero row

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached entry was extracted again")

    monkeypatch.setattr(AudioEncoderFeatures, "encode_all", no_encoding)
    again = extract(EXTRACTORS.get("audio-encoder")(model=str(folder), batch_size=2), manifest, "m1", store, 1)
    np.testing.assert_array_equal(again.arrays["c3"], first.arrays["c3"])  # batch size is not in the key
    monkeypatch.undo()
    key = extractor.cache_key("m1")
    save_random_encoder("wav2vec2", folder, seed=1)  # same architecture and file sizes, new weights
    changed = EXTRACTORS.get("audio-encoder")(model=str(folder))
    assert changed.cache_key("m1") != key
    assert not np.allclose(extract(changed, manifest, "m1", store, 1).arrays["c0"], first.arrays["c0"])
    assert EXTRACTORS.get("audio-encoder")(model=str(folder), layer=2).cache_key("m1") != changed.cache_key("m1")


def test_text_encoder_extracts_layers_and_tokens(models):
    items = [("a", "hello there"), ("b", "a much longer sentence with many more words in it"), ("c", "yes")]
    pooled = TextEncoderFeatures(model=models["bert"]).encode_all(items, 1)
    assert pooled["a"].shape == (3, 32)
    alone = TextEncoderFeatures(model=models["bert"]).encode_all([items[0]], 1)["a"]
    np.testing.assert_allclose(pooled["a"], alone, atol=2e-5)
    tokens = TextEncoderFeatures(model=models["bert"], layer=-1, pooling="none").encode_all(items, 1)
    assert tokens["a"].shape == (4, 32) and tokens["c"].shape == (3, 32)  # [CLS] ... [SEP]
    out = TextEncoderFeatures(model=models["bert"]).extract_many(pd.DataFrame({"clip_id": ["e"], "text": [" "]}), 1)
    assert "no text" in out["e"]
    with pytest.raises(ValueError, match="is a audio encoder"):
        TextEncoderFeatures(model=models["wavlm"]).encode_all(items, 1)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="layer must be"):
        AudioEncoderFeatures(model="x", layer="top")
    with pytest.raises(ValueError, match="pooling 'none'"):
        AudioEncoderFeatures(model="x", layer="all", pooling="none")


def test_bf16_extraction_runs_and_stays_close(models):
    items = [(str(i), c) for i, c in enumerate(tone_clips())]
    full = AudioEncoderFeatures(model=models["wavlm"], layer=-1).encode_all(items, 1)
    half = AudioEncoderFeatures(model=models["wavlm"], layer=-1, dtype="bfloat16").encode_all(items, 1)
    for key in full:
        assert np.corrcoef(full[key], half[key])[0, 1] > 0.98


# --- ssl-mlp -----------------------------------------------------------------------------------
def test_ssl_mlp_learns_which_layer_carries_the_label():
    from learning import held_out_accuracy

    torch.manual_seed(0)
    model = METHODS.get("ssl-mlp")(TASKS, {"states": 16}, lr=1e-2)

    def inputs(label, rng):
        states = rng.normal(size=(5, 16)).astype(np.float32)
        states[3, label * 4 : label * 4 + 4] += 2.0  # only state 3 says the class
        return {"states": states}

    accuracy = held_out_accuracy(model, inputs, 4, steps=80, lr=1e-2)
    assert accuracy > 0.25 + 0.4, accuracy
    weights = model.layer_weights(5).detach()
    assert int(weights.argmax()) == 3, weights


def test_ssl_mlp_takes_one_layer_or_frames():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = METHODS.get("ssl-mlp")(TASKS, {"states": 8}).eval()
    vectors = collate([{"clip_id": str(i), "inputs": {"states": rng.normal(size=8).astype(np.float32)},
                        "targets": {"emotion": 0}} for i in range(3)])
    assert model(vectors)["emotion"].shape == (3, 4)
    frames = METHODS.get("ssl-mlp")(TASKS, {"states": 8}, frames=True).eval()
    items = [{"clip_id": str(i), "inputs": {"states": rng.normal(size=(n, 8)).astype(np.float32)},
              "targets": {"emotion": 0}} for i, n in enumerate((5, 9, 3))]
    with torch.no_grad():
        alone, padded = frames(collate(items[:1]))["emotion"], frames(collate(items))["emotion"]
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="frames: true"):
        model(collate(items))  # frames of different lengths taken for hidden states: refused


# --- fine-tuning -------------------------------------------------------------------------------
def wave_batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    items = [{"clip_id": str(i), "inputs": {"wave": (0.3 * rng.normal(size=(n, 1))).astype(np.float32)},
              "targets": {"emotion": i % 4}} for i, n in enumerate(lengths)]
    return collate(items)


@pytest.mark.parametrize("family", AUDIO_FAMILIES)
def test_ssl_ft_every_family_shapes_padding_frozen_features_and_gradients(models, family):
    torch.manual_seed(0)
    model = METHODS.get("ssl-ft")(TASKS, {"wave": 1}, model=models[family])
    encoder = model.encoder
    convs = list(encoder.feature_extractor.parameters()) if hasattr(encoder, "feature_extractor") \
        else [*encoder.conv1.parameters(), *encoder.conv2.parameters()]
    assert convs and not any(p.requires_grad for p in convs)
    model.eval()
    with torch.no_grad():
        alone = model(wave_batch([4000, 6000, 3000]))["emotion"]
        padded = model(wave_batch([4000, 6000, 3000, 12000]))["emotion"]
    assert padded.shape == (4, 4)
    tolerance = 1e-4 if family != "data2vec-audio" else 1.0  # its stacked positional convolutions see the padding
    assert (alone - padded[:3]).abs().max() < tolerance, (family, (alone - padded[:3]).abs().max())
    model.train()
    batch = wave_batch([4000, 6000, 3000])
    model.compute_loss(model(batch), batch["targets"]).backward()
    top = [p for n, p in encoder.named_parameters() if ".1." in n and p.requires_grad]
    assert top and all(p.grad is not None and p.grad.abs().sum() > 0 for p in top), family


def test_ssl_ft_options_layer_decay_checkpointing_unfrozen(models):
    torch.manual_seed(0)
    model = METHODS.get("ssl-ft")(TASKS, {"wave": 1}, model=models["wavlm"], layer_decay=0.5, lr=1e-3,
                                  gradient_checkpointing=True, freeze_feature_encoder=False)
    assert model.encoder.is_gradient_checkpointing
    assert all(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    groups = {g["depth"]: g["lr"] for g in model.parameter_groups()}
    assert groups == pytest.approx({0: 1e-3 * 0.5**3, 1: 1e-3 * 0.5**2, 2: 1e-3 * 0.5, 3: 1e-3})
    depths = layer_depths(model, model.encoder, 2)
    assert depths["encoder.encoder.layers.1.attention.k_proj.weight"] == 2 and depths["dense.weight"] == 3
    batch = wave_batch([4000, 6000])
    model.compute_loss(model(batch), batch["targets"]).backward()  # checkpointed backward runs
    assert model.encoder.encoder.layers[0].attention.k_proj.weight.grad is not None
    optimizer = model.configure_optimizers()
    assert len(optimizer.param_groups) == 4


def test_ssl_ft_learns_tones_from_a_tiny_random_encoder(models):
    from learning import held_out_accuracy

    torch.manual_seed(0)
    model = METHODS.get("ssl-ft")(TASKS, {"wave": 1}, model=models["hubert"])

    def inputs(label, rng):
        n = int(rng.integers(3200, 4800))
        t = np.arange(n) / 16000
        wave = 0.5 * np.sin(2 * np.pi * (150 + 300 * label) * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, n)
        return {"wave": wave.astype(np.float32)[:, None]}

    accuracy = held_out_accuracy(model, inputs, 4, steps=80, lr=3e-3)
    assert accuracy > 0.25 + 0.2, accuracy


def test_ssl_ft_bf16_mixed_step_runs_on_cpu(models):
    torch.manual_seed(0)
    model = METHODS.get("ssl-ft")(TASKS, {"wave": 1}, model=models["wav2vec2"])
    batch = wave_batch([4000, 6000])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.compute_loss(model(batch), batch["targets"])
    loss.backward()
    assert torch.isfinite(loss) and model.dense.weight.grad is not None


def test_text_encoder_ft_loads_any_bert_folder_with_layer_decay(models):
    torch.manual_seed(0)
    model = METHODS.get("text-encoder-ft")(TASKS, {"text": 1}, model=models["bert"], layer_decay=0.8, lr=1e-4)
    groups = sorted((g["depth"], g["lr"]) for g in model.parameter_groups())
    assert [d for d, _ in groups] == [0, 1, 2, 3] and groups[-1][1] == pytest.approx(1e-4)
    assert not model.encoder.get_input_embeddings().weight.requires_grad  # freeze_word_embeddings (default)
    items = [{"clip_id": str(i), "inputs": {"text": np.array([[101], [2000 + i], [102]], np.float32)},
              "targets": {"emotion": i}} for i in range(3)]
    batch = collate(items)
    model.compute_loss(model(batch), batch["targets"]).backward()
    assert model.encoder.encoder.layer[1].output.dense.weight.grad is not None
    with pytest.raises(ValueError, match="is a audio encoder"):
        METHODS.get("text-encoder-ft")(TASKS, {"text": 1}, model=models["wavlm"])


# --- the runner, the leaderboard and the command line --------------------------------------------
def test_paper_column_takes_emobox_number_of_the_rows_encoder():
    from mmer_bench.report import _paper

    notes = []
    cell = _paper("ssl-mlp", "ravdess", "accuracy", notes, "microsoft/wavlm-large", ("accuracy", "uar"))
    assert cell == "72.00 (UAR) [1]" and "EmoBox" in notes[0]
    assert _paper("ssl-mlp", "ravdess", "accuracy", [], "/models/whisper-large-v3/", ("accuracy", "uar")).startswith("75.30")
    assert _paper("ssl-mlp", "ravdess", "accuracy", [], "/tmp/tiny-wavlm", ("accuracy", "uar")) == ""
    assert _paper("luna2022-au-mlp", "ravdess", "accuracy", []) == "60.22 ± 2.53 [1]"


def test_encoder_option_sets_extractors_and_generic_methods():
    from mmer_bench.cli import with_encoder

    features, hparams = with_encoder({"audio-encoder": {"layer": 6}}, {"ssl-ft": {"lr": 1e-5}}, "/models/wavlm")
    assert features["audio-encoder"] == {"layer": 6, "model": "/models/wavlm"}
    assert features["text-encoder"]["model"] == "/models/wavlm"
    assert hparams["ssl-ft"] == {"lr": 1e-5, "model": "/models/wavlm"} and hparams["text-encoder-ft"]["model"]
    assert "luna2022-w2v2-ft" not in hparams  # its model_path is a wav2vec2 folder of its own recipe


@pytest.mark.slow
def test_ssl_mlp_runs_on_the_synthetic_corpus_and_names_its_encoder(models, tmp_path):
    from mmer_bench.runner import BenchConfig, run_bench

    results = run_bench(BenchConfig(corpus="synthetic", methods=["ssl-mlp"], folds=["fold0"], out=str(tmp_path / "run"),
                                    loggers=["csv"], workers=1, cache_dir=str(tmp_path / "cache"),
                                    features={"audio-encoder": {"model": models["wavlm"]}},
                                    hparams={"ssl-mlp": {"max_epochs": 30}}))
    test = results.query("split == 'test' and metric == 'accuracy'")
    assert len(test) == 1 and set(results["variant"]) == {models["wavlm"]}
    assert "| ssl-mlp (wavlm) |" in (tmp_path / "run" / "leaderboard.md").read_text()


def test_readme_quotes_the_offline_error_verbatim():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    with pytest.raises(EncoderNotAvailableError) as info:
        resolve_model("microsoft/wavlm-large")
    assert str(info.value) in readme
