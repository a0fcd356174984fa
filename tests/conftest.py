"""Shared test fixtures: the real data in ../shared/data, a session-wide feature cache, and
the RAVDESS fixture generator (official file-name layout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def write_tone(path: Path, seconds: float = 0.5, freq: float = 220.0, rate: int = 16000, amplitude: float = 0.3):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def make_ravdess(root: Path, actors=range(1, 25), emotions=(1, 5), audio_ext=".wav", song=True, video=True) -> Path:
    """A small RAVDESS copy in the official layout: Actor_XX/MM-VV-EE-II-SS-RR-AA.ext."""
    for actor in actors:
        folder = root / "ravdess" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in emotions:
            for statement in (1, 2):
                fields = f"01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}"
                write_tone(folder / f"03-{fields}{audio_ext}", freq=150 + 40 * emotion + actor)
                if video:
                    (folder / f"01-{fields}.mp4").write_bytes(b"not decoded in these tests")
        if song:
            write_tone(folder / f"03-02-01-01-01-01-{actor:02d}{audio_ext}")
    return root


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
