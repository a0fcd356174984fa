"""A content-addressed Parquet feature store.

One Parquet file per (extractor name, version, parameters, manifest hash): a row per clip with
its array (shape, and its values as the raw bytes of little-endian float32 in C order) or the
reason it could not be extracted. A key that is already stored is read back instead of being
extracted again.

The values are one binary cell per clip rather than a Parquet list of floats: a list column
stores repetition and definition levels for every single value, and decoding those took half of
a cached re-read of 1,440 log-mels; a binary cell decodes as one copy.

Every row carries a checksum (xxh3-64 of its clip id, shape, values bytes and error) written with
it and verified on read: a file that is unreadable, altered or written before the store kept
checksums raises ``StoreEntryError`` naming the file, and ``features.base.extract`` recomputes
that entry instead of training on it. xxh3 hashes at memory speed, so verifying keeps a cached
re-read fast (``benchmarks/store_read.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("shape", pa.list_(pa.int32())),
        ("values", pa.large_binary()),  # little-endian float32, C order; null when the clip failed
        ("error", pa.string()),  # null when the clip was extracted
        ("checksum", pa.uint64()),  # row_checksum of the four cells above
    ]
)


class StoreEntryError(RuntimeError):
    """A stored feature file is unreadable or does not match its checksums; names the file."""


def row_checksum(clip_id: str, shape, values, error: str | None) -> int:
    """xxh3-64 over a row's clip id, shape, values bytes (little-endian float32) and error."""
    digest = xxhash.xxh3_64(clip_id.encode())
    digest.update(np.asarray(shape if shape is not None else [-1], np.int32).tobytes())
    if values is not None:
        digest.update(values)
    digest.update(b"\x00" if error is None else b"\x01" + error.encode())
    return digest.intdigest()


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

    def has_current(self, extractor_name: str, key: str) -> bool:
        """Whether the entry exists in today's layout (read from the file's footer alone): False
        for one written before the store kept checksums, which ``extract`` must redo."""
        path = self.path(extractor_name, key)
        try:
            return pq.read_schema(path).remove_metadata() == SCHEMA
        except Exception:  # absent, or not Parquet at all
            return False

    def write(self, extractor_name: str, key: str, results: dict[str, np.ndarray | Exception | str], meta: dict):
        """Store every result at once (``writer`` streams them while they are being extracted)."""
        with self.writer(extractor_name, key, meta) as writer:
            for clip_id, result in results.items():
                writer.add(clip_id, result)

    def set_aside(self, extractor_name: str, key: str) -> Path | None:
        """Move a damaged entry out of the way (renamed, kept for inspection) so that the first
        writer of the recomputed entry can take its place; None when another process already did."""
        path = self.path(extractor_name, key)
        aside = path.with_name(f"{path.name}.damaged-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        return aside

    def writer(self, extractor_name: str, key: str, meta: dict) -> StoreWriter:
        return StoreWriter(self.path(extractor_name, key), meta)

    def read(self, extractor_name: str, key: str) -> FeatureSet:
        """The stored entry, verified row by row; StoreEntryError names the file if it is damaged."""
        path = self.path(extractor_name, key)
        try:
            return _read_verified(path)
        except StoreEntryError:
            raise
        except Exception as exc:  # pyarrow's own messages do not name the file
            raise StoreEntryError(f"{path}: the stored feature file is unreadable ({type(exc).__name__}: {exc})") from exc


def _read_verified(path: Path) -> FeatureSet:
    # Memory-mapped and column chunk by column chunk: the default pre-buffering first copies
    # each whole column chunk into memory and then decodes it into a second copy.
    table = pq.read_table(path, memory_map=True, pre_buffer=False)
    if table.schema.remove_metadata() != SCHEMA:
        raise StoreEntryError(f"{path}: the stored feature file has columns {table.schema.names}, not "
                              f"{SCHEMA.names} (written before the store kept checksums, or not by it)")
    clip_ids = table.column("clip_id").to_pylist()
    shapes = table.column("shape").to_pylist()
    errors = table.column("error").to_pylist()
    checksums = table.column("checksum").to_numpy()
    arrays, failed, damaged = {}, {}, []
    row = 0
    for chunk in table.column("values").chunks:
        # One flat buffer per row group, sliced per clip: no per-value Python objects, and no
        # copy of the whole column into one chunk.
        flat, offsets = _flat_values(chunk)
        for i in range(len(chunk)):
            clip_id, shape, error = clip_ids[row], shapes[row], errors[row]
            values = flat[offsets[i] : offsets[i + 1]]  # empty for a failed clip, as when written
            if row_checksum(clip_id or "", shape, values, error) != int(checksums[row]):
                damaged.append(clip_id)
            elif error is not None:
                failed[clip_id] = error
            else:
                arrays[clip_id] = values.reshape(shape)
            row += 1
    if damaged:
        raise StoreEntryError(f"{path}: {len(damaged)} stored rows do not match their checksums "
                              f"(first: {damaged[:3]}); the file is damaged")
    return FeatureSet(arrays, failed)


def _flat_values(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float32 values, offsets into them with one entry per row plus one) of a values chunk."""
    _, offset_buffer, data = chunk.buffers()
    offsets = np.frombuffer(offset_buffer, np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
    flat = np.frombuffer(data, np.dtype("<f4")) if data is not None else np.zeros(0, np.float32)
    return flat, offsets // 4


_NULL_VALUES = pa.array([None], pa.large_binary())


def _values(result) -> pa.Array:
    """One clip's cell of the values column, over the array's own memory (no copy)."""
    if not isinstance(result, np.ndarray):
        return _NULL_VALUES
    flat = np.ascontiguousarray(result, dtype=np.dtype("<f4")).reshape(-1)
    offsets = pa.py_buffer(np.array([0, flat.nbytes], np.int64))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(flat)])


def _table(rows: list[tuple[str, np.ndarray | Exception | str]]) -> pa.Table:
    # The values column is one chunk per clip over the clip's own buffer: the Parquet writer
    # walks the chunks, so the features are never gathered into one more copy.
    arrays = [np.ascontiguousarray(r, dtype=np.dtype("<f4")) if isinstance(r, np.ndarray) else None for _, r in rows]
    shapes = [list(a.shape) if a is not None else None for a in arrays]
    errors = [None if a is not None else str(r) for a, (_, r) in zip(arrays, rows)]
    checksums = [row_checksum(c, s, a, e) for (c, _), s, a, e in zip(rows, shapes, arrays, errors)]
    return pa.table(
        {
            "clip_id": pa.array([c for c, _ in rows], pa.string()),
            "shape": pa.array(shapes, pa.list_(pa.int32())),
            "values": pa.chunked_array([_values(a) for a in arrays], SCHEMA.field("values").type),
            "error": pa.array(errors, pa.string()),
            "checksum": pa.array(checksums, pa.uint64()),
        },
        schema=SCHEMA,
    )


def _publish(tmp: Path, target: Path) -> bool:
    """Move a finished temporary file into place unless the entry exists already: the first
    writer wins and a reader never sees a torn or replaced file. A hard link fails atomically when
    the target exists (``os.replace`` would silently swap the file under a reader's memory map and
    let the last writer win); on a file system without hard links, fall back to the rename."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        if target.exists():
            return False
        os.replace(tmp, target)
        return True


class StoreWriter:
    """Streams one store entry to disk while its clips are still being extracted.

    ``add`` collects results; every ``group_bytes`` of features become a Parquet row group that a
    background thread encodes and writes (pyarrow releases the GIL), so writing overlaps the
    extraction instead of following it. The entry is written to a temporary file and renamed
    into place by ``commit`` (atomic: a crash or an error never leaves a half-written entry; when
    two processes write the same key at once, the first to commit wins and ``kept`` tells which).
    Use it as a context manager: leaving the block commits, an exception aborts.
    """

    # Float features hardly compress (snappy saved <1% on log-mels, and its encode and decode
    # cost more than the write); dictionary encoding and min/max statistics are no use on them.
    WRITE_OPTIONS = {"compression": "none", "use_dictionary": False, "write_statistics": False,
                     "data_page_size": 1 << 20}

    def __init__(self, target: Path, meta: dict, group_bytes: int = 16 << 20):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        # Unique per writer, also across hosts sharing the cache (pids repeat between machines).
        self.tmp = self.target.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}")
        self.kept = False  # after commit: whether this writer's file became the entry (first writer wins)
        self.schema = SCHEMA.with_metadata({"mmer": json.dumps(meta, default=str)})
        self.group_bytes = group_bytes
        self._rows: list = []
        self._pending = 0
        self._queue: queue.Queue = queue.Queue(maxsize=4)  # bounds the memory held by unwritten groups
        self._error: BaseException | None = None
        # Started with the first row group, not here: by then an extractor's process pool has
        # forked its workers, so no fork ever copies this thread in the middle of a write.
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        writer, done = None, False
        try:
            writer = pq.ParquetWriter(self.tmp, self.schema, **self.WRITE_OPTIONS)
            while not done:
                rows = self._queue.get()
                if rows is None:
                    done = True
                else:
                    writer.write_table(_table(rows))
            writer.close()
        except BaseException as exc:  # handed to the producer at its next add or at commit
            self._error = exc
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass
            while not done:  # keep draining so that the producer never blocks on a full queue
                done = self._queue.get() is None

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing {self.target} failed: {self._error}") from self._error

    def add(self, clip_id: str, result: np.ndarray | Exception | str) -> None:
        self._check()
        self._rows.append((clip_id, result))
        self._pending += result.nbytes if isinstance(result, np.ndarray) else 64
        if self._pending >= self.group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"store-writer-{self.target.stem}", daemon=True)
            self._thread.start()
        if self._rows:
            self._queue.put(self._rows)
            self._rows, self._pending = [], 0

    def commit(self) -> None:
        self._flush()
        self._queue.put(None)
        self._thread.join()
        try:
            self._check()
            self.kept = _publish(self.tmp, self.target)
        finally:
            self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._rows = []
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
