"""Cached re-read of the feature store, checksums verified: eGeMAPS functionals and log-mels of
every RAVDESS clip (1,440 with ../shared/data).

The first ``extract`` fills the store (skipped when it is already there); the timed part is a
second ``extract`` of the same key, which reads the Parquet entry back and verifies every row's
xxh3 checksum. Targets (issue 14): eGeMAPS < 0.1 s, log-mels < 1 s. Also prints the time of the
checksums alone, so that their share of a re-read shows.

    python benchmarks/store_read.py --data-root ../shared/data [--cache-dir DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import pyarrow.parquet as pq  # noqa: E402

from mmer_bench.features.base import extract  # noqa: E402
from mmer_bench.features.store import FeatureStore, row_checksum  # noqa: E402
from mmer_bench.registry import CORPORA, EXTRACTORS  # noqa: E402


def checksum_only(path) -> float:
    """Seconds to hash every row of a stored entry (already decoded), without the Parquet read."""
    table = pq.read_table(path, memory_map=True)
    rows = list(zip(table.column("clip_id").to_pylist(), table.column("shape").to_pylist(),
                    [v.as_buffer() if v.is_valid else None for v in table.column("values")],
                    table.column("error").to_pylist()))
    start = time.perf_counter()
    for clip_id, shape, values, error in rows:
        row_checksum(clip_id, shape, values, error)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--cache-dir", help="feature store root (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    corpus = CORPORA.get("ravdess")(args.data_root)
    manifest = corpus.manifest()
    manifest_hash = corpus.manifest_hash(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(args.cache_dir or tmp)
        print(f"RAVDESS: {len(manifest)} clips; store {store.root}")
        for name, target in (("egemaps", 0.1), ("logmel", 1.0)):
            extractor = EXTRACTORS.get(name)()
            start = time.perf_counter()
            extract(extractor, manifest, manifest_hash, store, args.workers)
            fill = time.perf_counter() - start
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                features = extract(extractor, manifest, manifest_hash, store)
                times.append(time.perf_counter() - start)
            path = store.path(name, extractor.cache_key(manifest_hash))
            size = path.stat().st_size / 2**20
            print(f"{name}: {len(features.arrays)} clips, {size:.1f} MiB; fill (or first read) {fill:.1f} s; cached re-read "
                  f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
                  f"{args.repeat} runs; target < {target:g} s); checksums alone {checksum_only(path):.3f} s")


if __name__ == "__main__":
    main()
