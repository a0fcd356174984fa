"""MERC2020: Korean acted video clips of the 2020 Multimodal Emotion Recognition Challenge.

The data is released by the challenge organisers under a data-use agreement; users obtain it
themselves and put it under their data root (``DATA_ROOT/merc2020``, or ``DATA_ROOT`` itself
when it holds the three folders)::

    train/<id>-<integrated>-<face>-<speech>.mp4    one clip, its three labels in the name
    train/<id>.npz                                 its words: ``word_embed``, words x 200 (word2vec)
    val/...
    test/...

Each clip carries three labels among ``hap ang dis fea sad neu sur``: the integrated label (the
primary task, first in ``tasks``) and the labels of the face and of the speech alone (auxiliary
heads, loss weight ``aux_weight``, 0.5 by default). A clip without its ``.npz`` has no text: it
is kept and counted by ``mmer describe``; methods that read text need ``--skip-missing`` then.
Hidden files (``.*``) and files of other types are ignored.

Protocol: the official split, from the folders, validated on ``val/``. The release names no
speakers, so the leakage check cannot keep actors apart: it is by clip id (the ``<id>`` field),
which must not occur in two folders.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from mmer_bench.corpora.base import Corpus, CorpusFormatError, CorpusNotFoundError
from mmer_bench.features.text import NpzWordEmbed
from mmer_bench.protocols import LeakageError, official_split
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import ClassificationTask

log = logging.getLogger(__name__)

# Label code in the file names -> class name, in class-index order.
CODES = {"hap": "happy", "ang": "angry", "dis": "disgust", "fea": "fear", "sad": "sad", "neu": "neutral",
         "sur": "surprise"}
EMOTIONS = tuple(CODES.values())
LABEL_FIELDS = ("integrated", "face", "speech")
SPLITS = ("train", "val", "test")
NAME = re.compile(r"^([^-\s]+)-([^-\s]+)-([^-\s]+)-([^-\s]+)$")

NOT_FOUND = (
    "MERC2020 was not found under {root}. The corpus is shared by the organisers of the 2020 Multimodal "
    "Emotion Recognition Challenge (MERC2020) under their data-use agreement: request access from them by "
    "signing the agreement. Then put the clips under {root}/train/, {root}/val/ and {root}/test/ as released: "
    "<id>-<integrated>-<face>-<speech>.mp4 with each clip's word vectors beside it as <id>.npz "
    "(array word_embed, words x 200)."
)


class MercFormatError(CorpusFormatError):
    """A MERC2020 file whose name cannot be read; the message names the file."""


def parse_name(path: Path) -> dict:
    """Clip id and the three label indices of a clip file."""
    match = NAME.match(path.stem)
    if not match:
        raise MercFormatError(f"{path}: not a MERC2020 clip name (expected <id>-<integrated>-<face>-<speech>.mp4, "
                              "e.g. 000123-hap-hap-neu.mp4)")
    clip_id, *codes = match.groups()
    labels = {}
    for field, code in zip(LABEL_FIELDS, codes):
        if code.lower() not in CODES:
            raise MercFormatError(f"{path}: unknown {field} label code {code!r}; expected one of {', '.join(CODES)}")
        labels[field] = EMOTIONS.index(CODES[code.lower()])
    return {"clip_id": clip_id, **labels}


def find_root(data_root: Path) -> Path:
    """The folder holding train/ val/ test/: ``data_root/merc2020`` or ``data_root`` itself."""
    for candidate in (data_root / "merc2020", data_root):
        if (candidate / "train").is_dir() and any((candidate / "train").glob("*.mp4")):
            return candidate
    raise CorpusNotFoundError(NOT_FOUND.format(root=data_root / "merc2020"))


@CORPORA.register("merc2020")
class Merc2020(Corpus):
    """Options: ``aux_weight`` (0.5), the loss weight of the face and speech heads."""

    tasks = tuple(ClassificationTask(f, EMOTIONS, 1.0 if f == "integrated" else 0.5) for f in LABEL_FIELDS)
    primary_metric = "accuracy"
    report_metrics = ("accuracy", "macro_f1", "weighted_f1")
    group_columns = ()  # no speaker information in the release: clips are checked by id (check_disjoint)
    protocol = "official split from the train/ val/ test/ folders; val = val/; no speaker ids (leakage checked by clip id)"
    media_columns = {**Corpus.media_columns, "text_npz_path": "text"}

    def __init__(self, data_root=None, **options):
        super().__init__(data_root, **options)
        unknown = set(options) - {"aux_weight"}
        if unknown:
            raise TypeError(f"merc2020: unknown options {sorted(unknown)}")
        aux = float(options.get("aux_weight", 0.5))
        self.tasks = tuple(ClassificationTask(f, EMOTIONS, 1.0 if f == "integrated" else aux) for f in LABEL_FIELDS)
        self.orphan_npz: list[str] = []

    def build_manifest(self) -> pd.DataFrame:
        if self.data_root is None:
            raise CorpusNotFoundError("MERC2020 needs a data root: pass --data-root PATH")
        root = find_root(self.data_root)
        rows: dict[str, dict] = {}
        self.orphan_npz = []
        for split in SPLITS:
            folder = root / split
            if not folder.is_dir():
                raise CorpusNotFoundError(f"{folder} is missing. " + NOT_FOUND.format(root=root))
            texts = {p.stem: p for p in folder.glob("*.npz") if not p.name.startswith(".")}
            clips = 0
            for path in sorted(folder.glob("*.mp4")):
                if path.name.startswith("."):
                    continue  # e.g. macOS "._" resource forks beside the real files
                fields = parse_name(path)
                clip = fields["clip_id"]
                if clip in rows:
                    other = rows[clip]["video_path"]
                    if rows[clip]["split"] != split:
                        raise LeakageError(f"clip id {clip} is in two splits: {other} and {path}")
                    raise MercFormatError(f"{path}: clip id {clip} is already used by {other}")
                npz = texts.pop(clip, None)
                rows[clip] = {**fields, "split": split, "video_path": str(path),
                              "text_npz_path": str(npz) if npz else None}
                clips += 1
            if not clips:
                raise CorpusNotFoundError(f"{folder} holds no clips. " + NOT_FOUND.format(root=root))
            self.orphan_npz += [str(p) for p in sorted(texts.values())]  # word files without a clip
        if self.orphan_npz:
            log.warning("merc2020: %d .npz files match no clip, e.g. %s", len(self.orphan_npz), self.orphan_npz[0])
        return pd.DataFrame(list(rows.values())).sort_values(["split", "clip_id"]).reset_index(drop=True)

    def folds(self, manifest: pd.DataFrame):
        return official_split(manifest, "split")

    def describe_extra(self, manifest: pd.DataFrame, folds) -> list[str]:
        lines = []
        for split in SPLITS:
            part = manifest[manifest["split"] == split]
            no_text = int(part["text_npz_path"].isna().sum())
            lines.append(f"{split}: {len(part)} clips, {len(part) - no_text} with text, {no_text} without (.npz missing)")
            for task in self.tasks:
                counts = part[task.name].value_counts()
                lines.append(f"  {task.name}: " + ", ".join(f"{c} {int(counts.get(i, 0))}" for i, c in enumerate(task.classes)))
        unreadable = []
        for path in manifest["text_npz_path"].dropna():
            problem = npz_problem(path)
            if problem:
                unreadable.append(f"{path}: {problem}")
        unreadable += [f"{p}: empty file" for p in manifest["video_path"] if Path(p).stat().st_size == 0]
        lines.append(f"unreadable files: {len(unreadable)}")
        lines += [f"  {line}" for line in unreadable[:20]]
        if self.orphan_npz:
            lines.append(f".npz files matching no clip: {len(self.orphan_npz)} ({', '.join(self.orphan_npz[:3])})")
        return lines


def npz_problem(path: str) -> str | None:
    """Why a word-vector file cannot be used (the extractor's own checks), or None."""
    try:
        NpzWordEmbed().extract_clip(path)
    except Exception as exc:  # any reason a file cannot be read is worth reporting
        return f"{type(exc).__name__}: {exc}".replace(f"{path}: ", "")
    return None
