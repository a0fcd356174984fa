import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import make_ravdess, write_tone

from mmer_bench.corpora.base import CorpusDataModule
from mmer_bench.corpora.ravdess import Ravdess
from mmer_bench.features.audio import EGeMAPSFunctionals, EGeMAPSLLDs, LogMel
from mmer_bench.features.base import FeatureExtractionError, extract
from mmer_bench.features.face import AU_COLUMNS, AUMeans, AUSequence
from mmer_bench.features.store import FeatureStore


def tone_manifest(tmp_path, n=3):
    rows = []
    for i in range(n):
        path = tmp_path / f"clip{i}.wav"
        write_tone(path, seconds=1.0, freq=200 + 50 * i)
        rows.append({"clip_id": f"c{i}", "audio_path": str(path)})
    return pd.DataFrame(rows)


def test_logmel_shape_rate_and_determinism(tmp_path):
    manifest = tone_manifest(tmp_path)
    extractor = LogMel(n_mels=40, hop=160)
    a = extractor.extract_clip(manifest["audio_path"][0])
    assert a.dtype == np.float32 and a.shape == (1 + (16000 - 512) // 160, 40)  # 100 frames per second
    assert np.array_equal(a, extractor.extract_clip(manifest["audio_path"][0]))
    # A 200 Hz tone puts its energy in a low mel band, not the top one.
    assert a[:, :10].mean() > a[:, -5:].mean()


def test_egemaps_functionals_and_llds(tmp_path):
    path = tone_manifest(tmp_path, 1)["audio_path"][0]
    functionals = EGeMAPSFunctionals().extract_clip(path)
    assert functionals.shape == (88,) and functionals.dtype == np.float32
    llds = EGeMAPSLLDs().extract_clip(path)
    assert llds.shape[1] == 25 and 90 <= llds.shape[0] <= 100  # 10 ms frames over 1 s


def test_cache_key_follows_parameters_and_store_is_reused(tmp_path, monkeypatch):
    manifest = tone_manifest(tmp_path)
    assert LogMel(n_mels=40).cache_key("m") != LogMel(n_mels=64).cache_key("m")
    assert LogMel(n_mels=40).cache_key("m") != LogMel(n_mels=40).cache_key("other manifest")
    store = FeatureStore(tmp_path / "store")
    first = extract(LogMel(n_mels=40), manifest, "m", store, workers=2)
    calls = []
    monkeypatch.setattr(LogMel, "extract_many", lambda self, m, w: calls.append(1) or {})
    second = extract(LogMel(n_mels=40), manifest, "m", store, workers=2)
    assert not calls  # read back, not extracted again
    assert all(np.array_equal(first.arrays[c], second.arrays[c]) for c in first.arrays)


def test_bad_audio_is_reported_per_file(tmp_path):
    manifest = tone_manifest(tmp_path, 2)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    manifest = pd.concat([manifest, pd.DataFrame([
        {"clip_id": "bad", "audio_path": str(corrupt)},
        {"clip_id": "quiet", "audio_path": str(silent)},
        {"clip_id": "none", "audio_path": None},
    ])], ignore_index=True)
    features = extract(LogMel(), manifest, "m", FeatureStore(tmp_path / "store"), workers=1)
    assert set(features.arrays) == {"c0", "c1"}  # never a zero vector for a bad clip
    assert "corrupt.wav" in features.errors["bad"] and "cannot decode" in features.errors["bad"]
    assert "silent" in features.errors["quiet"]
    assert "no audio file" in features.errors["none"]


def test_au_means_from_openface_frames_and_table(tmp_path):
    frames = pd.DataFrame(np.ones((4, len(AU_COLUMNS))), columns=[f" {c}" for c in AU_COLUMNS])
    frames.insert(0, " success", [1, 1, 0, 1])
    frames.insert(0, "frame", range(1, 5))
    frames.iloc[2, 2:] = 100.0  # an untracked frame must not count
    frames.to_csv(tmp_path / "of.csv", index=False)
    table = pd.DataFrame([["01-01-01-01-01-01-01", *range(35)]], columns=["clip", *AU_COLUMNS])
    table.to_csv(tmp_path / "means.csv", index=False)
    manifest = pd.DataFrame([
        {"clip_id": "per-frame", "openface_path": str(tmp_path / "of.csv"), "au_means_path": None},
        {"clip_id": "01-01-01-01-01-01", "openface_path": None, "au_means_path": str(tmp_path / "means.csv")},
        {"clip_id": "01-08-01-01-01-01", "openface_path": None, "au_means_path": str(tmp_path / "means.csv")},
    ])
    features = extract(AUMeans(), manifest, "m", FeatureStore(tmp_path / "store"), workers=1)
    assert np.allclose(features.arrays["per-frame"], 1.0)
    assert np.array_equal(features.arrays["01-01-01-01-01-01"], np.arange(35, dtype=np.float32))
    assert "no AU row" in features.errors["01-08-01-01-01-01"]
    assert AUSequence().extract_clip(str(tmp_path / "of.csv")).shape == (3, 35)


def test_datamodule_names_bad_files_or_skips_them(tmp_path):
    make_ravdess(tmp_path, video=False, song=False)
    victim = tmp_path / "ravdess" / "Actor_03" / "03-01-05-01-02-01-03.wav"
    victim.write_bytes(b"truncated")
    corpus = Ravdess(tmp_path)
    manifest = corpus.manifest()
    fold = corpus.plan(manifest)[1]  # actor 3 is in fold1's test part
    store = FeatureStore(tmp_path / "store")
    dm = CorpusDataModule(corpus, manifest, fold, {"mel": "logmel"}, store=store, workers=1)
    with pytest.raises(FeatureExtractionError, match="03-01-05-01-02-01-03.wav"):
        dm.setup()
    dm = CorpusDataModule(corpus, manifest, fold, {"mel": "logmel"}, {"mel": "standard"}, store, skip_missing=True)
    dm.setup()
    assert list(dm.skipped) == ["01-05-01-02-01-03"]
    assert len(dm.datasets["test"]) == len(fold.test) - 1
    batch = next(iter(dm.test_dataloader()))
    assert batch["inputs"]["mel"].shape[:2] == batch["masks"]["mel"].shape
    assert batch["targets"]["emotion"].dtype.is_floating_point is False
