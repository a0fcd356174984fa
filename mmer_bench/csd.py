"""Reader of CMU-Multimodal SDK computational sequences (``.csd``, HDF5), as CMU-MOSEI releases them.

Each file holds one top-level group, the sequence, with ``data/<video_id>/{features, intervals}``
and ``metadata``. Shared by the MOSEI corpus (labels) and the word-aligned features.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mmer_bench.errors import CorpusFormatError, reading


class CsdFormatError(CorpusFormatError):
    """A CMU-MOSEI file (a .csd computational sequence, the label CSV, the folds JSON) that cannot
    be read; the message names the file."""


class ComputationalSequence:
    """Read access to one ``.csd`` file: its metadata and each video's (features, intervals)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with reading(self.path, CsdFormatError):  # h5py's OSError does not name the file
            self.file = h5py.File(self.path, "r")
        roots = list(self.file.keys())
        if len(roots) != 1 or "data" not in self.file[roots[0]]:
            raise CsdFormatError(f"{self.path}: expected one sequence group holding data/ and metadata/, found {roots}")
        self.name = roots[0]
        self.data = self.file[self.name]["data"]

    def metadata(self) -> dict:
        """Metadata entries; values are JSON text in the release (decoded when they parse)."""
        out = {}
        for key, dataset in self.file[self.name].get("metadata", {}).items():
            value = dataset[()]
            value = value[0] if getattr(value, "shape", ()) else value
            value = value.decode() if isinstance(value, bytes) else value
            try:
                out[key] = json.loads(value)
            except (TypeError, ValueError):
                out[key] = value
        return out

    def videos(self) -> list[str]:
        return list(self.data.keys())

    def __contains__(self, video: str) -> bool:
        return video in self.data

    def get(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        group = self.data[video]
        features, intervals = group["features"][()], group["intervals"][()].astype(np.float64)
        if len(features) != len(intervals) or intervals.ndim != 2 or intervals.shape[1] != 2:
            raise CsdFormatError(f"{self.path}: {video} has {len(features)} feature rows and intervals of shape "
                                 f"{intervals.shape}")
        return features, intervals

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
