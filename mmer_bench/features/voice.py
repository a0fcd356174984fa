"""Pitch and voice activity from pretrained models that ship inside their packages (no download):
CREPE through ``torchcrepe`` (tiny and full weights bundled) and Silero VAD through ``silero-vad``.

Both are in the ``speech`` extra (``pip install "mmer-bench[speech]"``): torchcrepe brings librosa
and torchaudio, which nothing else here needs. Each runs in this process with torch using the
worker count as its thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmer_bench.features.audio import load_audio
from mmer_bench.features.audio_models import torch_threads
from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

RATE = 16000  # both models' rate: CREPE resamples anything else to 16 kHz, Silero takes 8 or 16 kHz


class _TorchInProcess(Extractor):
    kind = "sequence"
    parallel = False  # torch spreads one clip over the cores itself

    def iter_results(self, manifest, workers: int):
        import torch

        with torch_threads(workers), torch.inference_mode():
            yield from super().iter_results(manifest, 1)


@EXTRACTORS.register("crepe-pitch")
@dataclass
class CrepePitch(_TorchInProcess):
    """CREPE pitch per frame, (frames, 2): f0 in Hz and periodicity in [0, 1].

    Frames are ``hop_seconds`` apart and centred (``1 + samples // hop`` of them), f0 is searched
    between ``fmin`` and ``fmax`` and decoded with ``decoder`` (torchcrepe's ``viterbi``, the
    smoothest, ``weighted_argmax`` or ``argmax``). Unvoiced frames still get an f0 (the decoder's
    best guess): use the periodicity column to tell them apart (CREPE's authors threshold it
    around 0.2-0.5). ``model`` is ``tiny`` (about 2-3x realtime on one CPU core at a 10 ms hop)
    or ``full`` (about 10x slower than realtime on CPU).
    """

    model: str = "tiny"
    hop_seconds: float = 0.01
    fmin: float = 50.0
    fmax: float = 550.0
    decoder: str = "viterbi"
    batch_size: int = 512

    def __post_init__(self):
        if self.model not in ("tiny", "full"):
            raise ValueError(f"crepe-pitch model {self.model!r}: torchcrepe bundles 'tiny' and 'full'")
        if self.decoder not in ("viterbi", "weighted_argmax", "argmax"):
            raise ValueError(f"crepe-pitch decoder {self.decoder!r}: viterbi, weighted_argmax or argmax")

    def extract_clip(self, path: str) -> np.ndarray:
        import torch
        import torchcrepe

        audio = torch.from_numpy(load_audio(path, RATE))[None]
        with torch.inference_mode():
            f0, periodicity = torchcrepe.predict(
                audio, RATE, hop_length=max(1, round(self.hop_seconds * RATE)), fmin=self.fmin, fmax=self.fmax,
                model=self.model, decoder=getattr(torchcrepe.decode, self.decoder), return_periodicity=True,
                batch_size=self.batch_size, device="cpu", pad=True,
            )
        return np.stack([f0[0].numpy(), periodicity[0].numpy()], axis=1).astype(np.float32)


@lru_cache(maxsize=1)
def _silero():
    from silero_vad import load_silero_vad

    return load_silero_vad()  # the TorchScript model inside the package


@EXTRACTORS.register("silero-vad")
@dataclass
class SileroVAD(_TorchInProcess):
    """Silero VAD speech probability per 32 ms (512-sample) window at 16 kHz, (frames, 1).

    ``ceil(samples / 512)`` frames, the last zero-padded; the model's recurrent state runs over
    the whole clip. Threshold it (Silero's default is 0.5) for speech / non-speech frames;
    ``speech_segments`` gives Silero's own merged segments in seconds.
    """

    window = 512  # the only window the 16 kHz model takes

    def extract_clip(self, path: str) -> np.ndarray:
        import torch

        audio = torch.from_numpy(load_audio(path, RATE))
        with torch.inference_mode():
            probability = _silero().audio_forward(audio, RATE)  # resets the model's state first
        return probability[0].numpy().astype(np.float32)[:, None]

    def speech_segments(self, path: str, threshold: float = 0.5) -> list[tuple[float, float]]:
        """(start, end) seconds of each speech segment, by Silero's get_speech_timestamps."""
        import torch
        from silero_vad import get_speech_timestamps

        audio = torch.from_numpy(load_audio(path, RATE))
        model = _silero()
        with torch.inference_mode():
            stamps = get_speech_timestamps(audio, model, threshold=threshold, sampling_rate=RATE, return_seconds=True)
        model.reset_states()
        return [(s["start"], s["end"]) for s in stamps]
