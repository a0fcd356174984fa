"""A real headless browser for the HTML tests (Debian's chromium): without it a test skips with
the reason; ``MMER_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes it fail instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("MMER_REQUIRE_BROWSER") == "1":
            pytest.fail("MMER_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium); MMER_REQUIRE_BROWSER=1 makes this fail")
    return path


def run_browser(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([browser(), *BROWSER_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                           *args], capture_output=True, text=True, timeout=120)


def loaded_dom(tmp_path, page) -> tuple[str, int, int]:
    """The page's DOM after its scripts ran, how many images it has and how many decoded
    (naturalWidth > 0; the page's own load handler counts them)."""
    dom = run_browser(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    return dom.stdout, images, loaded
