"""`mmer download ravdess` against a local stand-in for Zenodo: no test touches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from mmer_bench.cli import main
from mmer_bench.download import AUDIO_ARCHIVE, RAVDESS_RECORD, ChecksumError, DownloadError, download

RECORD_PATH = f"/api/records/{RAVDESS_RECORD}"
CLIPS = ["Actor_01/03-01-05-02-01-01-01.wav", "Actor_01/03-01-03-01-02-01-01.wav", "Actor_02/03-01-01-01-01-01-02.wav"]
VIDEO_ARCHIVE = "Video_Speech_Actor_01.zip"
VIDEO_CLIP = "Actor_01/01-01-05-02-01-01-01.mp4"


def tiny_wav() -> bytes:
    t = np.arange(int(16000 * 0.2)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, 0.1 * np.sin(2 * np.pi * 220 * t), 16000, format="WAV")
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for folder in sorted({name.split("/")[0] for name in members}):
            bundle.writestr(folder + "/", b"")  # the real archives carry folder entries too
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


class Zenodo:
    """Serves a record and its archives; ``hits`` counts the requests per path."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        zenodo = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                zenodo.hits[self.path] = zenodo.hits.get(self.path, 0) + 1
                body = zenodo.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, archives: dict[str, bytes], wrong_md5: str | None = None) -> None:
        """Serve ``archives`` and a record listing them, as Zenodo's REST API does."""
        files = []
        for name, data in archives.items():
            self.routes[f"/files/{name}"] = data
            md5 = "0" * 32 if name == wrong_md5 else hashlib.md5(data).hexdigest()
            files.append({"key": name, "size": len(data), "checksum": f"md5:{md5}",
                          "links": {"self": f"{self.url}/files/{name}"}})
        self.routes[RECORD_PATH] = json.dumps({"id": int(RAVDESS_RECORD), "files": files}).encode()


@pytest.fixture
def zenodo():
    server = Zenodo()
    audio = make_zip({name: tiny_wav() for name in CLIPS})
    server.publish({AUDIO_ARCHIVE: audio, VIDEO_ARCHIVE: make_zip({VIDEO_CLIP: b"not really an mp4"}),
                    "Audio_Song_Actors_01-24.zip": b"never fetched"})
    thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_download_verifies_and_extracts_the_official_layout(zenodo, tmp_path):
    assert main(["download", "ravdess", "--data-root", str(tmp_path), "--base-url", zenodo.url]) == 0
    for name in CLIPS:
        assert (tmp_path / "ravdess" / name).is_file()
    assert (tmp_path / "ravdess" / ".downloads" / AUDIO_ARCHIVE).is_file()
    assert not list(tmp_path.rglob("*.part"))
    # Only the speech audio archive: neither video nor song without being asked.
    assert zenodo.hits.get(f"/files/{VIDEO_ARCHIVE}") is None
    assert zenodo.hits.get("/files/Audio_Song_Actors_01-24.zip") is None

    from mmer_bench.corpora.ravdess import Ravdess  # imports lightning: only where needed

    manifest = Ravdess(tmp_path).manifest()
    assert sorted(manifest["clip_id"]) == sorted(name.split("/")[1][3:-4] for name in CLIPS)
    assert manifest["audio_path"].notna().all()
    assert sorted(manifest["actor"].unique()) == [1, 2]


def test_wrong_md5_raises_and_leaves_nothing_behind(zenodo, tmp_path):
    zenodo.publish({AUDIO_ARCHIVE: zenodo.routes[f"/files/{AUDIO_ARCHIVE}"]}, wrong_md5=AUDIO_ARCHIVE)
    with pytest.raises(ChecksumError) as caught:
        download("ravdess", tmp_path, base_url=zenodo.url)
    message = str(caught.value)
    actual = hashlib.md5(zenodo.routes[f"/files/{AUDIO_ARCHIVE}"]).hexdigest()
    assert AUDIO_ARCHIVE in message and "0" * 32 in message and actual in message
    downloads = tmp_path / "ravdess" / ".downloads"
    assert list(downloads.iterdir()) == []  # neither the .part nor the archive
    assert not list((tmp_path / "ravdess").glob("Actor_*"))


