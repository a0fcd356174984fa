"""A content-addressed Parquet feature store.

One Parquet file per (extractor name, version, parameters, manifest hash): a row per clip with
its array (flattened float32 values and shape) or the reason it could not be extracted. A key
that is already stored is read back instead of being extracted again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("shape", pa.list_(pa.int32())),
        ("values", pa.large_list(pa.float32())),
        ("error", pa.string()),  # null when the clip was extracted
    ]
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMER_CACHE", Path.home() / ".cache" / "mmer-bench"))


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureSet:
    """The stored output of one extractor on one manifest: arrays plus per-clip errors."""

    def __init__(self, arrays: dict[str, np.ndarray], errors: dict[str, str]):
        self.arrays = arrays
        self.errors = errors

    def __len__(self) -> int:
        return len(self.arrays)


class FeatureStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir() / "features"

    def path(self, extractor_name: str, key: str) -> Path:
        return self.root / extractor_name / f"{key}.parquet"

    def has(self, extractor_name: str, key: str) -> bool:
        return self.path(extractor_name, key).exists()

    def write(self, extractor_name: str, key: str, results: dict[str, np.ndarray | Exception | str], meta: dict):
        clip_ids = list(results)
        arrays = [r if isinstance(r, np.ndarray) else None for r in results.values()]
        ok = [a for a in arrays if a is not None]
        # One flat float32 buffer plus offsets: building the list column from per-clip Python
        # lists costs more than computing a log-mel.
        lengths = np.array([a.size if a is not None else 0 for a in arrays], dtype=np.int64)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
        flat = np.concatenate([a.astype(np.float32, copy=False).ravel() for a in ok]) if ok else np.zeros(0, np.float32)
        valid = pa.array([a is not None for a in arrays])
        values = pa.LargeListArray.from_arrays(offsets, pa.array(flat), mask=pa.compute.invert(valid))
        table = pa.table(
            {
                "clip_id": pa.array(clip_ids, pa.string()),
                "shape": pa.array([list(a.shape) if a is not None else None for a in arrays], pa.list_(pa.int32())),
                "values": values,
                "error": pa.array([None if a is not None else str(r) for a, r in zip(arrays, results.values())], pa.string()),
            },
            schema=SCHEMA,
        ).replace_schema_metadata({"mmer": json.dumps(meta, default=str)})
        target = self.path(extractor_name, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written entry

    def read(self, extractor_name: str, key: str) -> FeatureSet:
        table = pq.read_table(self.path(extractor_name, key))
        clip_ids = table.column("clip_id").to_pylist()
        shapes = table.column("shape").to_pylist()
        errors = table.column("error").to_pylist()
        values = table.column("values")
        # One flat buffer for all clips, sliced per clip: far faster than to_pylist on floats.
        chunk = values.combine_chunks()
        flat = chunk.values.to_numpy(zero_copy_only=False)
        offsets = chunk.offsets.to_numpy()
        arrays, failed = {}, {}
        for i, (clip_id, shape, error) in enumerate(zip(clip_ids, shapes, errors)):
            if error is not None:
                failed[clip_id] = error
            else:
                arrays[clip_id] = flat[offsets[i] : offsets[i + 1]].reshape(shape)
        return FeatureSet(arrays, failed)
