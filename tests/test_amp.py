"""Mixed precision must not depend on the CPU model.

oneDNN builds a bf16 LSTM kernel only on CPUs with AVX-512 (bf16). On an AVX2-only machine
(e.g. an AMD EPYC without AVX-512) a bf16 input under CPU autocast fails with "could not create a
primitive descriptor for the LSTM forward propagation primitive". ``ONEDNN_MAX_CPU_ISA=AVX2``
makes any x86 machine behave like one, so the autocast tests are re-run under it in a child
process (the variable is read once, when oneDNN starts).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmer_bench.methods.layers import run_rnn

ROOT = Path(__file__).resolve().parents[1]
AUTOCAST_TESTS = "run_under_bf16_autocast or runs_under_bf16_autocast or dialogue"


def test_run_rnn_under_autocast_matches_float32():
    torch.manual_seed(0)
    rnn = nn.LSTM(8, 16, batch_first=True, bidirectional=True)
    x = torch.randn(3, 20, 8)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    for i, n in enumerate((20, 15, 7)):
        mask[i, :n] = True
    plain = run_rnn(rnn, x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run_rnn(rnn, x.bfloat16(), mask)  # a bf16 input, as an autocast layer before it gives
    assert mixed.dtype == torch.float32
    # The recurrence itself runs in float32; only the input was rounded to bf16.
    torch.testing.assert_close(mixed, run_rnn(rnn, x.bfloat16().float(), mask))
    assert (plain - mixed).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONEDNN_MAX_CPU_ISA=AVX2 is an x86 setting")
def test_autocast_tests_pass_on_an_avx2_only_cpu():
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    files = ["tests/test_methods.py", "tests/test_meld_methods.py", "tests/test_lfan.py", "tests/test_dialogues.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", AUTOCAST_TESTS,
                           *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-1000:]
