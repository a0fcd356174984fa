from pathlib import Path

import numpy as np
import pytest
from fixtures.ravdess import make_ravdess

from mmer_bench.corpora.base import CorpusNotFoundError
from mmer_bench.corpora.ravdess import EMOTIONS, PUBLISHED_FOLDS, Ravdess, RavdessNameError, parse_name


def test_parse_name_fields_and_clip_id():
    fields = parse_name(Path("Actor_16/03-01-05-02-01-01-16.wav"))
    assert fields["clip_id"] == "01-05-02-01-01-16"
    assert (fields["modality"], fields["emotion_code"], fields["intensity"], fields["actor"]) == (3, 5, 2, 16)
    assert parse_name(Path("Actor_16/01-01-05-02-01-01-16.mp4"))["clip_id"] == "01-05-02-01-01-16"


@pytest.mark.parametrize(
    "name, problem",
    [
        ("Actor_16/03-01-09-01-01-01-16.wav", "not a RAVDESS file name"),  # emotion 09 does not exist
        ("Actor_16/03-01-05-01-01-01-15.wav", "does not match its folder"),  # mislabelled actor
        ("Actor_16/03-01-01-02-01-01-16.wav", "neutral"),  # neutral has no strong intensity
        ("Actor_16/03-01-05-01-01-16.wav", "not a RAVDESS file name"),  # a field is missing
    ],
)
def test_parse_name_rejects_bad_names(name, problem):
    with pytest.raises(RavdessNameError, match=problem) as info:
        parse_name(Path(name))
    assert name in str(info.value)  # the error names the file


def test_manifest_from_official_layout(tmp_path):
    make_ravdess(tmp_path, audio_ext=".wav")
    manifest = Ravdess(tmp_path).manifest()
    assert len(manifest) == 24 * 2 * 2  # speech only: the song clips are left out
    row = manifest.set_index("clip_id").loc["01-05-01-01-01-16"]
    assert row["audio_path"].endswith("03-01-05-01-01-01-16.wav")
    assert row["video_path"].endswith("01-01-05-01-01-01-16.mp4")  # audio and video share the id
    assert row["subject"] == 16 and EMOTIONS[row["emotion"]] == "angry"
    songs = Ravdess(tmp_path, channel="song").manifest()
    assert len(songs) == 24 and set(songs["vocal_channel"]) == {2}


def test_flac_is_read_like_wav(tmp_path):
    make_ravdess(tmp_path, audio_ext=".flac", video=False)
    manifest = Ravdess(tmp_path).manifest()
    assert manifest["audio_path"].str.endswith(".flac").all() and len(manifest) == 96


def test_published_folds_are_disjoint_by_actor(tmp_path):
    make_ravdess(tmp_path, video=False)
    corpus = Ravdess(tmp_path)
    manifest = corpus.manifest()
    folds = corpus.plan(manifest)
    subject = manifest.set_index("clip_id")["subject"]
    for fold, actors in zip(folds, PUBLISHED_FOLDS):
        assert sorted(set(subject[list(fold.test)])) == sorted(actors)
        val_actors = set(subject[list(fold.val)])
        assert val_actors and not val_actors & set(actors)  # validation comes from training actors
        assert not val_actors & set(subject[list(fold.train)])
    assert sorted(c for f in folds for c in f.test) == sorted(manifest["clip_id"])  # every clip tested once


def test_missing_corpus_says_what_to_download(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="mmer download ravdess"):
        Ravdess(tmp_path).manifest()


def test_labels_from_clip_ids():
    labels = Ravdess().labels_for(["01-05-02-01-01-16", "01-01-01-01-01-02"], "emotion")
    assert np.array_equal(labels, [4, 0])
