"""MELD: parsing of the release CSVs, text repair, the official split, leakage checks, the MiniLM
text extractor and the text-mlp baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.meld import make_meld, rewrite_cell

from mmer_bench import cli
from mmer_bench.corpora.base import Corpus, CorpusNotFoundError
from mmer_bench.corpora.meld import EMOTIONS, SENTIMENTS, Meld, MeldFormatError, repair_text
from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.text import MiniLM
from mmer_bench.protocols import Fold, LeakageError, check_disjoint
from mmer_bench.runner import BenchConfig, run_bench


def test_fixture_is_encoded_like_the_first_release(meld_root):
    raw = (meld_root / "meld" / "train_sent_emo.csv").read_bytes()
    assert b"I\x92m so happy" in raw and b"Oh\x85 I didn\x92t" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_parse_release_layout(meld_root):
    corpus = Meld(meld_root)
    manifest = corpus.manifest()
    assert list(manifest["split"].value_counts()[["train", "val", "test"]]) == [12, 5, 6]
    first = manifest.iloc[0]
    assert first["clip_id"] == "train_dia0_utt0" and first["dialogue"] == "train_0" and first["utterance"] == 0
    assert first["subject"] == "Ross" and first["text"] == "I'm so happy for you!"
    assert (first["emotion"], first["sentiment"]) == (EMOTIONS.index("joy"), SENTIMENTS.index("positive"))
    # Windows-1252 (train) and UTF-8 (val, test) files give the same repaired text.
    assert manifest.loc[1, "text"] == manifest.loc[manifest["clip_id"] == "val_dia0_utt1"].iloc[0]["text"]
    assert manifest.loc[1, "text"] == "Oh... I didn't know that."
    # Dialogue ids restart per split; the names do not collide.
    assert {"train_0", "val_0", "test_0"} <= set(manifest["dialogue"])
    assert manifest["clip_id"].is_unique
    # One clip file exists; the rest are counted as missing.
    assert manifest["video_path"].notna().sum() == 1
    assert manifest.loc[0, "video_path"].endswith("meld/train_splits/dia0_utt0.mp4")
    assert corpus.missing_video == {"train": 11, "val": 5, "test": 6}
    assert corpus.available_features(manifest) >= {"minilm", "egemaps", "meld-audio34"}  # audio from the mp4
    assert manifest.loc[0, "audio_path"] == manifest.loc[0, "video_path"]


def test_official_split_on_fixture(meld_root):
    corpus = Meld(meld_root)
    manifest = corpus.manifest()
    (fold,) = corpus.plan(manifest)  # speakers recur in every split: that must not count as leakage
    assert (fold.name, len(fold.train), len(fold.val), len(fold.test)) == ("official", 12, 5, 6)
    assert set(manifest.set_index("clip_id").loc[list(fold.val), "split"]) == {"val"}
    assert "subject" not in corpus.group_columns and "dialogue" in corpus.group_columns


def test_a_dialogue_across_parts_is_leakage(meld_root):
    corpus = Meld(meld_root)
    manifest = corpus.manifest()
    (fold,) = corpus.folds(manifest)
    # Move one utterance of dialogue train_1 into the test part.
    moved = "train_dia1_utt0"
    leaking = Fold("leaky", tuple(c for c in fold.train if c != moved), fold.val, (*fold.test, moved))
    with pytest.raises(LeakageError, match="dialogue"):
        check_disjoint(manifest, [leaking], corpus.group_columns)
    # A re-split copy whose dialogue spans two splits is refused before any fold is built.
    manifest.loc[manifest["clip_id"] == moved, "split"] = "test"
    with pytest.raises(LeakageError, match="train_1"):
        corpus.folds(manifest)


@pytest.mark.parametrize(
    "damaged, repaired",
    [
        ("I\x92m fine\x85", "I'm fine..."),  # Windows-1252 bytes read as Latin-1 (C1 controls)
        ("\x91Hi\x92 \x93there\x94 \x96 no \x97 yes", "'Hi' \"there\" - no - yes"),
        ("it\u00e2\u20ac\u2122s", "it's"),  # mojibake: UTF-8 read as Windows-1252
        ("\u00e2\u20ac\u0153Hi\u00e2\u20ac\x9d", '"Hi"'),
        ("Paul\u00e2\u20ac\u2122s Caf\u00c3\u00a9", "Paul's Café"),
        ("It\u2019s \u201cfine\u201d\u2026", 'It\'s "fine"...'),  # the current UTF-8 release
        ("Nestl\u00e9 Toll House?", "Nestlé Toll House?"),  # real accents are kept
        ("\u00dc\x92s", "Ü's"),  # a Windows-1252 "Ü’s", not UTF-8 for a Syriac letter
        ("  a\u00a0b  ", "a b"),
    ],
)
def test_repair_text(damaged, repaired):
    assert repair_text(damaged) == repaired


def test_unknown_emotion_names_file_and_line(meld_root):
    path = meld_root / "meld" / "dev_sent_emo.csv"
    rewrite_cell(path, 3, "Emotion", "happiness")
    with pytest.raises(MeldFormatError, match=r"dev_sent_emo\.csv, line 3 \(Sr No\. 14\): unknown emotion label 'happiness'"):
        Meld(meld_root).manifest()


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("Dialogue_ID", "x7", r"test_sent_emo\.csv, line 4 .*Dialogue_ID 'x7' is not an integer"),
        ("Sentiment", "mixed", r"test_sent_emo\.csv, line 4 .*unknown sentiment label 'mixed'"),
        ("Dialogue_ID", "0", r"test_sent_emo\.csv, line 4 .*dia0_utt0 is already on line 2"),
    ],
)
def test_malformed_rows_name_file_and_line(meld_root, column, value, message):
    rewrite_cell(meld_root / "meld" / "test_sent_emo.csv", 4, column, value)
    with pytest.raises(MeldFormatError, match=message):
        Meld(meld_root).manifest()


def test_wrong_field_count_and_missing_column(meld_root):
    path = meld_root / "meld" / "test_sent_emo.csv"
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([*text[:3], "99,unquoted, comma,Ross,joy,positive,5,0,3,7,a,b\r\n", *text[3:]]),
                    encoding="utf-8", newline="")
    with pytest.raises(MeldFormatError, match=r"test_sent_emo\.csv, line 4: 12 fields, the header has 11"):
        Meld(meld_root).manifest()
    path.write_text("Sr No.,Utterance,Speaker\r\n1,Hi,Ross\r\n", encoding="utf-8", newline="")
    with pytest.raises(MeldFormatError, match=r"test_sent_emo\.csv: columns \['Emotion'"):
        Meld(meld_root).manifest()


def test_missing_corpus_says_where(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="train_sent_emo.csv"):
        Meld(tmp_path).manifest()
    make_meld(tmp_path)
    (tmp_path / "meld" / "test_sent_emo.csv").unlink()
    with pytest.raises(CorpusNotFoundError, match="test_sent_emo.csv is missing"):
        Meld(tmp_path).manifest()


@pytest.mark.shared_data
def test_real_meld_official_split(shared_data):
    corpus = Meld(shared_data)
    manifest = corpus.manifest()
    (fold,) = corpus.plan(manifest)
    assert (len(fold.train), len(fold.val), len(fold.test)) == (9989, 1109, 2610)
    train = manifest[manifest["split"] == "train"]
    assert train["emotion"].map(dict(enumerate(EMOTIONS))).value_counts()["neutral"] == 4710
    assert manifest["subject"].isin(["Ross"]).groupby(manifest["split"]).any().all()  # Ross is everywhere
    damaged = manifest["text"].str.contains("[\u0080-\u009f\u2018\u2019\u201c\u201d\u2026]")
    assert not damaged.any() and (manifest["text"] != "").all()


# --- the MiniLM extractor ---------------------------------------------------------------------------

def test_minilm_vectors_and_empty_text(tmp_path):
    texts = ["I am so happy today!", "I feel really glad.", "The train leaves at noon.", "", None]
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(texts))], "text": texts})
    first = MiniLM().extract_many(manifest, workers=1)
    vectors = [first[f"c{i}"] for i in range(3)]
    assert all(v.shape == (384,) and v.dtype == np.float32 for v in vectors)
    assert np.allclose([np.linalg.norm(v) for v in vectors], 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # meaning, not just noise
    again = MiniLM().extract_many(manifest.iloc[::-1], workers=1)  # another batch order
    assert all(np.allclose(first[c], again[c], atol=1e-5) for c in ("c0", "c1", "c2"))
    for clip in ("c3", "c4"):
        assert isinstance(first[clip], str) and "no text" in first[clip]
    stored = extract(MiniLM(), manifest, "m", FeatureStore(tmp_path))
    assert set(stored.arrays) == {"c0", "c1", "c2"} and set(stored.errors) == {"c3", "c4"}


def test_manifest_hash_follows_the_text():
    manifest = pd.DataFrame({"clip_id": ["a", "b"], "text": ["hello", "there"]})
    changed = manifest.assign(text=["hello", "here"])
    assert Corpus.manifest_hash(manifest) != Corpus.manifest_hash(changed)


# --- the text-mlp baseline -----------------------------------------------------------------------------

@pytest.mark.slow
def test_text_mlp_learns_the_synthetic_corpus(tmp_path):
    config = BenchConfig(corpus="synthetic", methods=["text-mlp"], loggers=["csv"], out=str(tmp_path / "run"),
                         cache_dir=str(tmp_path), hparams={"text-mlp": {"max_epochs": 40}})
    results = run_bench(config)
    test = results[(results["split"] == "test") & (results["metric"] == "accuracy")]
    assert len(test) == 3  # one row per fold
    assert test["value"].mean() > 0.5, test  # chance is 1/6; about 0.7 here


@pytest.mark.slow
def test_bench_meld_fixture_trains_both_tasks(tmp_path, meld_root):
    out = tmp_path / "run"
    code = cli.main(["bench", "meld", "--data-root", str(meld_root), "--methods", "text-mlp", "--loggers", "csv",
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--max-epochs", "2"])
    assert code == 0
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["task"]) == {"emotion", "sentiment"}
    assert (results["n_test"] == 6).all()
    assert "weighted_f1" in (out / "leaderboard.md").read_text().lower().replace("-", "_")
