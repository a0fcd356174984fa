"""Fixture generators for the corpora users obtain under an agreement (C-EXPR-DB, MERC2020).

Each writes a small copy in the exact on-disk layout the corpus module documents, with features
that depend on the label so that a model can learn: MERC2020 word vectors lean towards a
prototype of the clip's integrated label, C-EXPR-DB OpenFace AUs towards a prototype of the
video's expression. Videos are placeholder bytes: nothing here decodes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmer_bench.corpora.cexprdb import EXPRESSIONS
from mmer_bench.corpora.merc2020 import CODES
from mmer_bench.features.face import AU_COLUMNS

PLACEHOLDER_MP4 = b"\x00\x00\x00\x18ftypmp42 placeholder, never decoded in tests"
MERC_CODES = tuple(CODES)  # hap, ang, ... in class-index order


# --- MERC2020 -------------------------------------------------------------------------------------

def merc_name(index: int) -> tuple[str, str, str, str]:
    """Clip id and integrated/face/speech codes of fixture clip ``index``: the integrated label
    cycles through the classes; the face and speech labels sometimes differ from it."""
    integrated = index % 7
    face = (integrated + 1) % 7 if index % 3 == 0 else integrated
    speech = MERC_CODES.index("neu") if index % 4 == 0 else integrated
    return f"{index:05d}", MERC_CODES[integrated], MERC_CODES[face], MERC_CODES[speech]


def make_merc2020(root: Path, sizes=None, without_text=("00034", "00062"), dim: int = 200, seed: int = 0) -> Path:
    """``root/merc2020/{train,val,test}/<id>-<integrated>-<face>-<speech>.mp4`` plus ``<id>.npz``
    (``word_embed``: 3-8 words x ``dim``), except for the clips in ``without_text``."""
    sizes = sizes or {"train": 35, "val": 14, "test": 14}
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0, 1, (7, dim))
    index = 0
    for split, count in sizes.items():
        folder = root / "merc2020" / split
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            clip, integrated, face, speech = merc_name(index)
            (folder / f"{clip}-{integrated}-{face}-{speech}.mp4").write_bytes(PLACEHOLDER_MP4)
            if clip not in without_text:
                n_words = int(rng.integers(3, 9))
                words = 0.5 * prototypes[MERC_CODES.index(integrated)] + rng.normal(0, 1, (n_words, dim))
                np.savez(folder / f"{clip}.npz", word_embed=words.astype(np.float32))
            index += 1
    return root


# --- C-EXPR-DB ------------------------------------------------------------------------------------

def cexpr_videos(per_class: int = 3, other: int = 2) -> dict[str, str]:
    """video id -> class name: ``per_class`` videos of each expression and ``other`` of Other,
    named like ABAW videos (``<n>-<m>-<width>x<height>``)."""
    videos = {}
    for c, name in enumerate(EXPRESSIONS):
        for j in range(per_class):
            videos[f"{10 + c * per_class + j}-{c}-1920x1080"] = name
    for j in range(other):
        videos[f"9{j}-1-640x360"] = "Other"
    return videos


def write_openface(path: Path, values: np.ndarray) -> None:
    """An OpenFace 2 FeatureExtraction CSV (its space-padded header); the last frame untracked."""
    header = ["frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS]
    lines = [", ".join(header)]
    for f, row in enumerate(values):
        success = 0 if f == len(values) - 1 else 1
        cells = [f + 1, 0, f"{f * 0.04:.2f}", "0.98", success, *(f"{v:.3f}" for v in row)]
        lines.append(", ".join(str(c) for c in cells))
    path.write_text("\n".join(lines) + "\n")


def make_cexprdb(root: Path, per_class: int = 3, other: int = 2, frames: int = 10, val_equals_test=("split3",),
                 missing_video=("30-6-1920x1080",), seed: int = 0) -> Path:
    """``root/c-expr-db``: labels.csv (names written in varied forms: "Fearfully Surprised",
    "happily_surprised", an index), videos/<id>.mp4 (except ``missing_video``), openface/<id>.csv
    (AUs near a per-expression prototype) and splits/split1..5/{train,val,test}.txt. Split k tests
    on group k of the labelled videos and validates on group k+1, except the splits in
    ``val_equals_test``, whose val list is their test list (in another order). Other videos are
    in every training list."""
    rng = np.random.default_rng(seed)
    folder = root / "c-expr-db"
    for sub in ("videos", "openface"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    videos = cexpr_videos(per_class, other)
    prototypes = rng.uniform(0, 2, (len(EXPRESSIONS) + 1, len(AU_COLUMNS)))
    rows = ["video_id,label"]
    for i, (video, name) in enumerate(videos.items()):
        index = (*EXPRESSIONS, "Other").index(name)
        written = (name, name.lower().replace(" ", "_"), str(index))[i % 3]
        rows.append(f"{video},{written}")
        if video not in missing_video:
            (folder / "videos" / f"{video}.mp4").write_bytes(PLACEHOLDER_MP4)
        write_openface(folder / "openface" / f"{video}.csv", prototypes[index] + rng.normal(0, 0.5, (frames, len(AU_COLUMNS))))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    labelled = [v for v, name in videos.items() if name != "Other"]
    others = [v for v, name in videos.items() if name == "Other"]
    groups = [labelled[g::5] for g in range(5)]  # round-robin: each group mixes expressions
    for k in range(5):
        name = f"split{k + 1}"
        test = groups[k]
        val = list(reversed(test)) if name in val_equals_test else groups[(k + 1) % 5]
        train = [v for v in labelled if v not in set(test) | set(val)] + others
        write_split(folder, name, train, val, test)
    return root


def write_split(folder: Path, name: str, train, val, test) -> None:
    split = folder / "splits" / name
    split.mkdir(parents=True, exist_ok=True)
    for part, ids in (("train", train), ("val", val), ("test", test)):
        (split / f"{part}.txt").write_text(f"# {name} {part}\n" + "\n".join(ids) + "\n")
