"""Audio extractors: log-mel frames and openSMILE eGeMAPSv02 functionals / LLDs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS


class AudioError(ValueError):
    pass


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``; raises AudioError naming the file if unusable."""
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"cannot decode audio ({exc})") from exc
    samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioError("the audio file holds no samples")
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        samples = resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
    if not np.any(np.abs(samples) > 1e-6):
        raise AudioError("the audio is silent (all samples are zero)")
    return samples


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape (n_mels, n_fft // 2 + 1)."""

    def to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@EXTRACTORS.register("logmel")
@dataclass
class LogMel(Extractor):
    """Log-mel spectrogram frames (frames x n_mels), natural log of power + 1e-6."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    kind = "sequence"

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        if audio.size < self.n_fft:
            audio = np.pad(audio, (0, self.n_fft - audio.size))
        n_frames = 1 + (audio.size - self.n_fft) // self.hop
        index = np.arange(self.n_fft)[None, :] + self.hop * np.arange(n_frames)[:, None]
        frames = audio[index] * np.hanning(self.n_fft).astype(np.float32)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        fbank = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        return np.log(power @ fbank.T + 1e-6).astype(np.float32)


@lru_cache(maxsize=4)
def _smile(feature_set: str, level: str):
    import opensmile  # imported lazily: each worker process builds its own instance once

    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set),
        feature_level=getattr(opensmile.FeatureLevel, level),
    )


@EXTRACTORS.register("egemaps")
@dataclass
class EGeMAPSFunctionals(Extractor):
    """eGeMAPSv02 functionals (88 per clip) from openSMILE."""

    sample_rate: int = 16000
    kind = "vector"
    level = "Functionals"

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        frame = _smile("eGeMAPSv02", self.level).process_signal(audio, self.sample_rate)
        out = frame.to_numpy(dtype=np.float32)
        return out[0] if self.kind == "vector" else out


@EXTRACTORS.register("egemaps-lld")
@dataclass
class EGeMAPSLLDs(EGeMAPSFunctionals):
    """eGeMAPSv02 low-level descriptors (25 per 10 ms frame) from openSMILE."""

    kind = "sequence"
    level = "LowLevelDescriptors"
