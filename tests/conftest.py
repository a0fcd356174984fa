"""Shared test fixtures: the real data in ../shared/data, a session-wide feature cache, and one
small on-disk copy per corpus in its official layout (generators in tests/fixtures/<corpus>.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.cexprdb import make_cexprdb
from fixtures.meld import make_meld
from fixtures.merc2020 import make_merc2020
from fixtures.mosei import make_mosei
from fixtures.ravdess import make_ravdess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require(flag: str, reason: str):
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} ({flag}=1 makes this required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip with the reason (a failure when MMER_REQUIRE_SHARED_DATA=1)."""
    if not SHARED_DATA.is_dir():
        _require("MMER_REQUIRE_SHARED_DATA", f"real corpus data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Small models train several times faster on one intra-op thread, above all on a busy
    2-core machine, where two threads wait on each other and on everything else."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """One feature cache per test session: extracted features are shared between tests."""
    cache = tmp_path_factory.mktemp("mmer_cache")
    os.environ["MMER_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def timm_module():
    """timm from the `vision` extra, or a skip (a failure when MMER_REQUIRE_VISION=1)."""
    try:
        import timm
    except Exception as exc:  # ImportError, or torchvision's operator error without a matching build
        _require("MMER_REQUIRE_VISION", f"the vision extra is not usable here: {type(exc).__name__}: {exc}")
    return timm


@pytest.fixture(scope="session")
def speech_extra():
    """torchcrepe and silero-vad from the `speech` extra, or a skip (a failure when
    MMER_REQUIRE_SPEECH=1)."""
    try:
        import silero_vad
        import torchcrepe
    except Exception as exc:
        _require("MMER_REQUIRE_SPEECH", f"the speech extra is not usable here: {type(exc).__name__}: {exc}")
    return torchcrepe, silero_vad


# One corpus copy per test (per module for MOSEI, whose tests only read it), each in its
# official layout.
@pytest.fixture
def ravdess_root(tmp_path) -> Path:
    return make_ravdess(tmp_path / "data")


@pytest.fixture
def meld_root(tmp_path) -> Path:
    return make_meld(tmp_path / "data")


@pytest.fixture(scope="module")
def mosei_root(tmp_path_factory) -> Path:
    return make_mosei(tmp_path_factory.mktemp("mosei_data"))


@pytest.fixture
def merc2020_root(tmp_path) -> Path:
    return make_merc2020(tmp_path / "data")


@pytest.fixture
def cexprdb_root(tmp_path) -> Path:
    return make_cexprdb(tmp_path / "data")
