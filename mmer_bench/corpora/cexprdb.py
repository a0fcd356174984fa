"""C-EXPR-DB (Kollias 2023): in-the-wild videos of compound expressions, as used by the ABAW challenge.

The corpus is released under an End User License Agreement by the ABAW challenge organisers;
users obtain it themselves and put it under their data root. Seven compound expressions are
the classes, in the ABAW challenge's order (a label may also be given as its index 0-6 in it):
Fearfully Surprised, Happily Surprised, Sadly Surprised, Disgustedly Surprised, Angrily
Surprised, Sadly Fearful, Sadly Angry. Videos showing none of them are labelled ``Other``
(index 7): left out by default, an eighth class with the option ``include_other=True``.

The videos come without a per-video label file in a layout fixed by the release, so this module
defines one (``DATA_ROOT/c-expr-db``, or ``DATA_ROOT`` itself when it holds ``labels.csv``)::

    labels.csv                       header "video_id,label", then one row per video; the label
                                     is a class name (case, "_" and "-" do not matter) or its index
    videos/<video_id>.mp4            the videos (a missing one is counted, not an error)
    openface/<video_id>.csv          optional: OpenFace 2 FeatureExtraction output, one row per frame
    splits/split1/train.txt          the 5 released splits: video ids, one per line (blank lines
    splits/split1/val.txt            and lines starting with # are ignored); split folders are
    splits/split1/test.txt           read in natural order (split1, split2, ..., split10)
    ...

A video id is its file name without ``.mp4`` (ABAW names look like ``135-24-1920x1080``).

Protocol: each split is one fold, checked disjoint by video. One released split has a val list
equal to its test list; validating on it would let the test videos pick the epoch, so such a
split is reported (a warning, ``Fold.info["val_equals_test"]`` and ``mmer describe``) and, by
default, gets a validation set drawn from its own training videos instead (option
``val_equals_test``: "carve" (default), "drop" the split, or "error"). Actor identities are not
annotated, so the leakage check cannot go beyond videos.

Methods train on frames with the video's label on every frame and predict each video by
aggregating its frames (mmer_bench/aggregate.py, methods/frames.py); the metric is macro-F1 over
videos, with accuracy and weighted-F1 beside it.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.corpora.base import Corpus, CorpusFormatError, CorpusNotFoundError, reads_file
from mmer_bench.protocols import Fold, LeakageError
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import ClassificationTask

log = logging.getLogger(__name__)

EXPRESSIONS = ("Fearfully Surprised", "Happily Surprised", "Sadly Surprised", "Disgustedly Surprised",
               "Angrily Surprised", "Sadly Fearful", "Sadly Angry")
OTHER = "Other"
PARTS = ("train", "val", "test")
VAL_EQUALS_TEST_POLICIES = ("carve", "drop", "error")

NOT_FOUND = (
    "C-EXPR-DB was not found under {root}. It is distributed under the C-EXPR-DB End User License "
    "Agreement by the ABAW challenge organisers (Affective Behavior Analysis in-the-wild, "
    "https://affective-behavior-analysis-in-the-wild.github.io): request access from them by signing the "
    "EULA. Then put the files under {root}: labels.csv (video_id,label), videos/<video_id>.mp4, "
    "splits/split1..split5/{{train,val,test}}.txt (one video id per line) and optionally "
    "openface/<video_id>.csv (OpenFace 2 per-frame output); mmer_bench/corpora/cexprdb.py describes the formats."
)


class CExprFormatError(CorpusFormatError):
    """A C-EXPR-DB label or split file that cannot be read; the message names the file and line."""


def _normalise(name: str) -> str:
    return " ".join(re.split(r"[\s_\-]+", name.strip().lower()))


_BY_NAME = {_normalise(n): i for i, n in enumerate((*EXPRESSIONS, OTHER))}


def parse_label(value: str, where: str) -> str:
    """The class name of a label cell: a name in any case/separator, or its ABAW index."""
    text = value.strip()
    if text.isascii() and text.isdigit() and int(text) <= len(EXPRESSIONS):
        return (*EXPRESSIONS, OTHER)[int(text)]
    if _normalise(text) in _BY_NAME:
        return (*EXPRESSIONS, OTHER)[_BY_NAME[_normalise(text)]]
    raise CExprFormatError(f"{where}: unknown label {value!r}; expected one of {', '.join(EXPRESSIONS)}, "
                           f"{OTHER} (or an index 0-{len(EXPRESSIONS)})")


def _check_id(video_id: str, where: str) -> str:
    video_id = video_id.strip()
    if video_id.lower().endswith(".mp4"):
        video_id = video_id[:-4]
    if not video_id or re.search(r"[\s/\\]", video_id):
        raise CExprFormatError(f"{where}: {video_id!r} is not a video id (a file name without .mp4)")
    return video_id


@reads_file(CExprFormatError)
def read_labels(path: Path) -> dict[str, str]:
    """video id -> class name, from labels.csv."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if "video_id" not in header or "label" not in header:
            raise CExprFormatError(f"{path}: the header must name the columns video_id and label (found {header})")
        col_id, col_label = header.index("video_id"), header.index("label")
        labels: dict[str, str] = {}
        lines: dict[str, int] = {}
        for fields in reader:
            where = f"{path}, line {reader.line_num}"
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise CExprFormatError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            video = _check_id(fields[col_id], where)
            if video in labels:
                raise CExprFormatError(f"{where}: video {video} is already labelled on line {lines[video]}")
            labels[video] = parse_label(fields[col_label], where)
            lines[video] = reader.line_num
    if not labels:
        raise CExprFormatError(f"{path}: the file labels no video")
    return labels


