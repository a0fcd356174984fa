"""One small configuration per registered method, for the tests written once against the registry
(tests/test_registry_methods.py): shapes and padding invariance, and learning a class signal
carried by fixture inputs. A new method is covered by adding its row here; a registered method
without a row fails ``test_every_registered_method_has_a_row``.

``EXTRACTOR_CASES`` does the same for extractors: parameters for a short check on a tone
(``source: "tone"``: the output has the extractor's kind, is finite and deterministic), or the
test file that exercises an extractor whose input a tone cannot stand for.

A method row: ``dims`` (input name -> size of a vector / frame), ``hp`` (small build hyperparameters),
``lengths`` (input name -> frames of the three clips of the padding check; a fourth, longer clip
pads them), optional ``tasks``, ``inputs`` (``make(label, rng) -> {input: array}`` for the learning
check; default: noise around a per-class prototype, vectors or sequences as the extractor
produces them) and ``learn`` (optimiser steps and learning rate of the learning check).
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from learning import coloured_frames

from mmer_bench.corpora.merc2020 import Merc2020
from mmer_bench.tasks import ClassificationTask

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d", "e", "f")),)
FACE = 16  # side of the fixture face crops
SMALL_CNN = {"width": 0.25, "depth": 0.25}


def tone_waves(label: int, rng) -> dict:
    n = int(rng.integers(3200, 4800))
    t = np.arange(n) / 16000
    wave = 0.5 * np.sin(2 * np.pi * (150 + 250 * label) * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, n)
    return {"wave": wave.astype(np.float32)[:, None]}


def mel_band(label: int, rng, dims: int = 128) -> np.ndarray:
    mel = rng.uniform(0, 0.3, (int(rng.integers(30, 60)), dims)).astype(np.float32)
    mel[:, 16 * label : 16 * label + 16] += 0.6  # a class-specific frequency band
    return mel


def token_ids(label: int, rng) -> dict:
    words = rng.integers(1000 + 100 * label, 1000 + 100 * label + 50, int(rng.integers(3, 9)))
    return {"text": np.concatenate([[101], words, [102]]).astype(np.float32)[:, None]}


@cache
def tiny_encoder(family: str) -> str:
    """A tiny random checkpoint folder of an encoder family (features/encoders.py), made once."""
    from mmer_bench.features.encoders import save_random_encoder

    return str(save_random_encoder(family, Path(tempfile.mkdtemp(prefix="mmer-tiny-")) / family))


CASES: dict[str, dict] = {
    "egemaps-mlp": {"dims": {"speech": 88}, "hp": {}},
    "compare-mlp": {"dims": {"speech": 300}, "hp": {"hidden": 32}},
    "text-mlp": {"dims": {"text": 384}, "hp": {"hidden": 32}},
    "early-fusion-mlp": {"dims": {"speech": 88, "face": 35, "text": 384}, "hp": {"hidden": 32}},
    "seq-mean-mlp": {"dims": {"words": 50, "acoustic": 74, "visual": 35}, "hp": {"hidden": 32},
                     "lengths": {"words": [4, 9, 2], "acoustic": [4, 9, 2], "visual": [4, 9, 2]}},
    "wordvec-mlp": {"dims": {"words": 40}, "hp": {"hidden": 32}, "lengths": {"words": [5, 9, 3]}},
    "luna2022-au-mlp": {"dims": {"au": 35}, "hp": {}},
    "luna2022-au-bilstm": {"dims": {"au": 35}, "hp": {"hidden": 16}, "lengths": {"au": [45, 70, 33]}},
    "luna2022-w2v2-ft": {"dims": {"wave": 1}, "hp": {"tiny_random": True}, "lengths": {"wave": [3000, 4000, 2500]},
                         "inputs": tone_waves, "learn": {"steps": 100, "lr": 3e-3}},
    "williams2018-bilstm": {"dims": {"speech": 25}, "hp": {}, "lengths": {"speech": [45, 70, 33]}},
    "williams2018-bilstm-mosei": {"dims": {"text": 50, "audio": 74, "visual": 35}, "hp": {},
                                  "lengths": {"text": [4, 9, 2], "audio": [4, 9, 2], "visual": [4, 9, 2]}},
    "au-frame-mlp": {"dims": {"au": 35}, "hp": {}, "lengths": {"au": [6, 10, 3]}},
    "lfan": {"dims": {"video": 12, "audio": 8, "text": 16},
             "hp": {"channels": {"video": (16, 16, 8, 8), "audio": (8, 8, 4, 4), "text": (16, 16, 8, 8)},
                    "window": 30, "hop": 20, "optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "scheduler": None},
             "lengths": {"video": [40, 70, 33], "audio": [40, 70, 33], "text": [40, 70, 33]}},
    "meld-text-cnn": {"dims": {"text": 50}, "hp": {}, "lengths": {"text": [7, 2, 12]}},
    "meld-bclstm": {"dims": {"text": 64}, "hp": {"hidden": 16, "dense": 16}},
    "meld-audio-cnn": {"dims": {"audio": 34}, "hp": {"channels": (16, 32)}, "lengths": {"audio": [40, 3, 100]}},
    "meld-baseline-fusion": {
        "dims": {"video": 3 * 8 * 8, "audio": 34, "text": 50},
        "hp": {"convlstm": 4, "video_channels": (8, 8), "audio_channels": (8, 16), "filters": 8, "dense": 16},
        "lengths": {"video": [3, 1, 5], "audio": [40, 3, 100], "text": [7, 2, 12]},
        "inputs": lambda label, rng: {"video": coloured_frames(label, rng, 8, int(rng.integers(2, 5))),
                                      "audio": rng.normal(size=(int(rng.integers(10, 30)), 34)).astype(np.float32),
                                      "text": rng.normal(size=(int(rng.integers(3, 9)), 50)).astype(np.float32)}},
    "caer-net": {
        "dims": {"face": 3 * 16 * 16, "context": 3 * 16 * 24},
        "hp": {"width": 0.125, "face_size": 16, "context_height": 16, "context_width": 24, "attention": 16,
               "fusion_hidden": 8, "hidden": 16},
        "lengths": {"face": [3, 1, 4], "context": [4, 2, 4]},
        "inputs": lambda label, rng: {"face": coloured_frames(label, rng, 16, int(rng.integers(1, 4))),
                                      "context": coloured_frames(label, rng, 16, int(rng.integers(1, 4)), 24)}},
    "merc2020-attncnn": {"dims": {"mel": 128}, "hp": {**SMALL_CNN, "hidden": 8}, "lengths": {"mel": [45, 70, 33]},
                         "inputs": lambda label, rng: {"mel": mel_band(label, rng)}},
    "merc2020-clstm": {"dims": {"face": 3 * FACE * FACE}, "hp": {**SMALL_CNN, "face_size": FACE, "hidden": 8, "frames": 4},
                       "lengths": {"face": [3, 4, 2]},
                       "inputs": lambda label, rng: {"face": coloured_frames(label, rng, FACE, int(rng.integers(2, 6)))}},
    "merc2020-text-transformer": {"dims": {"words": 40}, "hp": {"layers": 1, "ff": 32}, "lengths": {"words": [5, 9, 3]}},
    "merc2020-multimodal": {
        "dims": {"mel": 128, "face": 3 * FACE * FACE, "words": 40},
        "hp": {"speech": {**SMALL_CNN, "hidden": 8}, "face": {**SMALL_CNN, "face_size": FACE, "hidden": 8},
               "text": {"layers": 1, "ff": 32}},
        "tasks": Merc2020.tasks,
        "lengths": {"mel": [40, 64, 33], "face": [3, 4, 2], "words": [5, 9, 3]},
        "inputs": lambda label, rng: {"mel": mel_band(label, rng),
                                      "face": coloured_frames(label, rng, FACE, int(rng.integers(2, 5))),
                                      "words": rng.normal(size=(int(rng.integers(3, 8)), 40)).astype(np.float32)}},
    "text-transformer-ft": {"dims": {"text": 1}, "hp": {"tiny_random": True, "freeze_word_embeddings": False},
                            "lengths": {"text": [7, 3, 12]}, "inputs": token_ids},
    "ssl-mlp": {"dims": {"states": 16}, "hp": {"hidden": 32}},
    "ssl-ft": {"dims": {"wave": 1}, "hp": {"model": tiny_encoder("hubert")}, "lengths": {"wave": [3000, 4000, 2500]},
               "inputs": tone_waves, "learn": {"steps": 100, "lr": 3e-3}},
    "text-encoder-ft": {"dims": {"text": 1}, "hp": {"model": tiny_encoder("bert"), "freeze_word_embeddings": False},
                        "lengths": {"text": [7, 3, 12]}, "inputs": token_ids},
}


# Small recipes (build hyperparameters and epochs) of the methods that tests/test_methods.py
# trains through the runner on the synthetic corpus, fast enough for two busy CPU cores.
SYNTHETIC: dict[str, dict] = {
    "luna2022-au-bilstm": {"hidden": 16, "max_epochs": 8, "patience": None},
    "williams2018-bilstm": {"max_epochs": 15},
    "merc2020-attncnn": {"width": 0.25, "depth": 0.25, "hidden": 32, "max_epochs": 6, "patience": None},
}

# Extractor name -> {"source": "tone", "params": {...}} or {"covered_by": test file}.
EXTRACTOR_CASES: dict[str, dict] = {
    "logmel": {"source": "tone"},
    "logmel-merc": {"source": "tone"},
    "egemaps": {"source": "tone"},
    "egemaps-lld": {"source": "tone"},
    "compare": {"source": "tone"},
    "compare-lld": {"source": "tone"},
    "meld-audio34": {"source": "tone"},
    "waveform": {"source": "tone"},
    "wav2vec2": {"source": "tone", "params": {"tiny_random": True}},
    "audio-encoder": {"source": "tone", "params": {"model": tiny_encoder("wavlm")}},
    "text-encoder": {"covered_by": "tests/test_encoders.py"},
    "vggish": {"covered_by": "tests/test_audio_extractors.py"},
    "crepe-pitch": {"covered_by": "tests/test_voice_extractors.py"},  # the speech extra
    "silero-vad": {"covered_by": "tests/test_voice_extractors.py"},
    "glove": {"covered_by": "tests/test_audio_extractors.py"},
    "minilm": {"covered_by": "tests/test_meld.py"},
    "tokens": {"covered_by": "tests/test_text_ft.py"},
    "bert-frames": {"covered_by": "tests/test_lfan.py"},
    "npz-word-embed": {"covered_by": "tests/test_merc2020.py"},
    "au-means": {"covered_by": "tests/test_features.py"},
    "au-sequence": {"covered_by": "tests/test_features.py"},
    "openface-sequence": {"covered_by": "tests/test_features.py"},
    "mosei-glove": {"covered_by": "tests/test_mosei.py"},
    "mosei-covarep": {"covered_by": "tests/test_mosei.py"},
    "mosei-facet": {"covered_by": "tests/test_mosei.py"},
    "mosei-openface": {"covered_by": "tests/test_mosei.py"},
    "face-crops": {"covered_by": "tests/test_video_features.py"},
    "context-frames": {"covered_by": "tests/test_video_features.py"},
    "face-embedding": {"covered_by": "tests/test_video_features.py"},
    "face-track": {"covered_by": "tests/test_video_features.py"},
    "facemesh": {"covered_by": "tests/test_video_features.py"},
}
