"""Parity of the extractors that reproduce a published pipeline with the original's own tool, on
real RAVDESS clips (../shared/data/ravdess) or, for text, the offline MiniLM.

Peers from the ``parity`` extra (pyAudioAnalysis 0.3.14, librosa 0.11) skip these tests with the
reason shown when missing, and fail instead when MMER_REQUIRE_PARITY=1 (as in .ci/run). The
peers of the other extractors (openSMILE, torchvggish, transformers) are core dependencies.

Tolerances: the extractors store float32; the originals compute in float64 (or float32 where
stated). "float32 storage" below means a relative error of a few 1e-7 of each value, plus a
small absolute slack where values cross zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import _require

from mmer_bench.features.audio import (
    MELD_AUDIO34_NAMES,
    ComParEFunctionals,
    EGeMAPSFunctionals,
    EGeMAPSLLDs,
    LogMelMERC,
    MeldAudio34,
    load_audio,
    slaney_mel_filterbank,
    trim_silence,
)
from mmer_bench.features.audio_models import VGGish, Wav2Vec2
from mmer_bench.features.base import extract
from mmer_bench.features.originals import merc2020_log_mel, pyaudioanalysis_short_term
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.text_frames import BertFrames

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def ravdess_clips(shared_data):
    """Six real clips: two actors each of three emotions, both sexes, different lengths."""
    names = ["Actor_01/03-01-01-01-01-01-01", "Actor_02/03-01-05-02-02-02-02", "Actor_07/03-01-06-01-01-01-07",
             "Actor_12/03-01-03-02-01-02-12", "Actor_17/03-01-08-01-02-01-17", "Actor_24/03-01-04-02-02-02-24"]
    paths = [shared_data / "ravdess" / f"{name}.flac" for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        _require("MMER_REQUIRE_SHARED_DATA", f"RAVDESS clips missing: {missing}")
    return [str(p) for p in paths]


def peer(module: str):
    """Import a peer tool of the ``parity`` extra, or skip (fail when MMER_REQUIRE_PARITY=1)."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:
        _require("MMER_REQUIRE_PARITY", f"{module} (the parity extra) is not usable here: {type(exc).__name__}: {exc}")


# --- meld-audio34 against pyAudioAnalysis 0.3.14 ------------------------------------------------

@pytest.mark.parity
def test_meld_audio34_matches_pyaudioanalysis_frame_by_frame(ravdess_clips):
    peer("pyAudioAnalysis.ShortTermFeatures")
    extractor = MeldAudio34()
    for path in ravdess_clips:
        ours = extractor.extract_clip(path)
        audio = load_audio(path, 16000)[: 3200 + 1600 * 99]
        theirs = pyaudioanalysis_short_term(audio, 16000, 0.2, 0.1)
        assert ours.shape == theirs.shape, path
        # Each value within 1e-6 of itself plus 1e-6 of its feature's largest magnitude in the
        # clip (float32 storage; log10 of the emptiest MFCC bands amplifies float64 rounding).
        scale = np.abs(theirs).max(axis=0, keepdims=True)
        bad = np.abs(ours - theirs) > 1e-6 * np.abs(theirs) + 1e-6 * scale
        assert not bad.any(), (f"{path}: {sorted({MELD_AUDIO34_NAMES[j] for j in np.nonzero(bad)[1]})} differ "
                               f"from pyAudioAnalysis, by up to {np.abs(ours - theirs).max(axis=0)[bad.any(0)]}")


