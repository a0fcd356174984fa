"""The extractor base class and the one function that runs any extractor through the store."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmer_bench.features.store import FeatureSet, FeatureStore, StoreEntryError, stable_hash

log = logging.getLogger(__name__)


class FeatureExtractionError(RuntimeError):
    """Some clips could not be extracted; the message names each file and its problem."""


@dataclass
class Extractor:
    """One feature: a registered, versioned function of a manifest row.

    Subclasses are dataclasses whose fields are the parameters (they enter the cache key), set
    ``version`` (bump it when the output changes), ``source_column`` (the manifest column holding
    the input path) and ``kind`` ("vector" for one vector per clip, "sequence" for frames x dims),
    and implement ``extract_clip`` (per file, run in a worker pool) or override ``extract_many``
    (when one file holds every clip, such as a table of AU means).
    """

    version = "1"
    source_column = "audio_path"
    # Every other manifest column the extractor reads (a clip can be fed from any of them).
    extra_columns: ClassVar[tuple[str, ...]] = ()
    kind = "vector"
    # Run clips in a process pool when more than one worker is asked for. Off for extractors
    # cheaper than shipping their arrays between processes (a log-mel takes ~1.5 ms a clip;
    # pickling it back costs about as much). ``extract`` writes the store from a background
    # thread either way, so one core computes while the other encodes and writes.
    parallel = True

    @classmethod
    def manifest_columns(cls) -> set[str]:
        """Every manifest column the extractor reads."""
        return {cls.source_column, *cls.extra_columns}

    @property
    def name(self) -> str:
        return self.registry_name

    def params(self) -> dict:
        return asdict(self)

    def cache_key(self, manifest_hash: str, perturbation: dict | None = None) -> str:
        """The store key; a test-time perturbation (features/perturb.py) extends it, so clean keys
        stay what they always were."""
        spec = {"name": self.name, "version": self.version, "params": self.params(), "manifest": manifest_hash}
        if perturbation is not None:
            spec["perturbation"] = perturbation
        return stable_hash(spec)

    def extract_clip(self, path: str) -> np.ndarray:
        raise NotImplementedError

    def _safe_extract(self, item: tuple[str, str]) -> tuple[str, np.ndarray | str]:
        clip_id, path = item
        try:
            out = self.extract_clip(path)
        except Exception as exc:  # recorded per clip with the file name, reported by the caller
            message = f"{type(exc).__name__}: {exc}"
            return clip_id, message if path in str(exc) else f"{path}: {message}"
        if not np.all(np.isfinite(out)):
            return clip_id, f"{path}: the extracted features contain NaN or infinite values"
        return clip_id, out

    def source_items(self, manifest: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """(clip_id, path) pairs to extract, and an error per clip that has no source file."""
        items, missing = [], {}
        for clip_id, path in zip(manifest["clip_id"], manifest.get(self.source_column, pd.Series(dtype=str))):
            if isinstance(path, str) and path:
                items.append((clip_id, path))
            else:
                missing[clip_id] = f"clip {clip_id} has no {self.source_column.replace('_path', '')} file"
        return items, missing

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        return dict(self.iter_results(manifest, workers))

    def iter_results(self, manifest: pd.DataFrame, workers: int) -> Iterator[tuple[str, np.ndarray | str]]:
        """(clip_id, array or error) per clip, in manifest order, as the clips are extracted."""
        items, missing = self.source_items(manifest)
        yield from missing.items()
        progress = tqdm(total=len(items), desc=f"extract {self.name}", unit="clip", mininterval=1.0)
        workers = min(workers, len(items))
        if self.parallel and workers > 1:
            # Chunks keep the inter-process traffic low; the pool uses every core asked for.
            chunksize = max(1, min(32, len(items) // (workers * 8)))
            with ProcessPoolExecutor(max_workers=workers) as pool:
                yield from _counted(pool.map(self._safe_extract, items, chunksize=chunksize), progress)
        else:
            yield from _counted(map(self._safe_extract, items), progress)
        progress.close()


def _counted(outputs, progress):
    for out in outputs:
        yield out
        progress.update()


def default_workers() -> int:
    return int(os.environ.get("MMER_WORKERS", os.cpu_count() or 1))


def extract(
    extractor: Extractor,
    manifest: pd.DataFrame,
    manifest_hash: str,
    store: FeatureStore,
    workers: int | None = None,
    key: str | None = None,
    meta: dict | None = None,
) -> FeatureSet:
    """Return the extractor's features for the manifest, extracting them only if not stored.

    ``key`` replaces the clean key (perturbed media, features/perturb.py); ``meta`` is added to
    the stored entry's metadata. A stored entry that is unreadable or fails its checksums is never
    used: it is logged with its path and extracted again (the rewrite replaces the damaged file
    atomically).
    """
    key = key or extractor.cache_key(manifest_hash)
    if store.has(extractor.name, key):
        try:
            return store.read(extractor.name, key)
        except StoreEntryError as exc:
            aside = store.set_aside(extractor.name, key)  # else first-writer-wins would keep it
            log.warning("%s; extracting %s again%s", exc, extractor.name, f" (damaged file kept as {aside})" if aside else "")
    workers = workers or default_workers()
    if type(extractor).extract_many is Extractor.extract_many:
        stream = extractor.iter_results(manifest, workers)  # written while later clips are extracted
    else:
        stream = iter(extractor.extract_many(manifest, workers).items())
    meta = {"extractor": extractor.name, "version": extractor.version, "params": extractor.params(),
            "manifest": manifest_hash, "kind": extractor.kind, **(meta or {})}
    arrays, errors = {}, {}
    with store.writer(extractor.name, key, meta) as writer:
        for clip_id, out in stream:
            writer.add(clip_id, out)
            if isinstance(out, np.ndarray):
                arrays[clip_id] = out.astype(np.float32, copy=False)
            else:
                errors[clip_id] = str(out)
    if not writer.kept:  # another process stored this key first: use its entry, as every other reader does
        return store.read(extractor.name, key)
    if errors:
        log.warning("%s: %d of %d clips could not be extracted", extractor.name, len(errors), len(arrays) + len(errors))
    return FeatureSet(arrays, errors)  # what was just written: no need to read it back
