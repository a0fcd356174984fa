import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fixtures.media import write_tone
from fixtures.ravdess import make_ravdess

from mmer_bench.corpora.ravdess import Ravdess
from mmer_bench.data import CorpusDataModule
from mmer_bench.features.audio import EGeMAPSFunctionals, EGeMAPSLLDs, LogMel, mel_filterbank
from mmer_bench.features.base import FeatureExtractionError, extract
from mmer_bench.features.face import (
    AU_COLUMNS,
    OPENFACE_GROUPS,
    AUMeans,
    AUSequence,
    OpenFaceSequence,
    read_openface,
)
from mmer_bench.features.store import FeatureStore, StoreEntryError, StoreWriter


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


def test_logmel_through_the_store_matches_single_clips_and_a_float64_reference(tmp_path):
    manifest = tone_manifest(tmp_path, 5)
    store = FeatureStore(tmp_path / "a")
    serial = extract(LogMel(n_mels=128), manifest, "m", store, workers=2)
    assert list(serial.arrays) == list(manifest["clip_id"])  # manifest order
    reread = extract(LogMel(n_mels=128), manifest, "m", store, workers=2)
    for clip_id, path in zip(manifest["clip_id"], manifest["audio_path"]):
        assert np.array_equal(serial.arrays[clip_id], LogMel(n_mels=128).extract_clip(path))
        assert np.array_equal(reread.arrays[clip_id], serial.arrays[clip_id])
    # The float32 STFT and sparse mel product agree with a float64 dense computation.
    samples = sf.read(manifest["audio_path"][0], dtype="float64")[0]
    frames = np.lib.stride_tricks.sliding_window_view(samples, 512)[::160] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    reference = np.log(power @ mel_filterbank(16000, 512, 128, 0.0, 8000.0).astype(np.float64).T + 1e-6)
    assert np.abs(serial.arrays["c0"] - reference).max() < 1e-3


def test_store_streams_row_groups_reads_them_back_and_stays_atomic(tmp_path):
    store = FeatureStore(tmp_path)
    rng = np.random.default_rng(0)
    results = {f"c{i}": rng.standard_normal((int(rng.integers(1, 50)), 7)).astype(np.float32) for i in range(30)}
    results["bad"] = "bad.wav: AudioError: cannot decode audio"
    with StoreWriter(store.path("x", "k"), {"kind": "sequence"}, group_bytes=1000) as writer:
        for clip_id, value in results.items():
            writer.add(clip_id, value)
    assert pq.ParquetFile(store.path("x", "k")).num_row_groups > 3
    back = store.read("x", "k")
    assert back.errors == {"bad": results["bad"]}
    assert list(back.arrays) == [c for c in results if c != "bad"]
    assert all(np.array_equal(back.arrays[c], results[c]) for c in back.arrays)
    # An exception while extracting leaves no entry and no temporary file behind.
    with pytest.raises(KeyboardInterrupt), store.writer("x", "interrupted", {}) as writer:
        writer.add("c0", results["c0"])
        raise KeyboardInterrupt
    assert not store.has("x", "interrupted") and sorted(p.name for p in (tmp_path / "x").iterdir()) == ["k.parquet"]
    # A write that fails in the background thread surfaces, and nothing is stored.
    with pytest.raises(RuntimeError, match="writing"), store.writer("x", "broken", {}) as writer:
        writer.add("c0", np.zeros((2, 2), np.float64))
        writer.add("c1", np.array(["not a number"]))  # cannot become float32: the writer thread fails
    assert not store.has("x", "broken") and sorted(p.name for p in (tmp_path / "x").iterdir()) == ["k.parquet"]


def write_openface_csv(path, n_frames=12, untracked=(3, 7), seed=0):
    """A per-frame CSV in OpenFace 2.2 FeatureExtraction's full layout and column order (714
    columns, ", " between fields). Untracked frames hold zeros, as OpenFace writes them."""
    rng = np.random.default_rng(seed)
    columns = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        + OPENFACE_GROUPS["gaze"]
        + [f"eye_lmk_{a}_{i}" for a in "xyXYZ" for i in range(56)]
        + OPENFACE_GROUPS["pose"] + OPENFACE_GROUPS["landmarks"] + OPENFACE_GROUPS["landmarks_3d"]
        + ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
        + AU_COLUMNS
    )
    values = rng.uniform(0.5, 2.0, (n_frames, len(columns))).round(3)
    values[:, 0] = np.arange(1, n_frames + 1)
    values[:, 1] = 0
    values[:, 2] = np.arange(n_frames) / 30.0
    values[:, 3] = 0.95
    values[:, 4] = 1
    for i in untracked:
        values[i, 3:] = 0.0  # confidence, success and every feature 0
    rows = [", ".join(f"{v:g}" for v in row) for row in values]
    path.write_text(", ".join(columns) + "\n" + "\n".join(rows) + "\n")
    return pd.DataFrame(values, columns=columns)


