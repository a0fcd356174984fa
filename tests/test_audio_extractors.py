"""Audio (ComParE, MELD 34 short-term features, VGGish, wav2vec2, video audio tracks) and GloVe
extractors, on files the tests generate: a sine tone, silence, a corrupt file and small mp4s."""

import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from fixtures.media import write_tone

from mmer_bench.data import collate
from mmer_bench.features.audio import (
    MELD_AUDIO34_NAMES,
    AudioError,
    ComParEFunctionals,
    ComParELLDs,
    EGeMAPSFunctionals,
    MeldAudio34,
    load_audio,
)
from mmer_bench.features.audio_models import VGGish, Wav2Vec2
from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.text import GloVe, tokenize
from mmer_bench.registry import EXTRACTORS, registered_modules

RATE = 16000


def write_mp4(path, seconds=1.0, freq=440.0, audio=True, rate=22050):
    """A tiny mpeg4 video (10 fps, 32x32) with a stereo AAC sine track unless ``audio`` is False."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        track = out.add_stream("aac", rate=rate, layout="stereo") if audio else None  # streams, then packets
        for i in range(int(seconds * 10)):
            image = np.full((32, 32, 3), 20 * i, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode())
        if track is not None:
            t = np.arange(int(seconds * rate)) / rate
            tone = np.tile(0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32), (2, 1))
            for start in range(0, tone.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]),
                                                   format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, start
                out.mux(track.encode(frame))
            out.mux(track.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_tone(root / "tone.wav", seconds=3.0, freq=440.0)
    write_tone(root / "short.wav", seconds=0.1, freq=440.0)
    write_tone(root / "long.wav", seconds=12.0, freq=300.0)
    sf.write(root / "silent.wav", np.zeros(RATE, np.float32), RATE)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    write_mp4(root / "talk.mp4")
    write_mp4(root / "mute.mp4", audio=False)
    return root


def dominant_frequency(audio, rate=RATE):
    spectrum = np.abs(np.fft.rfft(audio))
    return np.argmax(spectrum) * rate / len(audio)


def manifest_of(media, names, column="audio_path"):
    return pd.DataFrame({"clip_id": names, column: [str(media / n) for n in names]})


# --- the audio track of video files -------------------------------------------------------------

def test_load_audio_decodes_the_audio_track_of_mp4_at_the_requested_rate(media):
    for rate in (16000, 8000):
        audio = load_audio(str(media / "talk.mp4"), rate)
        assert audio.dtype == np.float32
        # 1 s of tone plus the AAC encoder's priming (at most 2048 samples at 22.05 kHz).
        assert rate <= audio.size <= rate * (1 + 2048 / 22050) + 1
        assert abs(dominant_frequency(audio, rate) - 440) < 5
        assert 0.25 < np.abs(audio).max() < 0.35  # channels averaged, not summed


def test_video_without_audio_or_corrupt_is_a_clear_error(media):
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(str(media / "mute.mp4"))
    with pytest.raises(AudioError, match="cannot decode audio"):
        load_audio(str(media / "corrupt.mp4"))


# --- openSMILE ComParE 2016 --------------------------------------------------------------------

def test_compare_functionals_and_llds(media):
    path = str(media / "tone.wav")
    functionals = ComParEFunctionals().extract_clip(path)
    assert functionals.shape == (6373,) and functionals.dtype == np.float32
    assert np.array_equal(functionals, ComParEFunctionals().extract_clip(path))
    llds = ComParELLDs().extract_clip(path)
    assert llds.dtype == np.float32 and llds.shape[1] == 65 and 290 <= llds.shape[0] <= 300  # 10 ms frames
    # One implementation, three feature sets: the class attribute picks the openSMILE set.
    assert issubclass(ComParEFunctionals, EGeMAPSFunctionals)
    assert ComParEFunctionals().cache_key("m") != EGeMAPSFunctionals().cache_key("m")


# --- MELD's 34 short-term features --------------------------------------------------------------

def test_meld_audio34_frames_shape_and_values(media):
    extractor = MeldAudio34()
    features = extractor.extract_clip(str(media / "tone.wav"))
    # 0.2 s windows every 0.1 s over 3 s: 10 frames per second, only real frames.
    assert features.shape == (1 + (3 * RATE - 3200) // 1600, 34) == (29, 34) and features.dtype == np.float32
    assert np.array_equal(features, extractor.extract_clip(str(media / "tone.wav")))
    named = dict(zip(MELD_AUDIO34_NAMES, features[10]))
    assert named["zcr"] == pytest.approx(2 * 440 / RATE, rel=0.02)
    assert named["spectral_centroid"] == pytest.approx(440 / 8000, rel=0.05)  # fraction of Nyquist
    assert named["energy"] == pytest.approx(0.5, rel=0.01)  # peak-normalised sine
    # pyAudioAnalysis's chroma keeps only the last bin of each semitone: a tone exactly on bin 88
    # (440 Hz at 5 Hz a bin) leaves the A slot, which holds bin 89, all but empty.
    assert features[10, 21:33].max() < 1e-6
    assert named["chroma_std"] == pytest.approx(np.std(features[10, 21:33]), rel=1e-4)


def test_meld_audio34_caps_frames_and_pads_short_clips(media):
    assert MeldAudio34().extract_clip(str(media / "long.wav")).shape == (100, 34)
    assert MeldAudio34(max_frames=20).extract_clip(str(media / "long.wav")).shape == (20, 34)
    assert MeldAudio34().extract_clip(str(media / "short.wav")).shape == (1, 34)
    assert MeldAudio34().cache_key("m") != MeldAudio34(max_frames=20).cache_key("m")


def test_meld_audio34_sequences_are_padded_and_masked_by_the_collate(media):
    features = extract(MeldAudio34(), manifest_of(media, ["tone.wav", "long.wav"]), "m",
                       FeatureStore(media / "store-collate"), workers=1)
    items = [{"clip_id": c, "inputs": {"a": features.arrays[c].copy()}, "targets": {}} for c in ("tone.wav", "long.wav")]
    batch = collate(items)
    assert batch["inputs"]["a"].shape == (2, 100, 34)
    assert batch["masks"]["a"].sum(dim=1).tolist() == [29, 100]  # padding is marked, never taken as audio


# --- VGGish -------------------------------------------------------------------------------------

VGGISH = VGGish()  # one instance (it keeps its model): a VGGish build takes a second or more


def test_vggish_windows_hop_and_untrained_warning(media, caplog):
    path = str(media / "tone.wav")
    with caplog.at_level(logging.WARNING):
        embeddings = VGGish().extract_clip(path)  # a new instance: its model is built (and warns) here
    assert "UNTRAINED" in caplog.text
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32  # 0.96 s windows over 3 s
    assert np.array_equal(embeddings, VGGISH.extract_clip(path))  # seeded random init
    assert VGGISH.extract_clip(str(media / "short.wav")).shape == (1, 128)  # padded to one window
    assert VGGish(hop_seconds=0.48).extract_clip(path).shape == (5, 128)  # (298 - 96) // 48 + 1
    assert VGGish(hop_seconds=0.48).cache_key("m") != VGGISH.cache_key("m")
    assert VGGish(batch_size=3).cache_key("m") == VGGISH.cache_key("m")  # how, not what


def test_vggish_loads_a_local_checkpoint_without_the_network(media, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    torch.save(VGGISH.model().state_dict(), tmp_path / "vggish.pth")
    path = str(media / "tone.wav")
    # The checkpoint, not the seed, decides the weights.
    loaded = VGGish(checkpoint=str(tmp_path / "vggish.pth"), seed=1)
    assert np.array_equal(loaded.extract_clip(path), VGGISH.extract_clip(path))
    assert loaded.cache_key("m") != VGGISH.cache_key("m")


# --- wav2vec2 -----------------------------------------------------------------------------------

def test_wav2vec2_pooling_layers_and_frame_rate(media):
    path = str(media / "tone.wav")
    pooled = Wav2Vec2(tiny_random=True).extract_clip(path)
    assert pooled.shape == (32,) and pooled.dtype == np.float32
    frames = Wav2Vec2(tiny_random=True, pooling="none").extract_clip(path)
    assert frames.shape == (149, 32)  # 20 ms frames (strides multiply to 320 samples)
    assert np.allclose(frames.mean(axis=0), pooled, atol=1e-6)
    assert Wav2Vec2(tiny_random=True, pooling="none").kind == "sequence" and Wav2Vec2(tiny_random=True).kind == "vector"
    first = Wav2Vec2(tiny_random=True, layer=0).extract_clip(path)
    assert not np.allclose(first, pooled)
    assert np.array_equal(first, Wav2Vec2(tiny_random=True, layer=0).extract_clip(path))
    assert Wav2Vec2(tiny_random=True, layer=1).cache_key("m") != Wav2Vec2(tiny_random=True).cache_key("m")
    with pytest.raises(ValueError, match="out of range"):
        Wav2Vec2(tiny_random=True, layer=3).extract_clip(path)
    with pytest.raises(ValueError, match="model_path"):
        Wav2Vec2()


def test_wav2vec2_batches_match_single_clips_and_load_from_a_local_folder(media, tmp_path):
    names = ["tone.wav", "long.wav", "short.wav", "talk.mp4"]
    extractor = Wav2Vec2(tiny_random=True, pooling="none", batch_size=4)
    batched = extract(extractor, manifest_of(media, names), "m", FeatureStore(tmp_path / "store"), workers=1)
    for name in names:
        single = extractor.extract_clip(str(media / name))
        assert batched.arrays[name].shape == single.shape
        assert np.allclose(batched.arrays[name], single, atol=1e-4)
    # The real loading path (from_pretrained on a local folder), with a model saved here.
    extractor.model().save_pretrained(tmp_path / "w2v")
    local = Wav2Vec2(model_path=str(tmp_path / "w2v"), pooling="none")
    assert np.allclose(local.extract_clip(str(media / "tone.wav")), extractor.extract_clip(str(media / "tone.wav")),
                       atol=1e-5)


# --- errors through extract, for every audio extractor ----------------------------------------

@pytest.mark.parametrize("extractor", [ComParELLDs(), MeldAudio34(), VGGISH, Wav2Vec2(tiny_random=True)],
                         ids=lambda e: e.name)
def test_bad_files_are_error_entries_naming_the_file(media, tmp_path, extractor):
    names = ["tone.wav", "corrupt.wav", "silent.wav", "mute.mp4", "talk.mp4"]
    features = extract(extractor, manifest_of(media, names), "m", FeatureStore(tmp_path / "store"), workers=1)
    assert set(features.arrays) == {"tone.wav", "talk.mp4"}  # never a zero vector for a bad clip
    assert "corrupt.wav" in features.errors["corrupt.wav"] and "cannot decode" in features.errors["corrupt.wav"]
    assert "silent.wav" in features.errors["silent.wav"] and "silent" in features.errors["silent.wav"]
    assert "mute.mp4" in features.errors["mute.mp4"] and "no audio track" in features.errors["mute.mp4"]


# --- GloVe --------------------------------------------------------------------------------------

def test_tokenizer_splits_clitics_numbers_and_punctuation():
    assert tokenize("Oh my God, I can't believe it’s 3.5!") == [
        "oh", "my", "god", ",", "i", "ca", "n't", "believe", "it", "'s", "3.5", "!"]
    assert tokenize("'Hi' you'll", keep_punctuation=False) == ["hi", "you", "'ll"]
    assert tokenize("Ross", lowercase=False) == ["Ross"]


def test_glove_packaged_vectors_oov_and_errors(tmp_path):
    manifest = pd.DataFrame({"clip_id": ["a", "b", "c", "d"],
                             "text": ["I can't believe it xqzzyq!", "xqzzyq qqwzx", "", None]})
    extractor = GloVe()
    features = extract(extractor, manifest, "m", FeatureStore(tmp_path / "store"), workers=1)
    vectors = features.arrays["a"]
    assert vectors.shape == (6, 50) and vectors.dtype == np.float32  # 7 tokens, one skipped
    assert extractor.oov_counts == {"a": 1, "b": 2} and extractor.oov_words["xqzzyq"] == 2
    assert "none of the tokens" in features.errors["b"] and "xqzzyq" in features.errors["b"]
    assert "has no text" in features.errors["c"] and "has no text" in features.errors["d"]
    assert np.array_equal(GloVe().extract_clip("I can't"), vectors[:3])
    assert np.linalg.norm(vectors[0] - GloVe().extract_clip("i")[0]) == 0  # lowercased


def test_glove_text_file(tmp_path):
    (tmp_path / "vectors.txt").write_text("hello 1 2 3\n. . . 4 5 6\nworld -1 0 0.5\nHello 9 9 9\n")
    extractor = GloVe(path=str(tmp_path / "vectors.txt"))
    out = extractor.extract_clip("Hello, world")
    assert out.dtype == np.float32 and np.array_equal(out, [[1, 2, 3], [-1, 0, 0.5]])
    assert extractor.oov_counts == {"text": 1}  # the comma
    cased = GloVe(path=str(tmp_path / "vectors.txt"), lowercase=False)
    assert np.array_equal(cased.extract_clip("Hello")[0], [9, 9, 9])
    assert cased.cache_key("m") != extractor.cache_key("m") != GloVe().cache_key("m")


def test_new_extractors_are_registered():
    assert {"mmer_bench.features.audio_models", "mmer_bench.features.text"} <= registered_modules()
    assert {"compare", "compare-lld", "meld-audio34", "vggish", "wav2vec2", "glove"} <= set(EXTRACTORS.names())
    assert EXTRACTORS.get("glove").source_column == "text"
