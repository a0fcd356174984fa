"""Audio extractors: log-mel frames (plain, and the MERC2020 AttnCNN image), openSMILE
eGeMAPSv02 / ComParE 2016 functionals and LLDs, and the 34 short-term features of the MELD audio
baseline.

``load_audio`` reads audio files with soundfile and the audio track of video files with PyAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf
from scipy.fft import dct
from scipy.signal import resample_poly

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS


class AudioError(ValueError):
    pass


# Containers whose audio track is decoded with PyAV (libsndfile reads none of them).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".m4a", ".mov", ".mkv", ".webm", ".avi"})


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``; raises AudioError naming the file if unusable.

    Audio files are read with soundfile, video files (VIDEO_SUFFIXES) through their first audio
    track with PyAV. Channels are averaged and the rate converted the same way for both.
    """
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        samples, rate = _decode_audio_track(path)
    else:
        samples, rate = _read_audio_file(path)
    if samples.size == 0:
        raise AudioError("the audio file holds no samples")
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        samples = resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
    if not np.any(np.abs(samples) > 1e-6):
        raise AudioError("the audio is silent (all samples are zero)")
    return samples


def _read_audio_file(path: str) -> tuple[np.ndarray, int]:
    try:
        info = sf.info(path)
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"cannot decode audio ({exc})") from exc
    check_length(len(samples), declared_frames(path, info), rate)
    return (samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)), rate


def check_length(read: int, expected: int | None, rate: int, tolerance: int = 0) -> None:
    """Raise AudioError when fewer frames were read than the header announces (a short read)."""
    if expected is not None and read + tolerance < expected:
        raise AudioError(f"the audio is truncated: its header announces {expected} frames ({expected / rate:.3f} s) "
                         f"but only {read} frames ({read / rate:.3f} s) could be read")


def declared_frames(path: str, info) -> int | None:
    """The frame count the file's header announces, or None when it announces none.

    libsndfile shortens the count of a WAV whose data chunk runs past the end of the file to what
    is there (a truncated WAV reads as a shorter, valid one), so a RIFF/WAVE file's count comes
    from its own ``data`` chunk size; other formats' counts (FLAC's STREAMINFO total samples)
    are taken from libsndfile.
    """
    if info.format in ("WAV", "WAVEX"):
        return _riff_data_frames(path)
    return info.frames if info.frames > 0 else None


def _riff_data_frames(path: str) -> int | None:
    """data chunk bytes / block align of a RIFF/WAVE file (None: not RIFF, or no length given)."""
    chunk = _riff_data_chunk(path)
    return None if chunk is None else chunk[1] // chunk[2]


def riff_shortfall(path: str) -> str | None:
    """Why a RIFF/WAVE file is shorter than its header says, or None; reads only the header."""
    chunk = _riff_data_chunk(path)
    if chunk is None:
        return None
    offset, size, block_align = chunk
    held = max(0, Path(path).stat().st_size - offset)
    if held >= size:
        return None
    return (f"its header announces {size} data bytes ({size // block_align} frames) but the file holds "
            f"{held} ({held // block_align} frames)")


def _riff_data_chunk(path: str) -> tuple[int, int, int] | None:
    """(offset of the samples, data chunk size in bytes, block align) of a RIFF/WAVE file; None
    when it is not one or its data chunk gives no length."""
    import struct

    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = handle.read(size + (size & 1))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif kind == b"data":
                # 0 and 0xFFFFFFFF: a stream written without knowing its length.
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return handle.tell(), size, block_align
            else:
                handle.seek(size + (size & 1), 1)  # chunks are padded to an even size


def _decode_audio_track(path: str) -> tuple[np.ndarray, int]:
    import av  # imported lazily: only video inputs need it

    try:
        container = av.open(path)
    except Exception as exc:
        raise AudioError(f"cannot decode audio: not a readable media file ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise AudioError("the video file has no audio track")
        stream = container.streams.audio[0]
        rate = stream.rate
        declared = round(stream.duration * stream.time_base * rate) if stream.duration and stream.time_base else None
        # Planar float at the track's own layout and rate: channels are averaged and resampled
        # below exactly as for audio files (libswresample's downmix would scale them instead).
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise AudioError(f"cannot decode audio: the audio track is damaged ({exc})") from exc
    if not chunks:
        raise AudioError("the video file's audio track holds no samples")
    samples = np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32)
    # Compressed tracks may drop encoder priming and padding: allow 0.1 s and 2% of slack.
    check_length(samples.size, declared, rate, tolerance=int(0.1 * rate + 0.02 * (declared or 0)))
    return samples, rate


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


