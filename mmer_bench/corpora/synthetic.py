"""A small synthetic corpus generated on the fly: the embedded default that runs anywhere.

Six speakers say 8 clips of each of 6 emotions. Each clip has a 1 s waveform whose pitch,
energy and syllable rate depend on the emotion (a harmonic voice with a speaker-specific pitch
and noise colour), a face track of 20-60 video frames of OpenFace Action Units and a short text
whose wording leans towards the emotion. The face track follows an onset-apex-offset curve whose
timing depends on the emotion (surprise rises fast and fades fast, sadness rises slowly and
lingers) towards an apex of AU intensities (an emotion prototype plus a speaker offset plus
noise); presence flags follow the intensities and a few frames are untracked. Speaker offsets
are large enough that a split leaking speakers would score higher: subject-wise CV matters.

Files are written once per generator version into ``synthetic-v<version>/`` under the cache, or
under the data root when one is given: that folder must exist (a mistyped ``--data-root`` is an
error, never a new corpus in a new place). Layout: ``speaker_XX/<SS>-<EE>-<KK>.wav`` (speaker,
emotion index, take), ``speaker_XX/<clip_id>.csv`` (OpenFace FeatureExtraction layout),
``au_means.csv`` (each clip's mean over its tracked frames, OpenFace AU columns) and
``texts.csv``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from mmer_bench.corpora.base import Corpus, CorpusFormatError
from mmer_bench.features.face import AU_COLUMNS, AU_INTENSITY, AU_PRESENCE
from mmer_bench.features.store import default_cache_dir
from mmer_bench.protocols import subject_kfold
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import ClassificationTask

log = logging.getLogger(__name__)

EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "surprised")
GENERATOR_VERSION = "2"
N_SPEAKERS, CLIPS_PER_EMOTION, SAMPLE_RATE, SECONDS = 6, 8, 16000, 1.0
# Relative pitch, energy and syllables per second of each emotion.
PROSODY = {
    "neutral": (1.00, 0.30, 3.0),
    "happy": (1.25, 0.55, 4.5),
    "sad": (0.85, 0.18, 2.0),
    "angry": (1.15, 0.80, 5.5),
    "fearful": (1.40, 0.40, 6.5),
    "surprised": (1.50, 0.60, 3.5),
}
WORDS = {
    "neutral": ["okay", "table", "today", "report", "train"],
    "happy": ["great", "wonderful", "love", "glad", "fun"],
    "sad": ["miss", "lonely", "sorry", "lost", "tears"],
    "angry": ["hate", "stupid", "furious", "enough", "stop"],
    "fearful": ["scared", "afraid", "danger", "help", "dark"],
    "surprised": ["wow", "really", "unexpected", "what", "suddenly"],
}
FILLER = ["the", "we", "it", "is", "was", "then", "at", "home", "and", "so"]
# Face-track timing of each emotion as fractions of the clip: (start, onset, apex, offset).
DYNAMICS = {
    "neutral": (0.10, 0.30, 0.30, 0.30),
    "happy": (0.10, 0.20, 0.50, 0.20),
    "sad": (0.05, 0.55, 0.35, 0.05),
    "angry": (0.20, 0.10, 0.60, 0.10),
    "fearful": (0.15, 0.15, 0.20, 0.50),
    "surprised": (0.05, 0.05, 0.15, 0.10),
}
VIDEO_FPS = 30.0
AU_NUMBERS = sorted({int(c[2:4]) for c in AU_COLUMNS})  # the 18 AUs behind the 35 columns


def _voice(rng, speaker_f0, tilt, pitch, energy, rate) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    f0 = speaker_f0 * pitch * rng.uniform(0.93, 1.07) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k**tilt for k in range(1, 9))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rate * rng.uniform(0.85, 1.15) * t + rng.uniform(0, 2 * np.pi)))
    level = energy * rng.uniform(0.8, 1.2)
    signal = level * syllables * voiced / 3 + 0.01 * rng.standard_normal(t.size)
    return np.clip(signal, -1, 1).astype(np.float32)


def _envelope(n_frames: int, start: float, onset: float, apex: float, offset: float) -> np.ndarray:
    """Expression intensity per frame: 0 until ``start``, linear rise over ``onset``, 1 over
    ``apex``, linear fall over ``offset`` (fractions of the clip), then 0."""
    t = (np.arange(n_frames) + 0.5) / n_frames
    knots = np.cumsum([0.0, start, onset, apex, offset])
    return np.interp(t, [*knots, max(knots[-1], 1.0) + 1e-6], [0, 0, 1, 1, 0, 0]).astype(np.float32)


def _face_track(rng, apex: np.ndarray, baseline: np.ndarray, dynamics, n_frames: int) -> np.ndarray:
    """OpenFace columns per frame: frame, face_id, timestamp, confidence, success, 35 AUs."""
    jitter = rng.uniform(0.8, 1.2, 4)  # no two clips share exact timing
    envelope = _envelope(n_frames, *(np.array(dynamics) * jitter))
    latent = baseline + apex * envelope[:, None] + rng.normal(0, 0.25, (n_frames, len(AU_NUMBERS)))
    index = {n: i for i, n in enumerate(AU_NUMBERS)}
    intensity = np.clip(latent[:, [index[int(c[2:4])] for c in AU_INTENSITY]], 0, 5)
    presence = latent[:, [index[int(c[2:4])] for c in AU_PRESENCE]] + rng.normal(0, 0.2, (n_frames, len(AU_PRESENCE))) > 1.0
    success = rng.random(n_frames) > 0.05
    aus = np.concatenate([intensity, presence], axis=1) * success[:, None]  # OpenFace writes 0 when untracked
    aus = aus.round(2)  # the precision OpenFace writes, so au_means.csv matches the CSVs
    confidence = np.where(success, rng.uniform(0.85, 0.98, n_frames), rng.uniform(0.0, 0.3, n_frames))
    frames = np.arange(1, n_frames + 1)
    return np.column_stack([frames, np.zeros(n_frames), (frames - 1) / VIDEO_FPS, confidence, success, aus])


# OpenFace separates columns with ", ", so every name after the first starts with a space.
OPENFACE_HEADER = ", ".join(["frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS])
OPENFACE_ROW = ", ".join(["%d", "%d", "%.3f", "%.2f", "%d"] + ["%.2f"] * len(AU_COLUMNS))


def _write_openface(path: Path, track: np.ndarray) -> None:
    path.write_text("\n".join([OPENFACE_HEADER, *(OPENFACE_ROW % tuple(row) for row in track.tolist())]) + "\n")


def generate(root: Path, seed: int = 0) -> None:
    """Write the corpus under ``root`` (atomically: a half-written corpus is never used)."""
    rng = np.random.default_rng(seed)
    face_rng = np.random.default_rng(seed + 1)  # its own stream: changing the face leaves audio and text alone
    n_au = len(AU_NUMBERS)
    prototypes = {e: face_rng.uniform(0.5, 2.5, n_au) * (face_rng.random(n_au) < 0.4) for e in EMOTIONS}
    speakers = [
        {"f0": rng.uniform(100, 230), "tilt": rng.uniform(0.8, 1.6), "au_offset": face_rng.normal(0.3, 0.35, n_au)}
        for _ in range(N_SPEAKERS)
    ]
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    au_rows, text_rows = [], []
    for s, spk in enumerate(speakers, start=1):
        (tmp / f"speaker_{s:02d}").mkdir()
        for e, emotion in enumerate(EMOTIONS):
            pitch, energy, rate = PROSODY[emotion]
            for k in range(CLIPS_PER_EMOTION):
                clip_id = f"{s:02d}-{e:02d}-{k:02d}"
                audio = _voice(rng, spk["f0"], spk["tilt"], pitch, energy, rate)
                sf.write(tmp / f"speaker_{s:02d}" / f"{clip_id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                apex = np.clip(prototypes[emotion] + face_rng.normal(0, 0.9, n_au), 0, None)
                track = _face_track(face_rng, apex, spk["au_offset"], DYNAMICS[emotion], int(face_rng.integers(20, 61)))
                _write_openface(tmp / f"speaker_{s:02d}" / f"{clip_id}.csv", track)
                tracked = track[track[:, 4] == 1, 5:]
                au_rows.append([clip_id, *tracked.mean(axis=0).round(4)])
                n_cue = rng.integers(0, 3)  # some texts carry no emotional word at all
                words = list(rng.choice(FILLER, 5)) + list(rng.choice(WORDS[emotion], n_cue))
                text_rows.append([clip_id, " ".join(rng.permutation(words))])
    pd.DataFrame(au_rows, columns=["clip_id", *AU_COLUMNS]).to_csv(tmp / "au_means.csv", index=False)
    pd.DataFrame(text_rows, columns=["clip_id", "text"]).to_csv(tmp / "texts.csv", index=False)
    (tmp / "VERSION").write_text(GENERATOR_VERSION)
    try:
        os.replace(tmp, root)
    except OSError:  # another process generated it first
        shutil.rmtree(tmp, ignore_errors=True)


NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)$")


class SyntheticNameError(CorpusFormatError):
    """A file of the synthetic corpus whose name is not speaker-emotion-take."""


def parse_name(path: Path) -> dict:
    """Speaker, emotion index and take of ``speaker_SS/SS-EE-KK.wav``, checked against the folder."""
    match = NAME.match(path.stem)
    if not match:
        raise SyntheticNameError(f"{path}: not a synthetic clip name (expected SS-EE-KK: speaker, emotion, take)")
    speaker, emotion, take = (int(g) for g in match.groups())
    if not 1 <= speaker <= N_SPEAKERS:
        raise SyntheticNameError(f"{path}: speaker {speaker:02d} is outside 01-{N_SPEAKERS:02d}")
    if not 0 <= emotion < len(EMOTIONS):
        raise SyntheticNameError(f"{path}: emotion code {emotion:02d} is outside 00-{len(EMOTIONS) - 1:02d} "
                                 f"({', '.join(EMOTIONS)})")
    if not 0 <= take < CLIPS_PER_EMOTION:
        raise SyntheticNameError(f"{path}: take {take:02d} is outside 00-{CLIPS_PER_EMOTION - 1:02d}")
    folder = path.parent.name
    if folder.startswith("speaker_") and folder != f"speaker_{speaker:02d}":
        raise SyntheticNameError(f"{path}: speaker field {speaker:02d} does not match its folder {folder}")
    return {"clip_id": path.stem, "subject": speaker, "emotion": emotion, "take": take}


@CORPORA.register("synthetic")
class Synthetic(Corpus):
    tasks = (ClassificationTask("emotion", EMOTIONS),)
    primary_metric = "accuracy"
    protocol = "subject-wise 3-fold CV over 6 synthetic speakers; val = 1 training speaker"
    dialogue_columns = ("dialogue", "utterance")

    def corpus_root(self) -> Path:
        base = self.data_root or default_cache_dir()
        return base / f"synthetic-v{GENERATOR_VERSION}"

    def build_manifest(self) -> pd.DataFrame:
        root = self.corpus_root()
        if not (root / "VERSION").exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            log.info("synthetic: generating the corpus into %s", root)
            generate(root)
        texts = pd.read_csv(root / "texts.csv", dtype={"clip_id": str}).set_index("clip_id")["text"]
        rows = []
        for path in sorted(root.glob("speaker_*/*.wav")):
            rows.append({**parse_name(path), "audio_path": str(path)})
        manifest = pd.DataFrame(rows)
        # Conversations for methods that read context: each take k of a speaker is a dialogue of
        # that speaker's six emotions, in a fixed shuffled order (so position says nothing).
        take = manifest.pop("take")
        manifest["dialogue"] = [f"{s:02d}-{k:02d}" for s, k in zip(manifest["subject"], take)]
        manifest["utterance"] = [int(np.random.default_rng(100 * s + k).permutation(len(EMOTIONS))[e])
                                 for s, k, e in zip(manifest["subject"], take, manifest["emotion"])]
        manifest["openface_path"] = [str(Path(p).with_suffix(".csv")) for p in manifest["audio_path"]]
        manifest["au_means_path"] = str(root / "au_means.csv")
        manifest["text"] = manifest["clip_id"].map(texts)
        return manifest

    def folds(self, manifest: pd.DataFrame):
        return subject_kfold(manifest, [[1, 2], [3, 4], [5, 6]], val_fraction=0.25, seed=0)
