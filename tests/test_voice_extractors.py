"""crepe-pitch and silero-vad (the `speech` extra) on a generated tone, noise, and a real RAVDESS
clip when ../shared/data is there; their weights come from the installed packages, offline."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fixtures.media import write_tone

from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.voice import CrepePitch, SileroVAD
from mmer_bench.registry import EXTRACTORS

RATE = 16000


@pytest.fixture(scope="module")
def sounds(tmp_path_factory, speech_extra):
    root = tmp_path_factory.mktemp("voice")
    write_tone(root / "tone220.wav", seconds=1.0, freq=220.0)
    write_tone(root / "tone330_8k.wav", seconds=1.0, freq=330.0, rate=8000)  # resampled to 16 kHz
    noise = np.random.default_rng(0).normal(0, 0.05, RATE).astype(np.float32)
    sf.write(root / "noise.wav", noise, RATE)
    sf.write(root / "silent.wav", np.zeros(RATE, np.float32), RATE)
    return root


def test_crepe_pitch_of_tones_and_noise(sounds):
    tiny = CrepePitch(hop_seconds=0.02)
    tone = tiny.extract_clip(str(sounds / "tone220.wav"))
    assert tone.shape == (1 + RATE // 320, 2) and tone.dtype == np.float32  # centred frames, 20 ms
    f0, periodicity = tone[5:-5].T  # inner frames: the edges see the zero padding
    assert np.all(np.abs(f0 - 220.0) < 220.0 * 0.03)  # within half a semitone
    assert np.median(periodicity) > 0.6
    resampled = tiny.extract_clip(str(sounds / "tone330_8k.wav"))
    assert abs(np.median(resampled[5:-5, 0]) - 330.0) < 10.0
    noise = tiny.extract_clip(str(sounds / "noise.wav"))
    assert np.median(noise[:, 1]) < np.median(periodicity) - 0.3  # noise is not periodic
    assert CrepePitch(hop_seconds=0.01).extract_clip(str(sounds / "tone220.wav")).shape == (101, 2)
    assert CrepePitch().cache_key("m") != CrepePitch(model="full").cache_key("m")
    with pytest.raises(ValueError, match="tiny"):
        CrepePitch(model="large")


def test_silero_vad_on_tone_silence_and_through_the_store(sounds, tmp_path):
    vad = SileroVAD()
    tone = vad.extract_clip(str(sounds / "tone220.wav"))
    assert tone.shape == (int(np.ceil(RATE / 512)), 1) and tone.dtype == np.float32
    assert tone.max() < 0.5 and vad.speech_segments(str(sounds / "tone220.wav")) == []  # a tone is not speech
    assert np.array_equal(vad.extract_clip(str(sounds / "tone220.wav")), tone)  # no state carried over
    names = ["tone220", "noise", "silent"]
    manifest = pd.DataFrame({"clip_id": names, "audio_path": [str(sounds / f"{n}.wav") for n in names]})
    features = extract(vad, manifest, "m", FeatureStore(tmp_path), workers=2)
    assert np.array_equal(features.arrays["tone220"], tone)
    assert features.arrays["noise"].max() < 0.5
    assert "silent" in features.errors["silent"]  # all-zero audio is an error, as for every audio extractor
    assert {"crepe-pitch", "silero-vad"} <= set(EXTRACTORS.names())


@pytest.mark.shared_data
def test_silero_vad_and_crepe_on_real_speech(shared_data, speech_extra):
    # RAVDESS clips open and close with about a second of silence around the statement.
    path = str(shared_data / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.flac")
    vad = SileroVAD()
    probability = vad.extract_clip(path)[:, 0]
    assert probability[:10].max() < 0.5 and (probability > 0.5).mean() > 0.3
    [(start, end)] = vad.speech_segments(path)
    assert 0.5 < start < 1.5 and 2.0 < end < 3.5
    pitch = CrepePitch(hop_seconds=0.02).extract_clip(path)
    voiced = pitch[pitch[:, 1] > 0.5, 0]
    assert len(voiced) > 20 and 80 < np.median(voiced) < 300  # a male speaking voice