@lru_cache(maxsize=8)
def _sparse_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


def mel_spectrogram(power: np.ndarray, sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                    fmax: float) -> np.ndarray:
    """``power @ mel_filterbank(...).T``, (n_frames, n_mels), C-contiguous.

    The triangular filters are ~1.5% non-zero (506 of 128 x 257 at n_fft 512): a sparse product
    takes a quarter of the time of the dense matrix product, the largest step after decoding.
    """
    fbank = _sparse_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    return np.ascontiguousarray((fbank @ power.T).T)


def frame_signal(audio: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """Overlapping frames (n_frames, frame_length), ``hop`` samples apart, the last partial frame
    dropped; a signal shorter than one frame is zero-padded to one frame."""
    if audio.size < frame_length:
        audio = np.pad(audio, (0, frame_length - audio.size))
    # A strided view, not a gather through an index array: the same frames at half the cost.
    return np.lib.stride_tricks.sliding_window_view(audio, frame_length)[::hop]


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 with a Hann window, (n_frames, n_fft // 2 + 1), float32 for float32 audio."""
    frames = frame_signal(audio, n_fft, hop) * _hann(n_fft)
    # scipy.fft keeps float32 in single precision at full speed; numpy 2.4's float32 rfft is
    # about 4x slower than its float64 one, and was most of a log-mel's cost.
    spectrum = scipy.fft.rfft(frames, axis=1, overwrite_x=True)
    return spectrum.real**2 + spectrum.imag**2  # |z|^2 without the square root of np.abs


def trim_silence(audio: np.ndarray, top_db: float, frame_length: int, hop: int) -> np.ndarray:
    """Cut leading and trailing frames whose RMS is more than ``top_db`` below the loudest
    frame's (the rule of librosa.effects.trim, frames not centred); inner pauses stay."""
    rms = np.sqrt(np.mean(frame_signal(audio, frame_length, hop) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-10) / max(rms.max(), 1e-10)) > -top_db)
    if loud.size == 0:
        return audio
    return audio[loud[0] * hop: loud[-1] * hop + frame_length]


@EXTRACTORS.register("logmel")
@dataclass
class LogMel(Extractor):
    """Log-mel spectrogram frames (frames x n_mels), natural log of power + 1e-6.

    Single-precision throughout (the stored features are float32 anyway).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    version = "2"  # 2: float32 STFT (scipy.fft), sparse mel product: last-bit changes
    kind = "sequence"
    # ~1.5 ms a clip: computed in this process while the store's writer thread encodes and
    # writes on the other core. A process pool pickles every spectrogram back (slower), and a
    # thread pool lost to the GIL on a loaded machine (x0.9-1.5 of the plain loop against
    # x1.4-1.5 for this, on 2 cores that other jobs kept busy).
    parallel = False

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        power = power_spectrogram(audio, self.n_fft, self.hop)
        mel = mel_spectrogram(power, self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        mel += np.float32(1e-6)
        return np.log(mel, out=mel)


@EXTRACTORS.register("logmel-merc")
@dataclass
class LogMelMERC(Extractor):
    """The log-mel image of the MERC2020 AttnCNN speech model, (frames, 128).

    16 kHz audio, leading and trailing silence trimmed (frames more than ``top_db`` below the
    loudest), Hann STFT n_fft 512 / hop 256 (16 ms), 128 HTK mels over 80-8000 Hz, power in dB
    relative to the clip's loudest bin and floored ``floor_db`` below it, then shifted to be
    non-negative and divided per frame by its maximum: every frame lies in [0, 1] and peaks at 1
    (a silent frame stays all zero).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 128
    fmin: float = 80.0
    fmax: float = 8000.0
    top_db: float = 20.0
    floor_db: float = 80.0
    version = "2"  # 2: float32 STFT (scipy.fft), sparse mel product: last-bit changes
    kind = "sequence"
    parallel = False  # as cheap as LogMel

    def extract_clip(self, path: str) -> np.ndarray:
        audio = trim_silence(load_audio(path, self.sample_rate), self.top_db, self.n_fft, self.hop)
        power = power_spectrogram(audio, self.n_fft, self.hop)
        mel = mel_spectrogram(power, self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        db = 10 * np.log10(np.maximum(mel, 1e-10) / max(mel.max(), 1e-10))
        db = np.maximum(db, -self.floor_db) + self.floor_db  # in [0, floor_db]
        return (db / np.maximum(db.max(axis=1, keepdims=True), 1e-6)).astype(np.float32)


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
    """eGeMAPSv02 functionals (88 per clip) from openSMILE.

    Subclasses pick another openSMILE ``feature_set`` and ``level`` (class attributes, so they
    do not enter the cache key: each subclass has its own registered name).
    """

    sample_rate: int = 16000
    kind = "vector"
    feature_set = "eGeMAPSv02"
    level = "Functionals"

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        frame = _smile(self.feature_set, self.level).process_signal(audio, self.sample_rate)
        out = frame.to_numpy(dtype=np.float32)
        return out[0] if self.kind == "vector" else out


@EXTRACTORS.register("egemaps-lld")
@dataclass
class EGeMAPSLLDs(EGeMAPSFunctionals):
    """eGeMAPSv02 low-level descriptors (25 per 10 ms frame) from openSMILE."""

    kind = "sequence"
    level = "LowLevelDescriptors"


@EXTRACTORS.register("compare")
@dataclass
class ComParEFunctionals(EGeMAPSFunctionals):
    """ComParE 2016 functionals (6373 per clip) from openSMILE."""

    feature_set = "ComParE_2016"


@EXTRACTORS.register("compare-lld")
@dataclass
class ComParELLDs(ComParEFunctionals):
    """ComParE 2016 low-level descriptors (65 per 10 ms frame) from openSMILE."""

    kind = "sequence"
    level = "LowLevelDescriptors"


# The MELD audio baseline's 34 short-term features, in pyAudioAnalysis's order. Our own numpy
# implementation of the published definitions (see MeldAudio34), not a dependency on that toolkit.
MELD_AUDIO34_NAMES = (
    ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread", "spectral_entropy",
     "spectral_flux", "spectral_rolloff"]
    + [f"mfcc_{i}" for i in range(1, 14)]
    + [f"chroma_{i}" for i in range(1, 13)]
    + ["chroma_std"]
)
_EPS = 1e-10


def _entropy_of_parts(values: np.ndarray, parts: int) -> np.ndarray:
    """Shannon entropy (bits) of each row's energy shares over ``parts`` equal blocks."""
    usable = values.shape[1] // parts * parts
    blocks = values[:, :usable].reshape(len(values), parts, -1).sum(axis=2)
    shares = blocks / (blocks.sum(axis=1, keepdims=True) + _EPS)
    return -(shares * np.log2(shares + _EPS)).sum(axis=1)


@lru_cache(maxsize=4)
def _auditory_filterbank(sample_rate: int, n_bins: int) -> np.ndarray:
    """40 triangular filters, 13 linearly spaced (66.7 Hz apart from 133.3 Hz) then 27 spaced by
    a constant ratio (1.0711703), each of unit area: the MFCC filterbank of Slaney's Auditory
    Toolbox that pyAudioAnalysis uses. Shape (40, n_bins) over bins k * sample_rate / (2 n_bins).
    """
    linear = 133.33 + 200.0 / 3.0 * np.arange(14)
    edges = np.concatenate([linear, linear[-1] * 1.0711703 ** np.arange(1, 29)])  # 42 edges
    freqs = np.arange(n_bins) * sample_rate / (2.0 * n_bins)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return (np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (upper - lower)).astype(np.float64)


@lru_cache(maxsize=4)
def _chroma_classes(sample_rate: int, n_bins: int) -> np.ndarray:
    """Pitch class (0 = A) of each FFT bin above DC; -1 for the DC bin."""
    freqs = np.arange(n_bins) * sample_rate / (2.0 * n_bins)
    classes = np.full(n_bins, -1)
    classes[1:] = np.round(12.0 * np.log2(freqs[1:] / 27.5)).astype(int) % 12
    return classes


def short_term_features(audio: np.ndarray, sample_rate: int, window: int, step: int) -> np.ndarray:
    """The 34 MELD_AUDIO34_NAMES features of each ``window``-sample frame, ``step`` apart."""
    # Level-independent, as in pyAudioAnalysis: remove the DC offset, scale the peak to 1.
    audio = audio.astype(np.float64) - audio.mean()
    audio /= np.abs(audio).max() + _EPS
    if audio.size < window:  # a clip shorter than one window still gives one frame
        audio = np.pad(audio, (0, window - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, window)[::step]

    zcr = np.mean(np.signbit(frames[:, 1:]) != np.signbit(frames[:, :-1]), axis=1)
    energy = np.mean(frames**2, axis=1)
    energy_entropy = _entropy_of_parts(frames**2, 10)

    # Magnitude spectrum over the lower half of the (untapered) frame's DFT, as the toolkit does.
    n_bins = window // 2
    mag = np.abs(np.fft.rfft(frames, axis=1))[:, :n_bins] / n_bins
    power = mag**2
    freqs = np.arange(n_bins) * sample_rate / (2.0 * n_bins)
    weights = mag / (mag.max(axis=1, keepdims=True) + _EPS)
    total = weights.sum(axis=1) + _EPS
    centroid = (weights @ freqs) / total
    spread = np.sqrt(np.sum(weights * (freqs[None, :] - centroid[:, None]) ** 2, axis=1) / total)
    spectral_entropy = _entropy_of_parts(power, 10)
    shares = mag / (mag.sum(axis=1, keepdims=True) + _EPS)
    flux = np.concatenate([[0.0], np.sum(np.diff(shares, axis=0) ** 2, axis=1)])
    cumulative = np.cumsum(power, axis=1)
    reached = cumulative >= 0.90 * cumulative[:, -1:]
    rolloff = np.where(cumulative[:, -1] > _EPS, np.argmax(reached, axis=1) / n_bins, 0.0)

    fbank = _auditory_filterbank(sample_rate, n_bins)
    mfcc = dct(np.log10(mag @ fbank.T + _EPS), type=2, norm="ortho", axis=1)[:, :13]

    classes = _chroma_classes(sample_rate, n_bins)
    chroma = np.stack([power[:, classes == c].mean(axis=1) for c in range(12)], axis=1)
    chroma /= power.sum(axis=1, keepdims=True) + _EPS
    nyquist = sample_rate / 2.0
    columns = [zcr, energy, energy_entropy, centroid / nyquist, spread / nyquist, spectral_entropy, flux,
               rolloff]
    return np.column_stack([*columns, mfcc, chroma, chroma.std(axis=1)]).astype(np.float32)


@EXTRACTORS.register("meld-audio34")
@dataclass
class MeldAudio34(Extractor):
    """The MELD baseline's 34 short-term audio features per 0.2 s window, 0.1 s hop.

    Columns (MELD_AUDIO34_NAMES, pyAudioAnalysis's order): zero-crossing rate, energy, entropy of
    energy (10 sub-frames), spectral centroid and spread (fractions of Nyquist), spectral entropy
    (10 sub-bands), spectral flux, 90% roll-off (fraction of the band), 13 MFCCs (40-filter
    auditory filterbank, log10, orthonormal DCT-II), 12 chroma bins (mean bin power per pitch
    class over total power) and the std of those 12 ("chroma deviation"), as pyAudioAnalysis
    computes its chroma vector. The clip is DC-removed and peak-normalised first.

    The baseline zero-pads every clip to 100 frames. Here a clip gives only its real frames,
    at most ``max_frames`` (T <= 100, 34), as a sequence: the datamodule pads a batch with zeros
    and its mask marks the real frames, so padding is never mistaken for audio. A clip shorter
    than one window is zero-padded to one frame.
    """

    sample_rate: int = 16000
    window_seconds: float = 0.2
    hop_seconds: float = 0.1
    max_frames: int = 100
    kind = "sequence"

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        window = int(round(self.window_seconds * self.sample_rate))
        step = int(round(self.hop_seconds * self.sample_rate))
        # Only the samples the first max_frames frames cover are analysed.
        audio = audio[: window + step * (self.max_frames - 1)]
        return short_term_features(audio, self.sample_rate, window, step)


@EXTRACTORS.register("waveform")
@dataclass
class Waveform(Extractor):
    """The raw samples, mono at ``sample_rate`` (16 kHz), as a (samples, 1) sequence for models
    that take waveforms (fine-tuned wav2vec 2.0); clips longer than ``max_seconds`` keep their
    first ``max_seconds`` (None: whole clips)."""

    sample_rate: int = 16000
    max_seconds: float | None = 10.0
    kind = "sequence"
    parallel = False  # decoding only: a process pool would mostly pickle the samples back

    def extract_clip(self, path: str) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        if self.max_seconds:
            audio = audio[: int(self.max_seconds * self.sample_rate)]
        return audio.astype(np.float32)[:, None]
