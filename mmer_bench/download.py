"""Fetch public corpora into a data root: ``mmer download ravdess --data-root PATH``.

RAVDESS comes from its Zenodo record: the record's JSON lists every archive with its size and
md5, so each archive is streamed to ``ravdess/.downloads/NAME.part``, checked against both and
only then renamed; a later run skips archives already there with the right checksum. Archives
are extracted into ``DATA_ROOT/ravdess`` (they hold ``Actor_XX/`` folders at their top level).
The record's md5s are kept in ``ravdess/.downloads/MD5SUMS`` and the md5 of every file extracted
from a verified archive in ``ravdess/MD5SUMS`` (``md5sum -c`` format), which ``mmer describe
ravdess --check`` verifies later.

CMU-MOSEI's computational sequences are fetched from the CMU-Multimodal SDK's public host into
``DATA_ROOT/mosei`` (no checksums are published: a file already there is kept); the standard
folds, ``mosei_std_folds.json``, come from the SDK's ``cmu_mosei_std_folds.py`` and are not fetched.

This module avoids importing torch or lightning so that the command starts at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin
from urllib.request import Request, urlopen

from tqdm import tqdm

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
RAVDESS_RECORD = "1188976"
RAVDESS_PAGE = f"https://zenodo.org/record/{RAVDESS_RECORD}"
AUDIO_ARCHIVE = "Audio_Speech_Actors_01-24.zip"
VIDEO_ARCHIVE = re.compile(r"^Video_Speech_Actor_\d\d\.zip$")
TIMEOUT = 30  # seconds without data before a connection counts as lost
CHUNK = 1 << 20
# Network failures: URLError covers refused connections and HTTP errors; the others can
# surface mid-stream, after urlopen has returned.
NETWORK_ERRORS = (OSError, http.client.HTTPException)

MOSEI_HOST = "http://immortal.multicomp.cs.cmu.edu"
# The SDK's public computational sequences of CMU-MOSEI (path under the host).
MOSEI_FILES = (
    "CMU-MOSEI/labels/CMU_MOSEI_Labels.csd",
    "CMU-MOSEI/language/CMU_MOSEI_TimestampedWordVectors.csd",
    "CMU-MOSEI/language/CMU_MOSEI_TimestampedWords.csd",
    "CMU-MOSEI/acoustic/CMU_MOSEI_COVAREP.csd",
    "CMU-MOSEI/visual/CMU_MOSEI_VisualFacet42.csd",
    "CMU-MOSEI/visual/CMU_MOSEI_VisualOpenFace2.csd",
)

# Corpora that `mmer download` cannot fetch, and what to do instead.
NOT_DOWNLOADABLE = {
    "meld": "MELD is public, but its download is not implemented yet: get MELD.Raw.tar.gz from "
            "https://affective-meld.github.io/ yourself.",
    "iemocap": "IEMOCAP is distributed under a EULA: request it at https://sail.usc.edu/iemocap/.",
    "synthetic": "the synthetic corpus is generated on the fly: there is nothing to download.",
}


class DownloadError(RuntimeError):
    """A corpus could not be fetched; the message says how to get it by hand."""


class ChecksumError(DownloadError):
    """A downloaded archive does not match the size or md5 its record gives."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    size: int
    md5: str


def download(corpus: str, data_root: Path, base_url: str | None = None, include_video: bool = False) -> Path:
    """Fetch ``corpus`` into ``data_root/<corpus>`` and return that folder."""
    if corpus == "ravdess":
        return download_ravdess(Path(data_root), base_url or ZENODO, include_video)
    if corpus == "mosei":
        return download_mosei(Path(data_root), base_url or MOSEI_HOST)
    note = NOT_DOWNLOADABLE.get(corpus, f"{corpus!r} is not a corpus that mmer download knows.")
    raise NotImplementedError(f"mmer download can fetch: ravdess, mosei. {note}")


def mosei_urls(base_url: str = MOSEI_HOST) -> list[str]:
    return [f"{base_url.rstrip('/')}/{path}" for path in MOSEI_FILES]


def download_mosei(data_root: Path, base_url: str) -> Path:
    """Fetch the CMU-MOSEI computational sequences into ``data_root/mosei`` (several GB)."""
    root = data_root / "mosei"
    urls = mosei_urls(base_url)
    hint = ("download these files yourself into " + str(root) + ":\n  " + "\n  ".join(urls)
            + "\nand write mosei_std_folds.json from the SDK's cmu_mosei_std_folds.py")
    root.mkdir(parents=True, exist_ok=True)
    for url in urls:
        target = root / PurePosixPath(url).name
        if target.is_file():
            log.info("%s is already downloaded", target)
            continue
        part = target.with_name(target.name + ".part")
        try:
            with urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
        except NETWORK_ERRORS as error:
            part.unlink(missing_ok=True)
            raise DownloadError(f"cannot download {url} ({error}); {hint}") from error
        part.replace(target)
    if not (root / "mosei_std_folds.json").is_file():
        log.warning("%s/mosei_std_folds.json is missing: write it from the SDK's cmu_mosei_std_folds.py", root)
    return root


