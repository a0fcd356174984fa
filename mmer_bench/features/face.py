"""Facial Action Units from OpenFace 2 outputs.

Two sources: a table of per-clip AU means (``clip`` column + AU columns, as released with
Luna-Jimenez et al. 2022 for RAVDESS) and OpenFace ``FeatureExtraction`` per-frame CSVs (its own
column layout, names padded with spaces, ``success`` flag per frame).
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


def read_openface_frames(path: str, only_successful: bool = True) -> np.ndarray:
    """The AU columns of one OpenFace per-frame CSV, frames x 35."""
    frame = pd.read_csv(path, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in AU_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not an OpenFace FeatureExtraction CSV: columns {missing[:3]}... are missing")
    if only_successful and "success" in frame.columns:
        frame = frame[frame["success"] == 1]
    if frame.empty:
        raise ValueError("OpenFace tracked no face in any frame")
    return frame[AU_COLUMNS].to_numpy(np.float32)


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