@reads_file(CExprFormatError)
def read_id_list(path: Path, known: dict[str, str]) -> list[str]:
    """The video ids of one split list, each checked against labels.csv."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        video = _check_id(line, where)
        if video not in known:
            raise CExprFormatError(f"{where}: video {video} is not in labels.csv")
        if video in seen:
            raise CExprFormatError(f"{where}: video {video} is already listed on line {seen[video]}")
        seen[video] = number
        ids.append(video)
    return ids


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_splits(root: Path, known: dict[str, str]) -> dict[str, dict]:
    """split name -> {"lists": {part: [video ids]}, "files": {part: path}}, in natural order."""
    folder = root / "splits"
    if not folder.is_dir():
        raise CorpusNotFoundError(f"{folder} is missing. " + NOT_FOUND.format(root=root))
    splits = {}
    for split_dir in sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=_natural_key):
        files = {part: split_dir / f"{part}.txt" for part in PARTS}
        for path in files.values():
            if not path.is_file():
                raise CExprFormatError(f"{path} is missing: every split folder needs train.txt, val.txt and test.txt")
        splits[split_dir.name] = {"files": files, "lists": {p: read_id_list(f, known) for p, f in files.items()}}
    if not splits:
        raise CorpusNotFoundError(f"{folder} holds no split folders. " + NOT_FOUND.format(root=root))
    return splits


def find_root(data_root: Path) -> Path:
    """The folder holding labels.csv: ``data_root/c-expr-db`` or ``data_root`` itself."""
    for candidate in (data_root / "c-expr-db", data_root):
        if (candidate / "labels.csv").is_file():
            return candidate
    raise CorpusNotFoundError(NOT_FOUND.format(root=data_root / "c-expr-db"))


def carve_validation(train: list[str], labels: pd.Series, fraction: float, seed: int) -> list[str]:
    """About ``fraction`` of the training videos, drawn per class (a class with one training
    video keeps it in training), at least one video overall."""
    rng = np.random.default_rng(seed)
    chosen = []
    by_class: dict[int, list[str]] = {}
    for video in train:
        by_class.setdefault(int(labels[video]), []).append(video)
    for _, videos in sorted(by_class.items()):
        if len(videos) > 1:  # at least one to validation, at least one left to train on
            n = min(max(int(round(fraction * len(videos))), 1), len(videos) - 1)
            chosen += list(rng.choice(videos, size=n, replace=False))
    if not chosen and len(train) > 1:
        chosen = [train[int(rng.integers(len(train)))]]
    chosen_set = set(chosen)
    return [v for v in train if v in chosen_set]  # in list order: no dependence on the draw order


@CORPORA.register("cexprdb")
class CExprDB(Corpus):
    """Options: ``include_other`` (False), ``val_equals_test`` ("carve" | "drop" | "error"),
    ``val_fraction`` (0.2, of a carved split's training videos)."""

    tasks = (ClassificationTask("expression", EXPRESSIONS),)
    primary_metric = "macro_f1"
    report_metrics = ("macro_f1", "accuracy", "weighted_f1")
    group_columns = ("video",)  # actors are not annotated: videos are what can be kept apart
    protocol = ("5 released train/val/test splits by video (a split with val == test validates on "
                "20% of its training videos instead); frame-level training, video-level macro-F1")

    def __init__(self, data_root=None, **options):
        super().__init__(data_root, **options)
        unknown = set(options) - {"include_other", "val_equals_test", "val_fraction"}
        if unknown:
            raise TypeError(f"cexprdb: unknown options {sorted(unknown)}")
        if options.get("val_equals_test", "carve") not in VAL_EQUALS_TEST_POLICIES:
            raise ValueError(f"cexprdb: val_equals_test must be one of {VAL_EQUALS_TEST_POLICIES}")
        self.include_other = bool(options.get("include_other", False))
        classes = (*EXPRESSIONS, OTHER) if self.include_other else EXPRESSIONS
        self.tasks = (ClassificationTask("expression", classes),)
        self.splits: dict[str, dict] | None = None
        self.other_videos: list[str] = []

    def build_manifest(self) -> pd.DataFrame:
        if self.data_root is None:
            raise CorpusNotFoundError("C-EXPR-DB needs a data root: pass --data-root PATH")
        self.root = find_root(self.data_root)
        labels = read_labels(self.root / "labels.csv")
        self.splits = read_splits(self.root, labels)
        classes = self.tasks[0].classes
        self.other_videos = [v for v, name in labels.items() if name not in classes]
        rows = []
        for video, name in labels.items():
            if name not in classes:
                continue  # "Other" without include_other
            mp4, openface = self.root / "videos" / f"{video}.mp4", self.root / "openface" / f"{video}.csv"
            rows.append({
                "clip_id": video,
                "video": video,
                "label": name,
                "expression": classes.index(name),
                "video_path": str(mp4) if mp4.is_file() else None,
                "openface_path": str(openface) if openface.is_file() else None,
            })
        if not rows:
            raise CExprFormatError(f"{self.root / 'labels.csv'}: every video is labelled {OTHER}; "
                                   "pass include_other=True to use them")
        return pd.DataFrame(rows).sort_values("clip_id").reset_index(drop=True)

    def folds(self, manifest: pd.DataFrame) -> list[Fold]:
        if self.splits is None:
            self.build_manifest()
        policy = self.options.get("val_equals_test", "carve")
        fraction = float(self.options.get("val_fraction", 0.2))
        present = set(manifest["clip_id"])
        labels = manifest.set_index("clip_id")["expression"]
        folds = []
        for k, (name, split) in enumerate(self.splits.items()):
            lists, files = split["lists"], split["files"]
            parts = {p: [v for v in lists[p] if v in present] for p in PARTS}
            info = {"released": str(files["train"].parent), "val_equals_test": False,
                    "dropped_other": sum(len(lists[p]) - len(parts[p]) for p in PARTS)}
            if set(lists["val"]) == set(lists["test"]):
                info["val_equals_test"] = True
                message = (f"C-EXPR-DB {name}: its val list ({files['val']}) equals its test list, so the test "
                           "videos would choose the epoch")
                if policy == "error":
                    raise LeakageError(message)
                if policy == "drop":
                    log.warning("%s; the split is left out (val_equals_test='drop')", message)
                    continue
                val = carve_validation(parts["train"], labels, fraction, seed=k)
                parts = {"train": [v for v in parts["train"] if v not in set(val)], "val": val, "test": parts["test"]}
                info["val_source"] = f"{fraction:.0%} of the split's training videos per class (seed {k})"
                info["warning"] = f"{message}; validating on {len(val)} of its training videos instead"
                log.warning("%s", info["warning"])
            folds.append(Fold(name, *(tuple(parts[p]) for p in PARTS), info=info))
        return folds

    def describe_extra(self, manifest: pd.DataFrame, folds: list[Fold]) -> list[str]:
        task = self.tasks[0]
        lines = [f"videos labelled {OTHER}: {len(self.other_videos)}"
                 + ("" if self.include_other else " (left out; include_other=True keeps them)")]
        labels = manifest.set_index("clip_id")["expression"]
        for fold in folds:
            for part, ids in fold.parts().items():
                counts = labels.loc[list(ids)].value_counts()
                shown = ", ".join(f"{task.classes[i]} {int(counts.get(i, 0))}" for i in range(task.num_classes))
                lines.append(f"  {fold.name} {part} ({len(ids)} videos): {shown}")
        kept = {f.name for f in folds}
        for name in self.splits or {}:
            if name not in kept:
                lines.append(f"WARNING {name}: left out, its val list equals its test list (val_equals_test='drop')")
        listed = {v for split in (self.splits or {}).values() for ids in split["lists"].values() for v in ids}
        unlisted = sorted(set(manifest["clip_id"]) - listed)
        if unlisted:
            lines.append(f"videos in no split list: {len(unlisted)} ({', '.join(unlisted[:5])}"
                         f"{', ...' if len(unlisted) > 5 else ''})")
        for column, what in (("video_path", "videos/<id>.mp4"), ("openface_path", "openface/<id>.csv")):
            missing = sorted(manifest.loc[manifest[column].isna(), "clip_id"])
            if missing:
                lines.append(f"missing {what}: {len(missing)} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        empty = [p for p in manifest["video_path"].dropna() if Path(p).stat().st_size == 0]
        if empty:
            lines.append(f"unreadable (empty) videos: {len(empty)} ({', '.join(empty[:5])})")
        return lines
