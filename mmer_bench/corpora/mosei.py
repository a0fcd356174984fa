"""CMU-MOSEI (Zadeh et al. 2018) from the CMU-Multimodal SDK's computational sequences, as released.

Files under ``DATA_ROOT/mosei`` (HDF5 ``.csd``; each holds one top-level group, the sequence,
with ``data/<video_id>/{features, intervals}`` and ``metadata``):

- ``CMU_MOSEI_Labels.csd``: one row per labelled interval (= segment) of a video, features
  [sentiment in [-3, 3], happy, sad, anger, surprise, disgust, fear in [0, 3]]
- ``CMU_MOSEI_TimestampedWordVectors.csd``: one GloVe vector per word with its interval
  (``CMU_MOSEI_TimestampedWords.csd``, the words themselves, is read when present to drop the
  ``sp`` silence tokens; without it an all-zero vector marks a silence token)
- ``CMU_MOSEI_COVAREP.csd``, ``CMU_MOSEI_VisualFacet42.csd``, ``CMU_MOSEI_VisualOpenFace2.csd``:
  frame-level acoustic and visual features with their intervals
- ``mosei_std_folds.json``: the SDK's standard train / valid / test video ids

A segment id is ``<video>[<index>]``, index = position of the interval in the video's label
sequence (as the SDK names aligned segments). Videos in no standard fold are left out; no video
crosses folds (``video`` is the leakage column: speakers are not identified in the release).

Without the ``.csd`` files the manifest can still be built from ``CMU_MOSEI_Labels.csv`` (video,
index, start, end, quantised 7-class sentiment, split) for protocol checks; it then has no
emotion labels and no features, so nothing can be trained on it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.corpora.base import Corpus, CorpusNotFoundError, reads_file
from mmer_bench.csd import ComputationalSequence, CsdFormatError
from mmer_bench.protocols import LeakageError, official_split
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import MOSEI_EMOTIONS, IntensityTask, SentimentTask

log = logging.getLogger(__name__)

LABELS = "CMU_MOSEI_Labels.csd"
WORD_VECTORS = "CMU_MOSEI_TimestampedWordVectors.csd"
WORDS = "CMU_MOSEI_TimestampedWords.csd"
# manifest column -> file of a frame-level modality
SEQUENCES = {
    "covarep_path": "CMU_MOSEI_COVAREP.csd",
    "facet_path": "CMU_MOSEI_VisualFacet42.csd",
    "openface_csd_path": "CMU_MOSEI_VisualOpenFace2.csd",
    "glove_path": WORD_VECTORS,
}
FOLDS = "mosei_std_folds.json"
LABELS_CSV = "CMU_MOSEI_Labels.csv"
LABEL_COLUMNS = ("sentiment", *MOSEI_EMOTIONS)  # order of the Labels sequence's feature columns
SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}

NOT_FOUND = (
    "CMU-MOSEI was not found under {root}. Put the CMU-Multimodal SDK's computational sequences "
    f"({LABELS}, {WORD_VECTORS}, CMU_MOSEI_COVAREP.csd, CMU_MOSEI_VisualFacet42.csd, "
    f"CMU_MOSEI_VisualOpenFace2.csd) and {FOLDS} there; `mmer download mosei` lists their URLs."
)


def segment_id(video: str, index: int) -> str:
    return f"{video}[{index}]"


@reads_file(CsdFormatError)
def read_label_segments(path: Path) -> pd.DataFrame:
    """One row per labelled interval of the Labels sequence: video, index, start, end, labels."""
    rows = []
    with ComputationalSequence(path) as labels:
        for video in labels.videos():
            features, intervals = labels.get(video)
            if features.shape[1] != len(LABEL_COLUMNS):
                raise CsdFormatError(f"{path}: {video} has {features.shape[1]} label columns, expected "
                                     f"{len(LABEL_COLUMNS)} ({', '.join(LABEL_COLUMNS)})")
            for index, ((start, end), values) in enumerate(zip(intervals, features)):
                rows.append({"video": video, "index": index, "start": float(start), "end": float(end),
                             **dict(zip(LABEL_COLUMNS, values.astype(float)))})
    return pd.DataFrame(rows)


@reads_file(CsdFormatError)
def read_csv_segments(path: Path) -> pd.DataFrame:
    """Segments of ``CMU_MOSEI_Labels.csv``: no emotion labels, quantised sentiment (label7)."""
    table = pd.read_csv(path, index_col=0)
    frame = table.rename(columns={"file": "video"})[["video", "index", "start", "end"]].copy()
    frame["sentiment"] = table["label7"].astype(float)
    for emotion in MOSEI_EMOTIONS:
        frame[emotion] = np.nan
    return frame


@reads_file(CsdFormatError)
def read_folds(path: Path) -> dict[str, str]:
    """video -> train / val / test from the SDK's standard folds; a video in two folds is an error."""
    folds = json.loads(path.read_text())["folds"]
    part_of: dict[str, str] = {}
    for name, videos in folds.items():
        for video in videos:
            if video in part_of and part_of[video] != SPLIT_NAMES[name]:
                raise LeakageError(f"{path}: video {video} is in both {part_of[video]} and {SPLIT_NAMES[name]}")
            part_of[video] = SPLIT_NAMES[name]
    return part_of


@CORPORA.register("mosei")
class Mosei(Corpus):
    tasks = (IntensityTask("emotions"), SentimentTask("sentiment"))
    primary_metric = "mae"  # of the emotion intensities; lower is better
    report_metrics = ("mae", "wa", "f1")
    group_columns = ("video",)
    protocol = "official CMU-MultimodalSDK folds (train 16,327 / valid 1,871 / test 4,662 segments); val = valid"

    def root(self) -> Path:
        if self.data_root is None:
            raise CorpusNotFoundError("CMU-MOSEI needs a data root: pass --data-root PATH")
        for candidate in (self.data_root / "mosei", self.data_root):
            if (candidate / FOLDS).is_file():
                return candidate
        raise CorpusNotFoundError(NOT_FOUND.format(root=self.data_root / "mosei"))

    def build_manifest(self) -> pd.DataFrame:
        root = self.root()
        if (root / LABELS).is_file():
            segments, self.labels_source = read_label_segments(root / LABELS), "csd"
        elif (root / LABELS_CSV).is_file():
            segments, self.labels_source = read_csv_segments(root / LABELS_CSV), "csv"
            log.warning("mosei: %s is missing; segments from %s have no emotion labels (protocol checks only)",
                        LABELS, LABELS_CSV)
        else:
            raise CorpusNotFoundError(f"{root / LABELS} is missing. " + NOT_FOUND.format(root=root))
        part_of = read_folds(root / FOLDS)
        segments["split"] = segments["video"].map(part_of)
        outside = segments["split"].isna()
        if outside.any():
            log.info("mosei: %d segments of %d videos are in no standard fold and left out",
                     int(outside.sum()), segments.loc[outside, "video"].nunique())
        segments = segments[~outside].copy()
        segments.insert(0, "clip_id", [segment_id(v, i) for v, i in zip(segments["video"], segments["index"])])
        for column, name in SEQUENCES.items():
            segments[column] = str(root / name) if (root / name).is_file() else None
        words = root / WORDS
        segments["words_path"] = str(words) if words.is_file() else None
        return segments.reset_index(drop=True)

    def validated_tasks(self):
        # Built from the CSV, only the quantised sentiment is known: the emotions are not checked.
        return self.tasks[1:] if getattr(self, "labels_source", "csd") == "csv" else self.tasks

    def folds(self, manifest: pd.DataFrame):
        return official_split(manifest, "split", group_column="video")