def test_openface_sequence_groups_drop_untracked_frames(tmp_path):
    truth = write_openface_csv(tmp_path / "of.csv", n_frames=12, untracked=(3, 7))
    tracked = truth[truth["success"] == 1]
    gaze_pose = OpenFaceSequence(groups=("gaze", "pose"))
    out = gaze_pose.extract_clip(str(tmp_path / "of.csv"))
    assert out.shape == (10, 14) and out.dtype == np.float32
    assert np.allclose(out, tracked[OPENFACE_GROUPS["gaze"] + OPENFACE_GROUPS["pose"]].to_numpy())
    assert not np.any(np.all(out == 0, axis=1))  # the zero rows of untracked frames are gone
    assert gaze_pose.columns == OPENFACE_GROUPS["gaze"] + OPENFACE_GROUPS["pose"]
    every = OpenFaceSequence(groups="au_r,au_c,landmarks,landmarks_3d,timestamp")
    out = every.extract_clip(str(tmp_path / "of.csv"))
    assert out.shape == (10, 17 + 18 + 136 + 204 + 1)
    assert np.allclose(out[:, -1], tracked["timestamp"])  # when each kept frame was
    assert np.allclose(out[:, :35], tracked[AU_COLUMNS])
    # The AUs agree with the au-sequence extractor on the same file.
    assert np.allclose(OpenFaceSequence(groups=("au_r", "au_c")).extract_clip(str(tmp_path / "of.csv")),
                       AUSequence().extract_clip(str(tmp_path / "of.csv")))
    counted = read_openface(str(tmp_path / "of.csv"), OPENFACE_GROUPS["pose"])
    assert (counted.frames, counted.dropped) == (12, 2)
    assert read_openface(str(tmp_path / "of.csv"), OPENFACE_GROUPS["pose"], min_confidence=0.99).dropped == 12
    assert OpenFaceSequence(groups=("gaze",)).cache_key("m") != OpenFaceSequence(groups=("pose",)).cache_key("m")
    with pytest.raises(ValueError, match="head"):
        OpenFaceSequence(groups=("head",))


def test_openface_sequence_errors_name_the_file(tmp_path):
    write_openface_csv(tmp_path / "ok.csv")
    write_openface_csv(tmp_path / "lost.csv", n_frames=10, untracked=range(10))
    write_openface_csv(tmp_path / "shaky.csv", n_frames=10, untracked=range(6))
    truth = write_openface_csv(tmp_path / "au_only.csv")
    truth[["frame", "timestamp", "confidence", "success", *AU_COLUMNS]].to_csv(tmp_path / "au_only.csv", index=False)
    (tmp_path / "not_csv.csv").write_bytes(b"\x00\x01\x02")
    names = ["ok", "lost", "shaky", "au_only", "not_csv"]
    manifest = pd.DataFrame({"clip_id": names, "openface_path": [str(tmp_path / f"{n}.csv") for n in names]})
    manifest.loc[len(manifest)] = ["none", None]
    features = extract(OpenFaceSequence(min_tracked=0.5), manifest, "m", FeatureStore(tmp_path / "store"), workers=1)
    assert set(features.arrays) == {"ok"}
    errors = features.errors
    assert "lost.csv" in errors["lost"] and "0 of 10 frames" in errors["lost"]
    assert "shaky.csv" in errors["shaky"] and "4 of 10 frames" in errors["shaky"] and "min_tracked" in errors["shaky"]
    assert "au_only.csv" in errors["au_only"] and "gaze_0_x" in errors["au_only"] and "groups gaze, pose" in errors["au_only"]
    assert errors["au_only"].count("au_only.csv") == 1  # named once, not once per layer
    assert "not_csv.csv" in errors["not_csv"]
    assert "no openface file" in errors["none"]


def test_store_refuses_entries_written_before_checksums(tmp_path):
    """An entry of the earlier list-column layout carries no checksums: it cannot be verified,
    so reading it raises StoreEntryError naming the file (``extract`` then recomputes it)."""
    store = FeatureStore(tmp_path)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    legacy = pa.table({
        "clip_id": ["a"],
        "shape": pa.array([[2, 3]], pa.list_(pa.int32())),
        "values": pa.array([a.ravel().tolist()], pa.large_list(pa.float32())),
        "error": pa.array([None], pa.string()),
    })
    store.path("x", "old").parent.mkdir(parents=True)
    pq.write_table(legacy, store.path("x", "old"))
    with pytest.raises(StoreEntryError, match="old.parquet.*before the store kept checksums"):
        store.read("x", "old")
    # what the runner checks before the jobs start: redo it there, not in every job that reads it
    assert store.has("x", "old") and not store.has_current("x", "old") and not store.has_current("x", "absent")
    store.write("x", "new", {"a": a}, {})
    assert store.has_current("x", "new")