def download_ravdess(data_root: Path, base_url: str, include_video: bool) -> Path:
    root = data_root / "ravdess"
    names = [AUDIO_ARCHIVE] + (["Video_Speech_Actor_XX.zip (01-24)"] if include_video else [])
    hint = _manual_hint(names, root)
    record_url = f"{base_url.rstrip('/')}/api/records/{RAVDESS_RECORD}"
    files = _pick_ravdess_files(_fetch_record(record_url, hint), record_url, include_video, hint)
    for remote in files:
        archive = _fetch_file(remote, root / ".downloads", hint)
        _add_sums(root / ".downloads" / "MD5SUMS", {remote.name: remote.md5})
        _add_sums(root / "MD5SUMS", safe_extract(archive, root))
    if not any(root.glob("Actor_[0-9][0-9]")):
        raise DownloadError(f"the archives held no Actor_XX folders; {hint}")
    log.info("RAVDESS is ready under %s", root)
    return root


def _manual_hint(names: list[str], root: Path) -> str:
    return (f"download {', '.join(names)} from {RAVDESS_PAGE} yourself and extract them into {root} "
            f"so that {root}/Actor_01/03-01-01-01-01-01-01.wav (Actor_XX/...) exists")


def _fetch_record(url: str, hint: str) -> dict:
    try:
        with urlopen(Request(url, headers={"Accept": "application/json"}), timeout=TIMEOUT) as response:
            meta = json.load(response)
    except NETWORK_ERRORS as error:
        raise DownloadError(f"cannot reach {url} ({error}); {hint}") from error
    except ValueError as error:  # e.g. a proxy's error page rather than the record
        raise DownloadError(f"{url} did not return the record's JSON ({error}); {hint}") from error
    if not isinstance(meta, dict):
        raise DownloadError(f"{url} did not return a record object; {hint}")
    return meta


def _pick_ravdess_files(meta: dict, record_url: str, include_video: bool, hint: str) -> list[RemoteFile]:
    try:
        listed = {entry["key"]: entry for entry in meta.get("files", [])}
        if AUDIO_ARCHIVE not in listed:
            raise DownloadError(f"the record at {record_url} does not list {AUDIO_ARCHIVE}; {hint}")
        wanted = [AUDIO_ARCHIVE]
        if include_video:
            wanted += sorted(name for name in listed if VIDEO_ARCHIVE.match(name))
        return [_remote_file(listed[name], record_url) for name in wanted]
    except (KeyError, TypeError, ValueError) as error:  # a record in a format we do not know
        raise DownloadError(f"cannot read the file list of {record_url} ({error!r}); {hint}") from error


def _remote_file(entry: dict, record_url: str) -> RemoteFile:
    algorithm, _, digest = entry["checksum"].rpartition(":")
    if algorithm not in ("", "md5"):
        raise ValueError(f"{entry['key']}: the record gives a {algorithm} checksum, not md5")
    # Links may be relative to the record; urljoin leaves absolute ones as they are.
    return RemoteFile(entry["key"], urljoin(record_url, entry["links"]["self"]), int(entry["size"]), digest.lower())


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(path: Path, remote: RemoteFile) -> bool:
    # The size check first: it spares hashing a partial or foreign file.
    return path.is_file() and path.stat().st_size == remote.size and _md5(path) == remote.md5


def _fetch_file(remote: RemoteFile, folder: Path, hint: str) -> Path:
    """Stream ``remote`` into ``folder``, verified; an archive already there is kept."""
    target = folder / remote.name
    if _is_complete(target, remote):
        log.info("%s is already downloaded", target)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        md5, size = _stream(remote, part)
    except NETWORK_ERRORS as error:
        part.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {remote.name} from {remote.url} ({error}); {hint}") from error
    if (md5, size) != (remote.md5, remote.size):
        part.unlink()
        raise ChecksumError(f"{remote.name}: expected md5 {remote.md5} ({remote.size} bytes) but got md5 {md5} "
                            f"({size} bytes); the corrupt file was deleted, run the download again")
    part.replace(target)  # only a verified archive ever carries the final name
    return target


def _stream(remote: RemoteFile, part: Path) -> tuple[str, int]:
    """Write the remote file to ``part``; its md5 and size, computed on the way."""
    digest, size = hashlib.md5(), 0
    with (urlopen(remote.url, timeout=TIMEOUT) as response, open(part, "wb") as out,
          tqdm(total=remote.size, unit="B", unit_scale=True, unit_divisor=1024, desc=remote.name) as bar):
        for chunk in iter(lambda: response.read(CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), size


def safe_extract(archive: Path, dest: Path) -> dict[str, str]:
    """Extract a zip into ``dest``, refusing members that would land outside it. Files already
    there with the member's size are kept, so a second run does not rewrite the corpus. Returns
    the md5 of each extracted file (its path relative to ``dest``, "/"-separated)."""
    sums = {}
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            _check_member(member.filename, archive)
        for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", leave=False):
            target = dest.joinpath(*PurePosixPath(member.filename).parts)
            name = PurePosixPath(*PurePosixPath(member.filename).parts).as_posix()
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not (target.is_file() and target.stat().st_size == member.file_size):
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.md5()
                # zipfile checks each member's CRC-32 as it is read: a damaged member raises here.
                with bundle.open(member) as source, open(target, "wb") as out:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                sums[name] = digest.hexdigest()
            else:
                sums[name] = _md5(target)
    return sums


def _add_sums(listing: Path, sums: dict[str, str]) -> None:
    """Merge ``sums`` (name -> md5) into an ``md5sum``-format list, kept sorted by name."""
    entries = {}
    if listing.is_file():
        for line in listing.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name:
                entries[name] = digest
    entries.update(sums)
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items())))


def _check_member(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"{archive.name} holds an unsafe member {name!r} (absolute or with '..'); "
                            "not extracting it")
