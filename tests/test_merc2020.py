"""MERC2020: clip names and folders, the official split, leakage and format errors, the
npz-word-embed extractor, `mmer describe`, and a bench run of wordvec-mlp on three task heads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from fixtures.media import PLACEHOLDER_MP4
from fixtures.merc2020 import make_merc2020, merc_name

from mmer_bench import cli
from mmer_bench.corpora.base import CorpusNotFoundError
from mmer_bench.corpora.merc2020 import EMOTIONS, Merc2020, MercFormatError
from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.text import NpzWordEmbed
from mmer_bench.protocols import Fold, LeakageError, check_disjoint
from mmer_bench.runner import BenchConfig, run_bench


def clip_file(root, split, index):
    clip, *codes = merc_name(index)
    return root / "merc2020" / split / f"{clip}-{'-'.join(codes)}.mp4"


def test_parse_folders_and_names(merc2020_root):
    corpus = Merc2020(merc2020_root)
    manifest = corpus.manifest()
    assert list(manifest["split"].value_counts()[["train", "val", "test"]]) == [35, 14, 14]
    assert [t.name for t in corpus.tasks] == ["integrated", "face", "speech"]  # the primary task first
    assert [t.weight for t in corpus.tasks] == [1.0, 0.5, 0.5]
    row = manifest.set_index("clip_id").loc["00003"]  # 00003-fea-sad-fea.mp4
    assert merc_name(3) == ("00003", "fea", "sad", "fea")
    assert [EMOTIONS[row[t]] for t in ("integrated", "face", "speech")] == ["fear", "sad", "fear"]
    assert row["video_path"].endswith("merc2020/train/00003-fea-sad-fea.mp4")
    assert row["text_npz_path"].endswith("merc2020/train/00003.npz")
    no_text = manifest.loc[manifest["text_npz_path"].isna(), "clip_id"].tolist()
    assert no_text == ["00062", "00034"]  # sorted by split (test before train), then id
    assert "subject" not in manifest.columns and corpus.group_columns == ()
    available = corpus.available_features(manifest)
    assert "npz-word-embed" in available and "face-crops" in available  # text files and videos
    assert not available & {"egemaps", "logmel"}  # no separate audio files (the mp4 track is video_path's)
    assert Merc2020(merc2020_root, aux_weight=0.2).tasks[1].weight == 0.2


def test_official_split_from_the_folders(merc2020_root):
    corpus = Merc2020(merc2020_root)
    manifest = corpus.manifest()
    (fold,) = corpus.plan(manifest)
    assert (fold.name, len(fold.train), len(fold.val), len(fold.test)) == ("official", 35, 14, 14)
    assert set(manifest.set_index("clip_id").loc[list(fold.val), "split"]) == {"val"}
    assert "00000" in fold.train and "00035" in fold.val and "00049" in fold.test


def test_a_clip_id_in_two_folders_is_leakage(merc2020_root):
    source = clip_file(merc2020_root, "train", 1)
    assert source.name == "00001-ang-ang-ang.mp4"
    shutil.copy(source, merc2020_root / "merc2020" / "test" / "00001-ang-ang-neu.mp4")
    with pytest.raises(LeakageError, match=r"clip id 00001 is in two splits: .*train/00001-ang-ang-ang\.mp4 and .*test/00001"):
        Merc2020(merc2020_root).manifest()


def test_a_fold_reusing_a_clip_is_rejected(merc2020_root):
    corpus = Merc2020(merc2020_root)
    manifest = corpus.manifest()
    (fold,) = corpus.folds(manifest)
    leaking = Fold("leaky", fold.train, fold.val, (*fold.test, fold.train[0]))
    with pytest.raises(LeakageError, match=f"clip {fold.train[0]} is in both train and test"):
        check_disjoint(manifest, [leaking], corpus.group_columns)


@pytest.mark.parametrize(
    "name, message",
    [
        ("00100-hap-hap.mp4", r"val/00100-hap-hap\.mp4: not a MERC2020 clip name"),
        ("00100-hap-joy-neu.mp4", r"val/00100-hap-joy-neu\.mp4: unknown face label code 'joy'"),
        ("00100-xxx-hap-neu.mp4", r"val/00100-xxx-hap-neu\.mp4: unknown integrated label code 'xxx'"),
        ("00100-hap-hap-neu-2.mp4", r"val/00100-hap-hap-neu-2\.mp4: not a MERC2020 clip name"),
        ("00040-hap-hap-hap.mp4", r"val/00040-neu-neu-neu\.mp4: clip id 00040 is already used by .*val/00040-hap-hap-hap"),
    ],
)
def test_bad_names_name_the_file(merc2020_root, name, message):
    (merc2020_root / "merc2020" / "val" / name).write_bytes(PLACEHOLDER_MP4)
    with pytest.raises(MercFormatError, match=message):
        Merc2020(merc2020_root).manifest()


def test_hidden_and_other_files_are_ignored(merc2020_root):
    (merc2020_root / "merc2020" / "train" / "._00001-hap-hap-hap.mp4").write_bytes(b"resource fork")
    (merc2020_root / "merc2020" / "train" / "notes.txt").write_text("not a clip")
    assert len(Merc2020(merc2020_root).manifest()) == 63


def test_missing_corpus_says_where_to_ask_and_put(tmp_path):
    with pytest.raises(CorpusNotFoundError) as error:
        Merc2020(tmp_path).manifest()
    text = str(error.value)
    assert "organisers" in text and "agreement" in text
    assert str(tmp_path / "merc2020" / "train") in text and "<id>-<integrated>-<face>-<speech>.mp4" in text
    make_merc2020(tmp_path)
    shutil.rmtree(tmp_path / "merc2020" / "test")
    with pytest.raises(CorpusNotFoundError, match=r"merc2020/test is missing"):
        Merc2020(tmp_path).manifest()


# --- npz-word-embed --------------------------------------------------------------------------------

def test_word_vectors_and_errors_name_the_file(tmp_path):
    good, no_key, nan, narrow = (tmp_path / f"{n}.npz" for n in ("good", "no_key", "nan", "narrow"))
    np.savez(good, word_embed=np.ones((4, 200), np.float32))
    np.savez(no_key, embeddings=np.ones((4, 200)))
    np.savez(nan, word_embed=np.full((2, 200), np.nan))
    np.savez(narrow, word_embed=np.ones((2, 50)))
    extractor = NpzWordEmbed()
    words = extractor.extract_clip(str(good))
    assert words.shape == (4, 200) and words.dtype == np.float32
    with pytest.raises(ValueError, match=rf"{no_key}: no 'word_embed' array \(found embeddings\)"):
        extractor.extract_clip(str(no_key))
    with pytest.raises(ValueError, match=rf"{nan}: word_embed contains NaN"):
        extractor.extract_clip(str(nan))
    with pytest.raises(ValueError, match=rf"{narrow}: word_embed has shape \(2, 50\)"):
        extractor.extract_clip(str(narrow))
    assert NpzWordEmbed(dim=None).extract_clip(str(narrow)).shape == (2, 50)
    manifest = pd.DataFrame({"clip_id": ["g", "k", "n", "none"],
                             "text_npz_path": [str(good), str(no_key), str(nan), None]})
    stored = extract(extractor, manifest, "m", FeatureStore(tmp_path / "store"), workers=1)
    assert set(stored.arrays) == {"g"}
    assert str(no_key) in stored.errors["k"] and str(nan) in stored.errors["n"]
    assert stored.errors["none"] == "clip none has no text_npz file"


def test_describe_counts_text_and_unreadable_files(merc2020_root, capsys):
    np.savez(merc2020_root / "merc2020" / "val" / "00040.npz", embeddings=np.ones((3, 200)))  # key renamed
    np.savez(merc2020_root / "merc2020" / "val" / "99999.npz", word_embed=np.ones((3, 200)))  # no such clip
    assert cli.main(["describe", "merc2020", "--data-root", str(merc2020_root)]) == 0
    out = capsys.readouterr().out
    assert "merc2020: 63 clips\n" in out and "  official: train 35, val 14, test 14" in out
    assert "train: 35 clips, 34 with text, 1 without (.npz missing)" in out
    assert "test: 14 clips, 13 with text, 1 without (.npz missing)" in out
    assert "  integrated: happy 5, angry 5, disgust 5, fear 5, sad 5, neutral 5, surprise 5" in out
    assert "  speech: happy 3, angry 4, disgust 4, fear 4, sad 3, neutral 13, surprise 4" in out
    assert "  video (video_path): 63 of 63 clips" in out and "  text (text_npz_path): 61 of 63 clips" in out
    assert "unreadable files: 1\n" in out and "val/00040.npz: ValueError: no 'word_embed' array" in out
    assert ".npz files matching no clip: 1" in out and "99999.npz" in out


@pytest.mark.slow
def test_bench_wordvec_mlp_learns_all_three_heads(merc2020_root, tmp_path):
    out = tmp_path / "run"
    results = run_bench(BenchConfig(corpus="merc2020", data_root=str(merc2020_root), methods=["wordvec-mlp"], out=str(out),
                                    loggers=["csv"], skip_missing=True,
                                    hparams={"wordvec-mlp": {"max_epochs": 40, "patience": 10}}))
    test = results[(results["split"] == "test") & (results["metric"] == "accuracy")].set_index("task")["value"]
    assert set(test.index) == {"integrated", "face", "speech"}
    assert test["integrated"] > 0.5, test  # 7 classes: chance is 1/7
    job = json.loads((out / "jobs/wordvec-mlp/official-seed0/job.json").read_text())
    assert set(job["skipped"]) == {"00034", "00062"} and job["n_test"] == 13
    board = (out / "leaderboard.md").read_text()
    assert "## integrated (7 classes" in board and "## speech" in board
