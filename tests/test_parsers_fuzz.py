"""Property-based tests (hypothesis): every corpus parser either parses its input or raises the
suite's own CorpusFormatError naming the input, for random and adversarial names and files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmer_bench.corpora import cexprdb, meld, merc2020, mosei, ravdess, synthetic
from mmer_bench.corpora.base import CorpusFormatError
from mmer_bench.protocols import LeakageError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names: anything (no path separators or NUL, which no file name holds), and near misses built
# from each corpus's own grammar with out-of-range or foreign fields.
any_name = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=40)
field = st.one_of(st.from_regex(r"\A\d{1,3}\Z"), st.sampled_from(["00", "09", "99", "-1", "", "x", "01 ", "٠٣"]))


def dashed(n):
    return st.lists(field, min_size=n - 1, max_size=n + 1).map("-".join)


def check(parse, path: Path):
    try:
        out = parse(path)
    except CorpusFormatError as exc:
        assert str(path) in str(exc), f"the error does not name {path}: {exc}"
        return None
    assert isinstance(out, dict)
    return out


@FAST
@given(name=st.one_of(any_name, dashed(7)), folder=st.one_of(st.from_regex(r"\AActor_\d\d\Z"), any_name),
       ext=st.sampled_from([".wav", ".flac", ".mp4", ""]))
def test_ravdess_names(name, folder, ext):
    out = check(ravdess.parse_name, Path("root", folder or "x", name + ext))
    if out is not None:
        assert 1 <= out["actor"] <= 24 and 1 <= out["emotion_code"] <= 8


@FAST
@given(name=st.one_of(any_name, dashed(3)), folder=st.one_of(st.from_regex(r"\Aspeaker_\d\d\Z"), any_name))
def test_synthetic_names(name, folder):
    out = check(synthetic.parse_name, Path("root", folder or "x", name + ".wav"))
    if out is not None:
        assert 0 <= out["emotion"] < len(synthetic.EMOTIONS) and 1 <= out["subject"] <= synthetic.N_SPEAKERS


def test_synthetic_invalid_emotion_code_names_the_file():
    path = Path("root", "speaker_01", "01-07-00.wav")
    with pytest.raises(CorpusFormatError, match=r"speaker_01/01-07-00\.wav: emotion code 07 is outside 00-05"):
        synthetic.parse_name(path)


codes = st.one_of(st.sampled_from([*merc2020.CODES, "HAP", "xxx", "", "hap "]), any_name)


@FAST
@given(name=st.one_of(any_name, st.tuples(any_name, codes, codes, codes).map("-".join)))
def test_merc2020_names(name):
    out = check(merc2020.parse_name, Path("root", "train", name + ".mp4"))
    if out is not None:
        assert all(0 <= out[f] < len(merc2020.EMOTIONS) for f in merc2020.LABEL_FIELDS)


# --- CSV, text and HDF5 readers ------------------------------------------------------------------

cell = st.one_of(st.text(max_size=12), st.sampled_from(["neutral", "joy", "positive", "1", "-3", "2.5", "",
                                                        '"', "a,b", "\r", "\x00", "\u0085"]))


def csv_text(header):
    """A header (the real one, a shuffled or shortened one) and rows of random cells."""
    headers = st.one_of(st.just(header), st.permutations(header), st.lists(st.sampled_from(header), max_size=len(header)))
    return st.tuples(headers, st.lists(st.lists(cell, min_size=0, max_size=len(header) + 2), max_size=5)).map(
        lambda hr: "\n".join(",".join(row) for row in [hr[0], *hr[1]]))


contents = st.one_of(st.binary(max_size=200).map(lambda b: ("bytes", b)))


def written(data, suffix):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / f"file{suffix}"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    return path


def check_reader(read, path: Path):
    try:
        read(path)
    except (CorpusFormatError, LeakageError) as exc:  # a folds file may put a video in two folds
        assert str(path) in str(exc), f"the error does not name {path}: {exc}"


@FILES
@given(data=st.one_of(st.binary(max_size=300), csv_text(list(meld.COLUMNS))))
def test_meld_csv(data):
    check_reader(lambda p: meld.parse_csv(p, "train"), written(data, ".csv"))


@FILES
@given(data=st.one_of(st.binary(max_size=300), csv_text(["video_id", "label"])))
def test_cexprdb_labels(data):
    check_reader(cexprdb.read_labels, written(data, ".csv"))


@FILES
@given(data=st.one_of(st.binary(max_size=300), st.lists(cell, max_size=6).map("\n".join)))
def test_cexprdb_split_lists(data):
    check_reader(lambda p: cexprdb.read_id_list(p, {"a": "Happiness", "b": "Anger"}), written(data, ".txt"))


@FILES
@given(data=st.one_of(st.binary(max_size=300), csv_text(["", "file", "index", "start", "end", "label7"])))
def test_mosei_label_csv(data):
    check_reader(mosei.read_csv_segments, written(data, ".csv"))


json_values = st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=5)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(["folds", "train", "valid", "test", "x"]),
                                                                   inner, max_size=3)), max_leaves=10)


@FILES
@given(data=st.one_of(st.binary(max_size=200), json_values.map(json.dumps)))
def test_mosei_folds(data):
    check_reader(mosei.read_folds, written(data, ".json"))


@st.composite
def csd_files(draw):
    """HDF5 files shaped like a computational sequence, with random shapes, groups and types."""
    path = written(b"", ".csd")
    with h5py.File(path, "w") as f:
        for _ in range(draw(st.integers(0, 2))):
            root = f.create_group(draw(st.sampled_from(["Labels", "Opinion", "x y"])) + str(len(f)))
            if draw(st.booleans()):
                data = root.create_group("data")
                for v in range(draw(st.integers(0, 3))):
                    video = data.create_group(f"vid{v}") if draw(st.booleans()) else None
                    if video is None:
                        data.create_dataset(f"vid{v}", data=np.zeros(2))
                        continue
                    rows = draw(st.integers(0, 3))
                    if draw(st.booleans()):
                        video.create_dataset("features", data=np.zeros((rows, draw(st.integers(0, 8)))))
                    if draw(st.booleans()):
                        shape = draw(st.sampled_from([(rows, 2), (rows + 1, 2), (rows, 3), (rows,)]))
                        video.create_dataset("intervals", data=np.zeros(shape))
    return path


@FILES
@given(path=st.one_of(csd_files(), st.binary(max_size=200).map(lambda b: written(b, ".csd"))))
def test_mosei_csd_labels(path):
    check_reader(mosei.read_label_segments, path)
