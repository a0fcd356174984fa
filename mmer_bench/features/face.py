"""Facial Action Units, gaze and head pose from OpenFace 2 outputs.

Two sources: a table of per-clip AU means (``clip`` column + AU columns, as released with
Luna-Jimenez et al. 2022 for RAVDESS) and OpenFace ``FeatureExtraction`` per-frame CSVs (its own
column layout, names padded with spaces, ``success`` flag and tracking ``confidence`` per frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

AU_INTENSITY = [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)]
AU_PRESENCE = [f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)]
AU_COLUMNS = AU_INTENSITY + AU_PRESENCE  # 35, the order OpenFace writes them

# Column groups of an OpenFace 2 FeatureExtraction CSV, each in the order OpenFace writes it.
OPENFACE_GROUPS: dict[str, list[str]] = {
    "au_r": AU_INTENSITY,  # AU intensities, 0-5
    "au_c": AU_PRESENCE,  # AU presence, 0 or 1
    # Gaze direction of each eye (unit vectors in camera space), then the mean gaze angles (rad).
    "gaze": [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"],
    # Head position (mm, camera space) and rotation (rad, pitch / yaw / roll).
    "pose": ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"],
    "landmarks": [f"{a}_{i}" for a in "xy" for i in range(68)],  # 2D, pixels
    "landmarks_3d": [f"{a}_{i}" for a in "XYZ" for i in range(68)],  # 3D, mm
    "timestamp": ["timestamp"],  # seconds: where each kept frame lies once untracked ones are dropped
}


def read_openface_frames(path: str, only_successful: bool = True) -> np.ndarray:
    """The AU columns of one OpenFace per-frame CSV, frames x 35."""
    wanted = {*AU_COLUMNS, "success"}  # only these are parsed: a full OpenFace CSV has ~700 columns
    frame = pd.read_csv(path, skipinitialspace=True, usecols=lambda c: c.strip() in wanted)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in AU_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not an OpenFace FeatureExtraction CSV: columns {missing[:3]}... are missing")
    if only_successful and "success" in frame.columns:
        frame = frame[frame["success"] == 1]
    if frame.empty:
        raise ValueError("OpenFace tracked no face in any frame")
    return frame[AU_COLUMNS].to_numpy(np.float32)


class OpenFaceError(ValueError):
    """An OpenFace CSV lacks columns, or tracked too few frames; the message names the file."""


@dataclass
class OpenFaceFrames:
    """The tracked frames of one OpenFace CSV: their values, and how many frames were dropped."""

    values: np.ndarray  # (tracked frames, columns), float32
    columns: list[str]
    frames: int  # frames in the file
    dropped: int  # frames with success 0 or confidence below the threshold


def read_openface(path: str, columns: list[str], min_confidence: float = 0.0) -> OpenFaceFrames:
    """``columns`` of the frames of one OpenFace FeatureExtraction CSV in which OpenFace tracked
    the face (``success`` 1 and ``confidence`` >= ``min_confidence``); untracked frames, which
    OpenFace fills with zeros, are dropped and counted, never returned as data."""
    wanted = set(columns) | {"success", "confidence"}
    try:
        # Only the wanted columns are parsed: a full OpenFace CSV has ~700 (landmarks, shape
        # parameters). OpenFace writes ", " between fields, so names after the first start with a
        # space; usecols sees the raw names.
        frame = pd.read_csv(path, skipinitialspace=True, usecols=lambda c: c.strip() in wanted)
    except Exception as exc:
        raise OpenFaceError(f"{path}: cannot read as a CSV ({type(exc).__name__}: {exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in [*columns, "success", "confidence"] if c not in frame.columns]
    if missing:
        groups = sorted({g for g, cols in OPENFACE_GROUPS.items() for c in missing if c in cols})
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise OpenFaceError(f"{path}: not the OpenFace FeatureExtraction output asked for: columns {shown} "
                            f"are missing" + (f" (groups {', '.join(groups)})" if groups else ""))
    tracked = (frame["success"].to_numpy() == 1) & (frame["confidence"].to_numpy() >= min_confidence)
    values = frame.loc[tracked, columns].to_numpy(np.float32)
    return OpenFaceFrames(values, list(columns), len(frame), int((~tracked).sum()))


@EXTRACTORS.register("au-means")
@dataclass
class AUMeans(Extractor):
    """Per-clip mean of the 35 OpenFace AUs (17 intensities, 18 presences).

    Read from the corpus's AU-means table (manifest column ``au_means_path``, key = the table's
    ``clip`` column mapped through the corpus's clip id) or, when a clip has a per-frame OpenFace
    CSV (``openface_path``), averaged over its successfully tracked frames.
    """

    kind = "vector"
    source_column = "openface_path"
    extra_columns = ("au_means_path",)

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict:
        results: dict = {}
        tables: dict[str, pd.DataFrame] = {}
        for row in manifest.itertuples(index=False):
            per_frame = getattr(row, "openface_path", None)
            table_path = getattr(row, "au_means_path", None)
            if isinstance(per_frame, str) and per_frame:
                _, results[row.clip_id] = self._safe_extract((row.clip_id, per_frame))
            elif isinstance(table_path, str) and table_path:
                if table_path not in tables:
                    tables[table_path] = _read_means_table(table_path)
                table = tables[table_path]
                if row.clip_id in table.index:
                    values = table.loc[row.clip_id].to_numpy(np.float32)
                    ok = np.all(np.isfinite(values))
                    results[row.clip_id] = values if ok else f"{table_path}: NaN AU values for clip {row.clip_id}"
                else:
                    results[row.clip_id] = f"{table_path}: no AU row for clip {row.clip_id}"
            else:
                results[row.clip_id] = f"clip {row.clip_id} has no OpenFace output"
        return results

    def extract_clip(self, path: str) -> np.ndarray:
        return read_openface_frames(path).mean(axis=0)


def _read_means_table(path: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"clip": str, "clip_id": str})
    missing = [c for c in AU_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: AU columns {missing} are missing")
    if "clip_id" in table.columns:
        table.index = table["clip_id"]
    else:
        # RAVDESS's table names clips by their 7-field video name; clip ids drop the modality field.
        table.index = table["clip"].str.split("-", n=1).str[1]
    if table.index.duplicated().any():
        raise ValueError(f"{path}: clips {list(table.index[table.index.duplicated()][:3])} appear twice")
    return table[AU_COLUMNS]


@EXTRACTORS.register("au-sequence")
@dataclass
class AUSequence(Extractor):
    """Per-frame OpenFace AUs (frames x 35) from FeatureExtraction CSVs, untracked frames dropped."""

    kind = "sequence"
    source_column = "openface_path"

    def extract_clip(self, path: str) -> np.ndarray:
        return read_openface_frames(path)


@EXTRACTORS.register("openface-sequence")
@dataclass
class OpenFaceSequence(Extractor):
    """Per-frame OpenFace 2 features (frames x columns) from FeatureExtraction CSVs.

    ``groups`` picks the columns, concatenated in the order given (see OPENFACE_GROUPS):
    ``au_r`` (17 AU intensities), ``au_c`` (18 AU presences), ``gaze`` (8: both eyes' gaze
    vectors and the two gaze angles), ``pose`` (6: head translation and rotation), ``landmarks``
    (136: 68 2D points, all x then all y), ``landmarks_3d`` (204) and ``timestamp`` (1, seconds).

    Frames OpenFace did not track (``success`` 0, or ``confidence`` below ``min_confidence``)
    are dropped, never passed on as the zeros OpenFace writes for them; add the ``timestamp``
    group to keep each remaining frame's time. A clip whose tracked share of frames is below
    ``min_tracked`` (by default: a clip with no tracked frame) is reported as failed, with the
    counts, instead of yielding a short or empty sequence.
    """

    groups: tuple[str, ...] = ("au_r", "au_c", "gaze", "pose")
    min_confidence: float = 0.0
    min_tracked: float = 0.0
    kind = "sequence"
    source_column = "openface_path"

    def __post_init__(self):
        if isinstance(self.groups, str):
            self.groups = tuple(g.strip() for g in self.groups.split(",") if g.strip())
        self.groups = tuple(self.groups)
        unknown = [g for g in self.groups if g not in OPENFACE_GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"openface-sequence groups {unknown or '(none)'} are not among {list(OPENFACE_GROUPS)}")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"openface-sequence groups {list(self.groups)} name a group twice")

    @property
    def columns(self) -> list[str]:
        """The feature names, one per output column."""
        return [c for g in self.groups for c in OPENFACE_GROUPS[g]]

    def extract_clip(self, path: str) -> np.ndarray:
        out = read_openface(path, self.columns, self.min_confidence)
        tracked = out.frames - out.dropped
        if tracked == 0 or tracked < self.min_tracked * out.frames:
            need = f"fewer than min_tracked {self.min_tracked:.0%}" if tracked else "none usable"
            raise OpenFaceError(f"{path}: OpenFace tracked the face in {tracked} of {out.frames} frames "
                                f"(success 1, confidence >= {self.min_confidence}): {need}")
        return out.values
