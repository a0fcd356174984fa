"""CMU-MOSEI: reading computational sequences, segments, folds, word alignment, and a bench run."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures.mosei import make_mosei, write_csd

from mmer_bench.corpora.base import CorpusNotFoundError
from mmer_bench.corpora.mosei import Mosei
from mmer_bench.csd import ComputationalSequence
from mmer_bench.features import csd
from mmer_bench.protocols import LeakageError
from mmer_bench.runner import BenchConfig, run_bench


def _layout(path):
    """(name, kind, dtype kind, ndim) of every object below the sequence group, videos collapsed."""
    out = set()
    with h5py.File(path, "r") as f:
        root = list(f.keys())[0]

        def visit(name, obj):
            parts = name.split("/")
            if parts[0] == "data" and len(parts) > 1:
                parts[1] = "<video>"
            kind = ("dataset", obj.dtype.kind, obj.ndim) if isinstance(obj, h5py.Dataset) else ("group",)
            out.add(("/".join(parts), *kind))

        f[root].visititems(visit)
    return out


def test_fixture_layout_matches_the_real_sdk_file(shared_data, mosei_root):
    real = shared_data / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
    ours = mosei_root / "mosei" / "CMU_MOSEI_Labels.csd"
    assert _layout(ours) == _layout(real)
    with ComputationalSequence(real) as seq:
        assert seq.name == "Opinion Segment Labels" and len(seq.videos()) == 93
        assert seq.metadata()["root name"] == "Opinion Segment Labels"
        features, intervals = seq.get(seq.videos()[0])
        assert features.shape[1] == 1 and intervals.shape == (len(features), 2)


def test_segments_ids_labels_and_folds(mosei_root):
    corpus = Mosei(mosei_root)
    manifest = corpus.manifest()
    assert len(manifest) == 12 * 6  # the 13th video is in no standard fold
    assert manifest["split"].value_counts().to_dict() == {"train": 48, "val": 12, "test": 12}
    # index = position of the interval in the Labels sequence, whatever the time order
    with ComputationalSequence(mosei_root / "mosei" / "CMU_MOSEI_Labels.csd") as labels:
        features, intervals = labels.get("vid00_")
    rows = manifest[manifest["video"] == "vid00_"].set_index("clip_id")
    assert rows.loc["vid00_[2]", "start"] == pytest.approx(intervals[2, 0])
    assert rows.loc["vid00_[2]", "sentiment"] == pytest.approx(features[2, 0])
    assert rows.loc["vid00_[2]", "fear"] == pytest.approx(features[2, 6])
    (fold,) = corpus.plan(manifest)
    assert (len(fold.train), len(fold.val), len(fold.test)) == (48, 12, 12)
    assert corpus.group_columns == ("video",)


def test_a_video_in_two_folds_is_refused(mosei_root, tmp_path):
    make_mosei(tmp_path)
    path = tmp_path / "mosei" / "mosei_std_folds.json"
    text = path.read_text().replace('"valid": ["', '"valid": ["vid00_", "')
    path.write_text(text)
    with pytest.raises(LeakageError, match="vid00_"):
        Mosei(tmp_path).manifest()


def test_missing_corpus_says_what_to_get(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="mmer download mosei"):
        Mosei(tmp_path).manifest()


def test_word_alignment_by_hand(tmp_path):
    # Two words in the segment [0, 4]: [0, 1] and [1.5, 3]; one outside; one silence token.
    vectors = np.array([[1, 0], [0, 1], [5, 5], [0, 0]], dtype=np.float32)
    times = np.array([[0, 1], [1.5, 3], [6, 7], [3.2, 3.4]])
    frames = np.array([[0, 0.5], [0.5, 1.0], [1.0, 2.0], [2.0, 2.5], [2.5, 4.0]])
    values = np.array([[1.0], [3.0], [-np.inf], [10.0], [20.0]], dtype=np.float32)
    keep = csd.word_mask(vectors, np.array([[b"a"], [b"b"], [b"c"], [b"sp"]]))
    chosen = csd.segment_words(times, 0, 4, keep)
    assert chosen.tolist() == [0, 1]
    aligned = csd.average_per_word(values.astype(float), frames, times[chosen])
    # word 1: frames 0 and 1 -> 2; word 2: frames 2 (-inf -> 0), 3, 4 -> 10
    assert aligned[:, 0].tolist() == [2.0, 10.0]
    assert csd.word_mask(vectors, None).tolist() == [True, True, True, False]  # zero vector = silence


def test_extractors_give_word_level_sequences(mosei_root):
    corpus = Mosei(mosei_root)
    manifest = corpus.manifest()
    assert {"mosei-glove", "mosei-covarep", "mosei-facet", "mosei-openface"} <= corpus.available_features(manifest)
    glove = csd.MoseiGlove().extract_many(manifest.head(7), workers=1)
    covarep = csd.MoseiCovarep().extract_many(manifest.head(7), workers=1)
    assert all(glove[c].shape == (4, 8) for c in manifest["clip_id"].head(7))  # 4 words, sp left out
    assert all(covarep[c].shape == (4, 5) and np.isfinite(covarep[c]).all() for c in manifest["clip_id"].head(7))
    # Without the words file, the zero vector of the silence token marks it.
    no_words = manifest.head(3).assign(words_path=None)
    assert all(v.shape == (4, 8) for v in csd.MoseiGlove().extract_many(no_words, workers=1).values())


def test_real_folds_give_the_standard_segment_counts(shared_data):
    corpus = Mosei(shared_data)
    manifest = corpus.manifest()  # from CMU_MOSEI_Labels.csv: no .csd files in the shared data
    assert corpus.labels_source == "csv"
    (fold,) = corpus.plan(manifest)
    assert (len(fold.train), len(fold.val), len(fold.test)) == (16327, 1871, 4662)
    table = pd.read_csv(shared_data / "mosei" / "CMU_MOSEI_Labels.csv", index_col=0)
    # The CSV's own split column (3 = in no standard fold) agrees with the SDK's fold lists.
    expected = table[table["split"] < 3].assign(clip_id=lambda t: t["file"] + "[" + t["index"].astype(str) + "]")
    by_split = expected.groupby("split")["clip_id"].apply(set)
    assert set(fold.train) == by_split[0] and set(fold.val) == by_split[1] and set(fold.test) == by_split[2]


MOSEI_METHODS = {"seq-mean-mlp": {"max_epochs": 60, "patience": 20, "lr": 3e-3},
                 "williams2018-bilstm-mosei": {"max_epochs": 60, "patience": 20, "lr": 3e-3, "batch_size": 16}}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(MOSEI_METHODS))
def test_bench_learns_on_the_fixture(mosei_root, tmp_path, method):
    results = run_bench(BenchConfig(corpus="mosei", data_root=str(mosei_root), methods=[method],
                                    out=str(tmp_path), loggers=["csv"], workers=1,
                                    hparams={method: MOSEI_METHODS[method]}))
    test = results[results["split"] == "test"].set_index(["task", "metric"])["value"]
    manifest = Mosei(mosei_root).manifest()
    train, test_rows = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "test"]
    emotions = list(Mosei.tasks[0].columns)
    baseline = np.abs(test_rows[emotions].to_numpy() - train[emotions].mean().to_numpy()).mean()
    sentiment_baseline = np.abs(test_rows["sentiment"] - train["sentiment"].mean()).mean()
    assert test["emotions", "mae"] < 0.7 * baseline, (test["emotions", "mae"], baseline)
    assert test["sentiment", "mae"] < 0.7 * sentiment_baseline, (test["sentiment", "mae"], sentiment_baseline)
    assert {"wa_happy", "f1", "mae_fear"} <= set(test.loc["emotions"].index)
    assert {"acc2", "acc2_nonzero", "acc7", "corr"} <= set(test.loc["sentiment"].index)
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    rows = preds[(preds["task"] == "emotions") & (preds["split"] == "test")]
    assert len(rows) == 12 and rows["probs"].map(len).eq(6).all() and rows["target_values"].map(len).eq(6).all()
    assert (rows["target"] == -1).all()
    board = (tmp_path / "leaderboard.md").read_text()
    assert "## emotions (intensity regression" in board and "| MAE |" in board.replace(" | Mean wA", " |")
    assert "Acc7 (%)" in board


def test_write_csd_roundtrip(tmp_path):
    path = write_csd(tmp_path / "x.csd", "seq", {"v": (np.ones((2, 3), np.float32), np.array([[0, 1], [1, 2]]))})
    with ComputationalSequence(path) as seq:
        assert seq.metadata()["root name"] == "seq" and seq.get("v")[0].shape == (2, 3)
