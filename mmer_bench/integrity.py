"""Checks of a corpus on disk for ``mmer describe``: media files and published checksums.

- ``quick_problems``: what can be seen without decoding (a missing or empty file, a WAV whose
  header announces more audio than the file holds); cheap enough for every ``mmer describe``.
- ``decode_problems``: ``mmer describe --check`` decodes every media file with the loaders the
  extractors use (``load_audio``, ``read_frames``, ``read_openface_frames``), in a process pool
  with a progress bar, so each problem an extraction would meet is listed up front, with the
  file and the reason.
- ``checksum_problems``: verifies every checksum list found beside the corpus, in the format
  of ``sha256sum``/``md5sum`` (``SHA256SUMS``, ``MD5SUMS``; ``mmer download`` writes the
  archives' published Zenodo md5s to ``.downloads/MD5SUMS`` and the md5s of the files it
  extracted from those verified archives to ``MD5SUMS``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

CHECKSUM_FILES = {"SHA256SUMS": "sha256", "MD5SUMS": "md5", "SHA1SUMS": "sha1"}
# Manifest columns whose files are decoded by --check (a shared table such as au_means_path is
# read by its extractor as a whole).
DECODED_COLUMNS = ("audio_path", "video_path", "openface_path")


def media_files(manifest: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, path) of every media file the manifest names, each once, in manifest order."""
    seen: dict[str, str] = {}
    for column in DECODED_COLUMNS:
        if column in manifest.columns:
            for path in manifest[column]:
                if isinstance(path, str) and path and path not in seen:
                    seen[path] = column
    return [(column, path) for path, column in seen.items()]


def quick_problems(manifest: pd.DataFrame) -> dict[str, str]:
    """path -> problem, for what shows without decoding: missing or empty files, WAV headers that
    announce more audio than the file holds."""
    from mmer_bench.features.audio import riff_shortfall

    problems = {}
    for _, path in media_files(manifest):
        file = Path(path)
        if not file.is_file():
            problems[path] = f"{path}: missing"
        elif file.stat().st_size == 0:
            problems[path] = f"{path}: empty file (0 bytes)"
        elif file.suffix.lower() == ".wav":
            shortfall = riff_shortfall(path)
            if shortfall:
                problems[path] = f"{path}: truncated: {shortfall}"
    return problems


def _decode(item: tuple[str, str]) -> tuple[str, str | None]:
    column, path = item
    try:
        if column == "audio_path":
            from mmer_bench.features.audio import load_audio

            load_audio(path)
        elif column == "video_path":
            _decode_video(path)
        else:
            from mmer_bench.features.face import read_openface_frames

            read_openface_frames(path)
    except Exception as exc:  # every reason a file cannot be used is reported
        message = f"{type(exc).__name__}: {exc}"
        return path, message if path in message else f"{path}: {message}"
    return path, None


def _decode_video(path: str) -> None:
    import av

    from mmer_bench.features.audio import load_audio
    from mmer_bench.features.video import read_frames

    # Every frame is decoded (read_frames compares their span with the declared duration); one
    # a second is converted, small, since only decoding matters here.
    read_frames(path, "fps", fps=1.0, max_side=32)
    with av.open(path) as container:
        has_audio = bool(container.streams.audio)
    if has_audio:
        load_audio(path)


def decode_problems(manifest: pd.DataFrame, workers: int | None = None) -> tuple[int, dict[str, str]]:
    """(files decoded, path -> problem of each unusable file), decoding in ``workers`` processes."""
    items = media_files(manifest)
    workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
    progress = tqdm(total=len(items), desc="decoding media", unit="file", mininterval=0.5)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_decode, items, chunksize=max(1, min(16, len(items) // (workers * 8))))
            problems = _collect(results, progress)
    else:
        problems = _collect(map(_decode, items), progress)
    progress.close()
    return len(items), problems


def _collect(results: Iterable[tuple[str, str | None]], progress) -> dict[str, str]:
    problems = {}
    for path, problem in results:
        progress.update()
        if problem:
            problems[path] = problem
    return problems


def checksum_lists(folders: Iterable[Path]) -> list[Path]:
    """The checksum files (CHECKSUM_FILES) in each folder and its ``.downloads`` subfolder."""
    found = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        for where in (folder, folder / ".downloads"):
            found += [where / name for name in CHECKSUM_FILES if (where / name).is_file()]
    return found


def checksum_problems(listing: Path) -> tuple[int, list[str]]:
    """(files listed, a line per missing or mismatching file) of one ``*SUMS`` file."""
    algorithm = CHECKSUM_FILES[listing.name]
    entries = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.lstrip(" *")  # "  name" (text mode) or " *name" (binary mode)
        if not name or not digest:
            entries.append((None, f"{listing}, line {number}: not a '<digest>  <file>' line"))
            continue
        entries.append((listing.parent / name, digest.lower()))
    problems = []
    for path, expected in tqdm(entries, desc=f"verifying {listing.name}", unit="file", mininterval=0.5):
        if path is None:
            problems.append(expected)
        elif not path.is_file():
            problems.append(f"{path}: missing (listed in {listing})")
        else:
            found = file_digest(path, algorithm)
            if found != expected:
                problems.append(f"{path}: {algorithm} {found} does not match {expected} listed in {listing}")
    return len(entries), problems


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