def test_second_call_does_not_download_again(zenodo, tmp_path):
    first = download("ravdess", tmp_path, base_url=zenodo.url)
    second = download("ravdess", tmp_path, base_url=zenodo.url)
    assert first == second == tmp_path / "ravdess"
    assert zenodo.hits[f"/files/{AUDIO_ARCHIVE}"] == 1
    assert zenodo.hits[RECORD_PATH] == 2  # the record is read each time: it holds the checksums


def test_corrupt_local_archive_is_fetched_again(zenodo, tmp_path):
    downloads = tmp_path / "ravdess" / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / AUDIO_ARCHIVE).write_bytes(b"truncated")
    download("ravdess", tmp_path, base_url=zenodo.url)
    assert zenodo.hits[f"/files/{AUDIO_ARCHIVE}"] == 1
    assert (tmp_path / "ravdess" / CLIPS[0]).is_file()


def test_video_archives_on_request(zenodo, tmp_path):
    root = download("ravdess", tmp_path, base_url=zenodo.url, include_video=True)
    assert (root / VIDEO_CLIP).is_file()
    assert zenodo.hits[f"/files/{VIDEO_ARCHIVE}"] == 1
    assert zenodo.hits.get("/files/Audio_Song_Actors_01-24.zip") is None


def test_unsafe_archive_members_are_refused(zenodo, tmp_path):
    zenodo.publish({AUDIO_ARCHIVE: make_zip({"Actor_01/../../evil.wav": b"x"})})
    with pytest.raises(DownloadError, match="unsafe"):
        download("ravdess", tmp_path, base_url=zenodo.url)
    assert not (tmp_path / "evil.wav").exists()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_host_says_what_to_get_and_where(tmp_path):
    with pytest.raises(DownloadError) as caught:
        download("ravdess", tmp_path, base_url=f"http://127.0.0.1:{closed_port()}")
    message = str(caught.value)
    assert AUDIO_ARCHIVE in message
    assert "https://zenodo.org/record/1188976" in message
    assert str(tmp_path / "ravdess" / "Actor_01") in message


def test_unreachable_archive_is_a_download_error(zenodo, tmp_path):
    zenodo.routes.pop(f"/files/{AUDIO_ARCHIVE}")  # listed in the record, but answers 404
    with pytest.raises(DownloadError, match=AUDIO_ARCHIVE):
        download("ravdess", tmp_path, base_url=zenodo.url)
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize("corpus, words", [("meld", "not implemented yet"), ("iemocap", "EULA"), ("nope", "ravdess")])
def test_other_corpora_are_explained(corpus, words, tmp_path):
    with pytest.raises(NotImplementedError, match=words):
        download(corpus, tmp_path)


def test_mosei_offline_names_the_sdk_urls_and_the_folder(tmp_path):
    from mmer_bench.download import MOSEI_HOST, mosei_urls

    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DownloadError) as caught:
        download("mosei", tmp_path, base_url=base)
    message = str(caught.value)
    assert str(tmp_path / "mosei") in message and "mosei_std_folds.json" in message
    assert all(url in message for url in mosei_urls(base))
    assert f"{MOSEI_HOST}/CMU-MOSEI/labels/CMU_MOSEI_Labels.csd" in mosei_urls()
    assert not list(tmp_path.rglob("*.part"))


def test_download_keeps_the_published_md5s_for_describe_check(zenodo, tmp_path):
    from mmer_bench import integrity

    root = download("ravdess", tmp_path, base_url=zenodo.url)
    archive_md5 = hashlib.md5(zenodo.routes[f"/files/{AUDIO_ARCHIVE}"]).hexdigest()
    assert (root / ".downloads" / "MD5SUMS").read_text() == f"{archive_md5}  {AUDIO_ARCHIVE}\n"
    lists = integrity.checksum_lists([root])
    assert lists == [root / "MD5SUMS", root / ".downloads" / "MD5SUMS"]
    assert [integrity.checksum_problems(listing) for listing in lists] == [(3, []), (1, [])]
    # A file changed after the download is caught, with its path and both digests.
    victim = root / CLIPS[0]
    data = bytearray(victim.read_bytes())
    data[-10:] = b"\x01" * 10
    victim.write_bytes(bytes(data))
    listed, problems = integrity.checksum_problems(root / "MD5SUMS")
    assert listed == 3 and len(problems) == 1 and str(victim) in problems[0] and "does not match" in problems[0]