@pytest.mark.parity
def test_meld_audio34_matches_pyaudioanalysis_on_short_windows_and_other_rates():
    """The grids depend on the window and the rate: a 25 ms / 10 ms setting at 8 kHz too."""
    peer("pyAudioAnalysis.ShortTermFeatures")
    from mmer_bench.features.audio import short_term_features

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    audio = (0.3 * np.sin(2 * np.pi * 310 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    audio = np.round(audio * 32767) / 32768  # 16-bit samples, as the toolkit reads them
    ours = short_term_features(audio, 8000, 200, 80)
    theirs = pyaudioanalysis_short_term(audio, 8000, 0.025, 0.01)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# --- logmel-merc against MERC2020's preprocess_audio (librosa + scipy) --------------------------

@pytest.mark.parity
def test_logmel_merc_matches_the_entry_pipeline_run_with_librosa(ravdess_clips):
    peer("librosa")
    extractor = LogMelMERC()
    for path in ravdess_clips:
        ours = extractor.extract_clip(path)
        theirs = merc2020_log_mel(load_audio(path, 16000))
        assert ours.shape == theirs.shape, path
        # On the [0, 1] scale: the median cell within 1e-7, every cell within 1e-4. Single-precision
        # mel sums (as 2020's librosa) summed in another order; where a band's complex sum nearly
        # cancels (a clip's quietest frames) that rounding moves a cell by up to ~1.5e-5.
        assert np.median(np.abs(ours - theirs)) < 1e-7, path
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4, err_msg=path)


@pytest.mark.parity
def test_slaney_filterbank_and_trim_match_librosa(ravdess_clips):
    librosa = peer("librosa")
    for rate, n_fft, n_mels, fmin, fmax in [(16000, 512, 128, 80.0, 8000.0), (22050, 2048, 64, 0.0, 11025.0)]:
        ours = slaney_mel_filterbank(rate, n_fft, n_mels, fmin, fmax)
        theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    # 2020's librosa trim: RMS frames with the signal reflected at its ends (librosa.feature.rms
    # with pad_mode="reflect", which today's trim no longer uses), 20 dB below the loudest.
    for path in ravdess_clips:
        audio = load_audio(path, 16000).astype(np.float64)
        rms = librosa.feature.rms(y=audio, frame_length=512, hop_length=256, pad_mode="reflect", dtype=np.float64)[0]
        loud = np.flatnonzero(librosa.amplitude_to_db(rms, ref=np.max) > -20)
        start, end = loud[0] * 256, min(audio.size, (loud[-1] + 1) * 256)
        assert np.array_equal(trim_silence(audio, 20.0, 512, 256), audio[start:end]), path
        # Today's trim (zero-padded frames) keeps the same span on these clips.
        assert np.array_equal(librosa.effects.trim(audio, top_db=20, frame_length=512, hop_length=256)[1],
                              [start, end]), path


# --- egemaps / compare against openSMILE's own Smile.process_file -------------------------------

@pytest.mark.parametrize("extractor", [EGeMAPSFunctionals(), EGeMAPSLLDs(), ComParEFunctionals()],
                         ids=lambda e: e.name)
def test_opensmile_extractors_equal_process_file_after_the_store(ravdess_clips, extractor, tmp_path):
    import opensmile

    clips = ravdess_clips[:2] if extractor.name == "compare" else ravdess_clips
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(clips))], "audio_path": clips})
    store = FeatureStore(tmp_path / "store")
    extract(extractor, manifest, "parity", store, workers=1)
    stored = store.read(extractor.name, extractor.cache_key("parity"))  # read back from Parquet
    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, extractor.feature_set),
                            feature_level=getattr(opensmile.FeatureLevel, extractor.level))
    for clip_id, path in zip(manifest["clip_id"], clips):
        theirs = smile.process_file(path).to_numpy(dtype=np.float32)
        theirs = theirs[0] if extractor.kind == "vector" else theirs
        assert np.array_equal(stored.arrays[clip_id], theirs), f"{path}: {extractor.name} differs from process_file"


# --- vggish against torchvggish's own vggish_input ----------------------------------------------

def test_vggish_front_end_and_embeddings_match_torchvggish(ravdess_clips):
    from torchvggish import vggish_input

    extractor = VGGish()
    model = extractor.model()
    for path in ravdess_clips:
        audio = load_audio(path, 16000)
        theirs = vggish_input.waveform_to_examples(audio, 16000, return_tensor=False)
        assert np.array_equal(extractor.patches(audio), theirs), path  # the same log-mel patches
        with torch.no_grad():
            expected = model(torch.from_numpy(theirs.astype(np.float32))[:, None]).numpy()
        np.testing.assert_allclose(extractor.extract_clip(path), expected, rtol=1e-5, atol=1e-6, err_msg=path)


# --- wav2vec2 and bert-frames against transformers' own hidden states ---------------------------

def test_wav2vec2_equals_the_model_run_on_one_normalised_clip(ravdess_clips, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2(tiny_random=True, pooling="none", layer=1, batch_size=4)
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(4)], "audio_path": ravdess_clips[:4]})
    batched = extract(extractor, manifest, "parity", FeatureStore(tmp_path / "store"), workers=1)
    model = extractor.model()
    normalise = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000, return_attention_mask=True)
    for clip_id, path in zip(manifest["clip_id"], manifest["audio_path"]):
        values = normalise(load_audio(path, 16000), sampling_rate=16000, return_tensors="pt").input_values
        with torch.no_grad():
            expected = model(values, output_hidden_states=True).hidden_states[1][0].numpy()
        # Batched with padding and a mask vs alone: float32 summation order (1e-4 on unit-scale states).
        np.testing.assert_allclose(batched.arrays[clip_id], expected, rtol=0, atol=1e-4, err_msg=path)


def test_bert_frames_equal_minilm_hidden_states_pooled_per_word():
    from transformers import AutoModel, AutoTokenizer

    from mmer_bench.features.text import default_minilm_path

    texts = ["Kids are talking by the door.", "Dogs are sitting by the door, unbelievably!"]
    extractor = BertFrames(duration_source="words")
    manifest = pd.DataFrame({"clip_id": ["a", "b"], "text": texts})
    ours = extractor.extract_many(manifest, 1)  # one padded batch of both texts
    tokenizer = AutoTokenizer.from_pretrained(default_minilm_path(), local_files_only=True)
    model = AutoModel.from_pretrained(default_minilm_path(), local_files_only=True).eval()
    for clip_id, text in zip(["a", "b"], texts):
        encoded = tokenizer(text, return_tensors="pt")  # alone, no padding
        with torch.no_grad():
            states = model(**encoded, output_hidden_states=True).hidden_states
        summed = torch.stack(states[-4:]).sum(0)[0].numpy()
        ids = encoded.word_ids(0)
        words = [w for w in dict.fromkeys(ids) if w is not None]
        words = [w for w in words if any(c.isalnum() for c in text[slice(*encoded.word_to_chars(0, w))])]
        expected = np.stack([summed[[i for i, x in enumerate(ids) if x == w]].mean(0) for w in words])
        np.testing.assert_allclose(ours[clip_id], expected, rtol=0, atol=1e-4, err_msg=text)
