"""Nothing silent (issue 14): damaged media, a damaged feature cache, bad file names and data
roots are reported with the file and the problem, or skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.media import write_tone
from fixtures.ravdess import make_ravdess

from mmer_bench.corpora.ravdess import Ravdess
from mmer_bench.corpora.synthetic import Synthetic
from mmer_bench.data import CorpusDataModule
from mmer_bench.features.audio import AudioError, LogMel, load_audio
from mmer_bench.features.base import FeatureExtractionError, extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.registry import CORPORA


def truncate(path, fraction=0.4):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# --- case 1: a short read is damage ------------------------------------------------------------

def test_truncated_wav_is_damage_naming_the_file_and_both_lengths(tmp_path):
    path = tmp_path / "clip.wav"
    write_tone(path, seconds=1.0)
    truncate(path)
    with pytest.raises(AudioError, match=r"header announces 16000 frames \(1\.000 s\) but only \d+ frames"):
        load_audio(str(path))


def test_mp4_audio_track_cut_at_a_packet_boundary_is_damage(tmp_path):
    """A cut between two packets decodes without an error: only the track's declared duration
    shows that most of it is missing."""
    import av

    rate, seconds = 22050, 3.0
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:  # header first, as streamed files
        track = out.add_stream("aac", rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(track.encode(frame))
        out.mux(track.encode())
    assert abs(load_audio(str(path), rate).size - seconds * rate) < 0.05 * rate  # intact: accepted
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.audio[0]) if p.size]
    pos, size = packets[len(packets) * 2 // 5]
    path.write_bytes(path.read_bytes()[: pos + size])
    with pytest.raises(AudioError, match=r"header announces 66150 frames \(3\.000 s\) but only \d+ frames \(1\.\d+ s\)"):
        load_audio(str(path))


def test_truncated_ravdess_wav_stops_the_run_or_is_skipped_and_counted(tmp_path):
    make_ravdess(tmp_path, video=False, song=False)
    victim = tmp_path / "ravdess" / "Actor_03" / "03-01-05-01-02-01-03.wav"
    truncate(victim)
    corpus = Ravdess(tmp_path)
    manifest = corpus.manifest()
    fold = corpus.plan(manifest)[1]  # actor 3 is in fold1's test part
    store = FeatureStore(tmp_path / "store")
    dm = CorpusDataModule(corpus, manifest, fold, {"mel": "logmel"}, store=store, workers=1)
    with pytest.raises(FeatureExtractionError, match=r"03-01-05-01-02-01-03\.wav.*truncated"):
        dm.setup()
    dm = CorpusDataModule(corpus, manifest, fold, {"mel": "logmel"}, store=store, skip_missing=True)
    dm.setup()
    assert list(dm.skipped) == ["01-05-01-02-01-03"]
    assert len(dm.datasets["test"]) == len(fold.test) - 1


def test_truncated_synthetic_wav_is_reported(tmp_path):
    corpus = Synthetic(tmp_path)
    manifest = corpus.manifest()
    victim = manifest["audio_path"][5]
    truncate(Path(victim))
    manifest = corpus.manifest()
    features = extract(LogMel(), manifest, corpus.manifest_hash(manifest), FeatureStore(tmp_path / "store"), workers=1)
    clip = manifest["clip_id"][5]
    assert list(features.errors) == [clip]
    assert victim in features.errors[clip] and "truncated" in features.errors[clip]


# --- case 2: a damaged store entry is recomputed, never used -------------------------------------

def _tones(tmp_path, n=4):
    rows = []
    for i in range(n):
        path = tmp_path / f"clip{i}.wav"
        write_tone(path, seconds=1.0, freq=200 + 50 * i)
        rows.append({"clip_id": f"c{i}", "audio_path": str(path)})
    return pd.DataFrame(rows)


def test_overwritten_values_in_a_stored_file_are_detected_and_recomputed(tmp_path, caplog):
    manifest = _tones(tmp_path)
    store = FeatureStore(tmp_path / "store")
    first = extract(LogMel(), manifest, "m", store, workers=1)
    path = store.path("logmel", LogMel().cache_key("m"))
    data = bytearray(path.read_bytes())
    # Overwrite 16 float values of one clip in the middle of its stored bytes.
    at = bytes(data).index(first.arrays["c2"].tobytes()[:64])
    data[at + 400 : at + 464] = np.full(16, 7.0, np.float32).tobytes()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = extract(LogMel(), manifest, "m", store, workers=1)
    assert str(path) in caplog.text and "checksum" in caplog.text and "extracting logmel again" in caplog.text
    assert all(np.array_equal(again.arrays[c], first.arrays[c]) for c in first.arrays)
    # The entry was rewritten: a third read uses the store without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = extract(LogMel(), manifest, "m", store, workers=1)
    assert not caplog.text and np.array_equal(third.arrays["c2"], first.arrays["c2"])


@pytest.mark.parametrize("damage", ["truncate", "zero", "middle"])
def test_unreadable_store_files_are_named_and_recomputed(tmp_path, caplog, damage):
    manifest = _tones(tmp_path, 3)
    store = FeatureStore(tmp_path / "store")
    first = extract(LogMel(), manifest, "m", store, workers=1)
    path = store.path("logmel", LogMel().cache_key("m"))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "zero":
        data = bytearray(len(data))
    else:  # bytes in the middle (page headers, offsets, values)
        data[len(data) // 3 : len(data) // 3 + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = extract(LogMel(), manifest, "m", store, workers=1)
    assert str(path) in caplog.text
    assert all(np.array_equal(again.arrays[c], first.arrays[c]) for c in first.arrays)


# --- case 3 (data root) and case 6 (errors name the file) ----------------------------------------

@pytest.mark.parametrize("name", CORPORA.names())
def test_a_data_root_that_does_not_exist_is_an_error_for_every_corpus(tmp_path, name):
    from mmer_bench.corpora.base import CorpusNotFoundError

    missing = tmp_path / "typo"
    with pytest.raises(CorpusNotFoundError, match=f"data root {missing} does not exist"):
        CORPORA.get(name)(missing).manifest()
    assert not missing.exists()  # nothing generated there


def test_synthetic_file_with_an_invalid_emotion_code_is_named(tmp_path):
    from mmer_bench.corpora.base import CorpusFormatError

    corpus = Synthetic(tmp_path)
    first = Path(corpus.manifest()["audio_path"][0])
    bad = first.with_name(first.name[:3] + "07" + first.name[5:])
    first.rename(bad)
    with pytest.raises(CorpusFormatError, match=f"{bad}: emotion code 07 is outside 00-05"):
        corpus.manifest()


# --- mmer describe: damaged files, --check decodes and verifies checksums ------------------------

def test_describe_reports_damage_and_check_decodes_every_file_and_verifies_checksums(tmp_path, capsys):
    import hashlib

    from mmer_bench import cli

    make_ravdess(tmp_path, video=False, song=False)
    root = tmp_path / "ravdess"
    files = sorted(root.glob("Actor_*/*.wav"))
    (root / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(root)}\n"
                                             for p in files))
    assert cli.main(["describe", "ravdess", "--data-root", str(tmp_path), "--check", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"media check: {len(files)} files decoded, 0 with problems" in out
    assert f"{root / 'SHA256SUMS'}: {len(files)} of {len(files)} files match" in out

    cut, altered, flac = files[3], files[7], files[11]
    truncate(cut)
    data = bytearray(altered.read_bytes())
    data[-200:-100] = b"\x07" * 100  # still decodes: only the checksum can tell
    altered.write_bytes(bytes(data))
    # A FLAC cut short: its header is fine, only decoding shows it.
    import soundfile as sf

    samples, rate = sf.read(flac)
    flac.unlink()
    flac = flac.with_suffix(".flac")
    sf.write(flac, samples, rate)
    truncate(flac, 0.5)

    assert cli.main(["describe", "ravdess", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "damaged or missing media files (headers only; --check decodes every file): 1" in out
    assert f"{cut}: truncated: its header announces" in out and str(flac) not in out

    assert cli.main(["describe", "ravdess", "--data-root", str(tmp_path), "--check", "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"media check: {len(files)} files decoded, 2 with problems" in out
    assert f"{cut}: AudioError: the audio is truncated: its header announces" in out and f"{flac}: AudioError" in out
    assert f"{altered}: sha256" in out and "does not match" in out
    assert f"{files[11]}: missing" in out  # the listed WAV that became a FLAC


@pytest.mark.slow
def test_bench_on_a_truncated_synthetic_wav_stops_or_skips_and_counts(tmp_path, capsys):
    """The issue's case 1 end to end: `mmer bench` exited 0 with n_skipped 0 on a truncated WAV."""
    from mmer_bench import cli

    manifest = Synthetic(tmp_path).manifest()
    victim = Path(manifest["audio_path"][10])
    truncate(victim)
    args = ["bench", "synthetic", "--data-root", str(tmp_path), "--methods", "egemaps-mlp", "--folds", "fold0",
            "--seeds", "0", "--loggers", "csv", "--workers", "2"]
    # The runner reports the failed job (and keeps the others) with the extraction error in it.
    with pytest.raises((RuntimeError, FeatureExtractionError), match=f"{victim}: AudioError: the audio is truncated"):
        cli.main([*args, "--out", str(tmp_path / "stop")])
    assert cli.main([*args, "--out", str(tmp_path / "skip"), "--skip-missing"]) == 0
    results = pd.read_parquet(tmp_path / "skip" / "results.parquet")
    assert set(results["n_skipped"]) == {1}
    assert "Clips skipped for missing or unreadable features (summed over jobs): 1" in capsys.readouterr().out
