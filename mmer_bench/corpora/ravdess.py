"""RAVDESS (Livingstone & Russo 2018): 24 actors, 8 emotions, read from the official layout.

Files live in ``Actor_XX/`` folders and are named ``MM-VV-EE-II-SS-RR-AA.ext``: modality
(01 audio-video, 02 video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion
(01-08), intensity, statement, repetition, actor. Audio is ``.wav`` as released (``.flac`` is
accepted too), video ``.mp4``. A clip's id drops the modality field, so the audio, video and
feature files of one recording share it: ``03-01-05-02-01-01-16.wav`` -> ``01-05-02-01-01-16``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.corpora.base import Corpus, CorpusFormatError, CorpusNotFoundError
from mmer_bench.protocols import subject_kfold
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import ClassificationTask

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
# The 5 folds by actor of Luna-Jimenez et al. 2022.
PUBLISHED_FOLDS = [[2, 5, 14, 15, 16], [3, 6, 7, 13, 18], [10, 11, 12, 19, 20], [8, 17, 21, 23, 24], [1, 4, 9, 22]]
AUDIO_EXTENSIONS = (".wav", ".flac")
NAME = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")

DOWNLOAD_HINT = (
    "RAVDESS was not found under {root}. Run `mmer download ravdess --data-root {parent}` to fetch "
    "the official archives (Zenodo record 1188976, CC BY-NC-SA 4.0), or download "
    "Audio_Speech_Actors_01-24.zip (and Video_Speech_Actor_XX.zip for video) from "
    "https://zenodo.org/record/1188976 yourself and extract them so that {root}/Actor_01/... exists."
)


class RavdessNameError(CorpusFormatError):
    pass


def parse_name(path: Path) -> dict:
    """The seven file-name fields of a RAVDESS file, checked against its Actor_XX folder."""
    match = NAME.match(path.stem)
    if not match:
        raise RavdessNameError(f"{path}: not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA with valid codes)")
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in match.groups())
    if not 1 <= actor <= 24:
        raise RavdessNameError(f"{path}: actor {actor:02d} is outside 01-24")
    folder = path.parent.name
    if folder.startswith("Actor_") and folder != f"Actor_{actor:02d}":
        raise RavdessNameError(f"{path}: actor field {actor:02d} does not match its folder {folder}")
    if emotion == 1 and intensity == 2:
        raise RavdessNameError(f"{path}: neutral clips have no strong intensity in RAVDESS")
    return {
        "modality": modality,
        "vocal_channel": channel,
        "emotion_code": emotion,
        "intensity": intensity,
        "statement": statement,
        "repetition": repetition,
        "actor": actor,
        "clip_id": path.stem.split("-", 1)[1],
    }


def find_root(data_root: Path) -> Path:
    """The folder holding Actor_XX: ``data_root/ravdess`` or ``data_root`` itself."""
    for candidate in (data_root / "ravdess", data_root):
        if any(candidate.glob("Actor_[0-9][0-9]")):
            return candidate
    raise CorpusNotFoundError(DOWNLOAD_HINT.format(root=data_root / "ravdess", parent=data_root))


@CORPORA.register("ravdess")
class Ravdess(Corpus):
    """Options: ``channel`` "speech" (default, the published protocol), "song" or "both"."""

    tasks = (ClassificationTask("emotion", EMOTIONS),)
    primary_metric = "accuracy"
    protocol = "subject-wise 5-fold CV, published actor folds (Luna-Jimenez et al. 2022); val = 20% of training actors"

    def build_manifest(self) -> pd.DataFrame:
        if self.data_root is None:
            raise CorpusNotFoundError("RAVDESS needs a data root: pass --data-root PATH")
        root = find_root(self.data_root)
        channel = self.options.get("channel", "speech")
        channels = {"speech": {1}, "song": {2}, "both": {1, 2}}[channel]
        clips: dict[str, dict] = {}
        for path in sorted(root.glob("Actor_*/*")):
            if path.suffix.lower() not in (*AUDIO_EXTENSIONS, ".mp4"):
                continue
            fields = parse_name(path)
            if fields["vocal_channel"] not in channels:
                continue
            row = clips.setdefault(fields["clip_id"], {**fields, "audio_path": None, "video_path": None})
            if fields["modality"] == 3 and path.suffix.lower() in AUDIO_EXTENSIONS:
                if row["audio_path"]:
                    raise RavdessNameError(f"two audio files for clip {fields['clip_id']}: {row['audio_path']} and {path}")
                row["audio_path"] = str(path)
            elif fields["modality"] == 1 and path.suffix.lower() == ".mp4":
                row["video_path"] = str(path)  # audio-video files; video-only (02) adds nothing
        if not clips:
            raise CorpusNotFoundError(DOWNLOAD_HINT.format(root=root, parent=self.data_root))
        manifest = pd.DataFrame(list(clips.values())).drop(columns=["modality"])
        manifest["subject"] = manifest["actor"]
        manifest["gender"] = manifest["actor"].map(lambda a: "male" if a % 2 else "female")
        manifest["emotion"] = manifest["emotion_code"] - 1
        self._attach_action_units(root, manifest)
        return manifest.sort_values("clip_id").reset_index(drop=True)

    @staticmethod
    def _attach_action_units(root: Path, manifest: pd.DataFrame) -> None:
        means = root / "openface_au_means.csv"
        manifest["au_means_path"] = str(means) if means.exists() else None
        per_frame = {}
        for folder in (root / "openface", root / "OpenFace"):
            for csv in folder.glob("**/*.csv") if folder.is_dir() else ():
                fields = parse_name(csv.with_suffix(""))
                per_frame[fields["clip_id"]] = str(csv)
        manifest["openface_path"] = manifest["clip_id"].map(per_frame)

    def labels_for(self, clip_ids, task="emotion"):
        """RAVDESS clip ids carry the emotion code: no data root is needed to label them."""
        labels = []
        for clip in clip_ids:
            fields = parse_name(Path(f"03-{clip}"))
            labels.append(fields["emotion_code"] - 1)
        return np.array(labels)

    def folds(self, manifest: pd.DataFrame):
        return subject_kfold(manifest, PUBLISHED_FOLDS, val_fraction=0.2, seed=0)
