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


def trim_silence(audio: np.ndarray, top_db: float, frame_length: int, hop: int) -> np.ndarray:
    """Cut leading and trailing silence as ``librosa.effects.trim`` did in 2020 (0.7/0.8): the
    RMS of frames centred every ``hop`` samples (the signal reflected at its ends), in dB against
    the loudest frame's (amplitudes floored at 1e-5); samples from the first frame above
    ``-top_db`` to the end of the last one's hop are kept, inner pauses stay. An empty result
    (no frame above) is an AudioError."""
    padded = np.pad(audio, frame_length // 2, mode="reflect")
    rms = np.sqrt(np.mean(frame_signal(padded, frame_length, hop) ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-5)) - 20 * np.log10(max(rms.max(), 1e-5))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        raise AudioError(f"nothing is left after trimming the silence ({top_db} dB below the loudest frame)")
    return audio[loud[0] * hop: min(audio.size, (loud[-1] + 1) * hop)]


@lru_cache(maxsize=8)
def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float,
                          dtype=np.float64) -> np.ndarray:
    """librosa's default mel filterbank (``librosa.filters.mel``, htk=False, norm="slaney"):
    Slaney's mel scale (linear to 1 kHz, 200/3 Hz a mel, then logarithmic, 27 mels per factor
    6.4), triangles between n_mels + 2 equally spaced mel points, each scaled to unit area
    (2 / its width in Hz), over the rfft bins 0..fs/2; shape (n_mels, n_fft // 2 + 1). In
    ``dtype`` the way librosa rounds it (triangles, then their scaling). Filters narrower than the
    bin spacing come out empty, as in librosa."""
    step, log_step = 200.0 / 3.0, np.log(6.4) / 27.0

    def to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, hz / step)

    def to_hz(mel):
        return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), step * mel)

    points = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2.0, n_fft // 2 + 1)
    widths = np.diff(points)
    offsets = points[:, None] - bins[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(dtype)
    return (triangles * (2.0 / (points[2:] - points[:-2]))[:, None]).astype(dtype)


@EXTRACTORS.register("logmel-merc")
@dataclass
class LogMelMERC(Extractor):
    """The log-mel image of the MERC2020 AttnCNN speech model, (frames, 128), values in [0, 1].

    Original: ``preprocess_audio`` in ``src/preprocess.py`` of the entry's code release
    (SeongwoongCho/Multimodal-Emotional-Recognition, 2020; librosa of that year, 0.7/0.8, and
    scipy), followed step by step in numpy/scipy and checked against librosa 0.11 + scipy on real
    RAVDESS clips (tests/test_parity.py; ``benchmarks/fidelity.py`` prints the agreement):

    1. 16 kHz audio; leading and trailing silence trimmed (``trim_silence``: frame 512, hop 256,
       20 dB below the loudest frame);
    2. exact zeros set to 1e-10, then ``scipy.signal.wiener`` with its defaults (3-sample local
       mean and variance, noise power = the mean local variance): the entry's "denoising";
    3. STFT: periodic Hann, n_fft 512, hop 256, frames centred (the signal reflected by 256
       samples at each end: 2020's librosa default), so 1 + samples // 256 frames;
    4. the *complex* STFT times librosa's default (Slaney, area-normalised) mel filterbank, 128
       mels over 80-8000 Hz (``slaney_mel_filterbank``): the entry passed the complex STFT as
       ``S`` to ``melspectrogram``, so each mel band is the magnitude of a complex sum (phases
       interfere), not a sum of magnitudes or powers. Kept: it is what the model was trained on;
    5. ``amplitude_to_db`` defaults: 20 log10(max(|m|, 1e-5)), floored 80 dB below the clip's
       maximum;
    6. ``librosa.util.normalize`` along the mel axis: each frame divided by its largest absolute
       dB value, then (1 + y) / 2. A frame's extreme cell (often its quietest, most negative
       band) lands on 0 or 1.

    Where it still differs, and why: audio comes through ``load_audio`` (channels averaged; the
    entry took the first channel of moviepy's 16 kHz track), it rounds the STFT to complex64 and the
    filters to float32 as 2020's librosa did (the mel products may still round differently:
    summation order). librosa >= 0.10 zero-pads the STFT and trim frames unless told (the parity test
    passes ``pad_mode="reflect"`` to its STFT; its trim cannot be told). A clip with nothing left
    after trimming is an error naming the file (the entry's script printed it and skipped it).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 128
    fmin: float = 80.0
    fmax: float = 8000.0
    top_db: float = 20.0
    version = "3"  # 3: the entry's own pipeline (Wiener step, Slaney mels, complex mel sum, normalize)
    kind = "sequence"
    parallel = False  # a few ms a clip: pickling the image back from a pool would cost as much

    def extract_clip(self, path: str) -> np.ndarray:
        import scipy.signal

        audio = trim_silence(load_audio(path, self.sample_rate).astype(np.float64), self.top_db, self.n_fft,
                             self.hop)
        audio[audio == 0] = 1e-10
        with np.errstate(divide="ignore", invalid="ignore"):  # wiener divides by a zero local variance
            denoised = scipy.signal.wiener(audio)
        half = self.n_fft // 2
        frames = frame_signal(np.pad(denoised, half, mode="reflect"), self.n_fft, self.hop)
        # Single precision from the spectrum on, as 2020's librosa (complex64 STFT, float32 filters):
        # where a band's complex sum nearly cancels, its rounding shows in the dB value.
        spectrum = scipy.fft.rfft(frames * scipy.signal.get_window("hann", self.n_fft), axis=1).astype(np.complex64)
        fbank = slaney_mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax, np.float32)
        mel = (spectrum @ fbank.T).astype(np.complex128)
        db = 20 * np.log10(np.maximum(np.abs(mel), 1e-5))
        db = np.maximum(db, db.max() - 80.0)
        scale = np.abs(db).max(axis=1, keepdims=True)
        image = db / np.where(scale < np.finfo(np.float64).tiny, 1.0, scale)
        return ((1 + image) / 2).astype(np.float32)


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

    Original: openSMILE's own ``opensmile.Smile(feature_set, feature_level)`` (audeering's
    Python package, the eGeMAPS of Eyben et al. 2016 and the ComParE 2016 set of Schuller et al.
    2016), run on the samples ``load_audio`` decodes at 16 kHz. The values stored in the feature
    store equal ``Smile.process_file`` on the same file bit for bit (tests/test_parity.py, on
    16 kHz RAVDESS FLACs); files at another rate are resampled by ``load_audio`` first, which
    process_file would not do.

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
# implementation of that toolkit's computation (see MeldAudio34), not a dependency on it.
MELD_AUDIO34_NAMES = (
    ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread", "spectral_entropy",
     "spectral_flux", "spectral_rolloff"]
    + [f"mfcc_{i}" for i in range(1, 14)]
    + [f"chroma_{i}" for i in range(1, 13)]
    + ["chroma_std"]
)
# pyAudioAnalysis guards its divisions and logarithms with the float64 machine epsilon.
_EPS = float(np.finfo(np.float64).eps)


def _entropy_of_blocks(values: np.ndarray, parts: int) -> np.ndarray:
    """Shannon entropy (bits) of each row's energy shares over ``parts`` equal consecutive blocks
    (a remainder beyond parts * block is left out of the blocks, not of the total)."""
    energy = values**2
    block = values.shape[1] // parts
    blocks = energy[:, : block * parts].reshape(len(values), parts, block).sum(axis=2)
    shares = blocks / (energy.sum(axis=1, keepdims=True) + _EPS)
    return -(shares * np.log2(shares + _EPS)).sum(axis=1)


@lru_cache(maxsize=4)
def _auditory_filterbank(sample_rate: int, n_bins: int) -> np.ndarray:
    """pyAudioAnalysis's MFCC filterbank (from scikits.talkbox, after Slaney's Auditory Toolbox),
    shape (40, n_bins): 13 edges 66.7 Hz apart from 133.33 Hz, then 29 more each 1.0711703 times
    the last; filter i rises over (edge i, edge i+1] and falls over (edge i+1, edge i+2] with
    peak 2 / (edge i+2 - edge i).

    The quirk kept: the toolkit lays these filters on bins it takes to be k * sample_rate / n_bins
    (0..fs over the n_bins it keeps), while those bins hold k * sample_rate / (2 n_bins): every
    filter sits at half its nominal frequency (133-6870 Hz nominal, 67-3435 Hz in fact).
    """
    edges = np.empty(42)
    edges[:13] = 133.33 + np.arange(13) * 200.0 / 3.0
    edges[13:] = edges[12] * 1.0711703 ** np.arange(1, 30)
    heights = 2.0 / (edges[2:] - edges[:-2])
    grid = np.arange(n_bins) / n_bins * sample_rate  # the toolkit's (doubled) bin frequencies
    # Bin k lies in (f_a, f_b] when floor(f_a n / fs) < k <= floor(f_b n / fs): the toolkit's
    # integer bin ranges, kept as such (not a comparison of frequencies) so ties fall the same way.
    position = np.floor(edges * n_bins / sample_rate)
    k = np.arange(n_bins)
    fbank = np.zeros((40, n_bins))
    for i in range(40):
        low, centre, high = edges[i : i + 3]
        rising = (k > position[i]) & (k <= position[i + 1])
        falling = (k > position[i + 1]) & (k <= position[i + 2])
        fbank[i, rising] = heights[i] / (centre - low) * (grid[rising] - low)
        fbank[i, falling] = heights[i] / (high - centre) * (high - grid[falling])
    return fbank


@lru_cache(maxsize=4)
def _chroma_plan(sample_rate: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How pyAudioAnalysis's chroma vector maps the n_bins magnitudes: (source bins, their target
    slots, the divisor of each slot). See ``_chroma``."""
    freqs = (np.arange(n_bins) + 1) * sample_rate / (2.0 * n_bins)  # bin k taken to be bin k + 1
    semitone = np.round(12.0 * np.log2(freqs / 27.5)).astype(int)  # semitones above A0, < 0 below it
    if semitone.max() >= n_bins:  # pyAudioAnalysis 0.3.14 fails on such short windows as well
        raise ValueError(f"chroma needs a window of more than {2 * semitone.max()} samples at {sample_rate} Hz")
    slot = semitone % n_bins  # a negative index counts from the end, as numpy indexing does
    values, first, counts = np.unique(semitone, return_index=True, return_counts=True)
    bins_alike = counts[np.searchsorted(values, semitone)]  # per bin: bins sharing its semitone
    last = first + counts - 1  # of several bins on one slot, the last one is kept
    return last, slot[last], bins_alike[slot].astype(np.float64)


def _chroma(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """pyAudioAnalysis 0.3.14's 12 chroma features of each row of power (|X|^2 over n_bins).

    Its quirks, kept: the bins are taken one bin higher than they are; each semitone slot holds
    the power of only the last bin rounded to it (an indexed assignment, not a sum); bins below
    A0 (27.5 Hz) get negative semitones and land in slots counted from the end of the n_bins-long
    slot array; slot j is divided by the number of bins that share the semitone of *bin* j; the
    slots are then folded modulo 12 from slot 0 (so the wrapped ones join pitch class n_bins
    mod 12 places off) and divided by the frame's total power.
    """
    n_bins = power.shape[1]
    source, target, divisor = _chroma_plan(sample_rate, n_bins)
    slots = np.zeros((len(power), -(-n_bins // 12) * 12))
    slots[:, target] = power[:, source]
    slots[:, :n_bins] /= divisor
    total = power.sum(axis=1, keepdims=True)
    return slots.reshape(len(power), -1, 12).sum(axis=1) / np.where(total == 0, _EPS, total)


def short_term_features(audio: np.ndarray, sample_rate: int, window: int, step: int) -> np.ndarray:
    """The 34 MELD_AUDIO34_NAMES features of each ``window``-sample frame, ``step`` apart, as
    pyAudioAnalysis 0.3.14's ``ShortTermFeatures.feature_extraction(deltas=False)`` computes
    them (see MeldAudio34), (frames, 34) float32."""
    # Level-independent, as the toolkit's dc_normalize: remove the DC offset, scale the peak to 1.
    x = audio.astype(np.float64)
    x -= x.mean()
    x /= np.abs(x).max() + 1e-10
    if x.size < window:  # a clip shorter than one window still gives one frame
        x = np.pad(x, (0, window - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, window)[::step]

    zcr = np.abs(np.diff(np.sign(frames), axis=1)).sum(axis=1) / 2.0 / (window - 1.0)
    energy = (frames**2).sum(axis=1) / window
    energy_entropy = _entropy_of_blocks(frames, 10)

    # |DFT| of the untapered frame, its first window // 2 bins, divided by their count.
    n_bins = window // 2
    mag = np.abs(scipy.fft.rfft(frames, axis=1))[:, :n_bins] / n_bins
    power = mag**2
    nyquist = sample_rate / 2.0

    # Centroid and spread weigh bin k at (k + 1) fs / (2 n_bins): the toolkit's grid, one bin up.
    grid = np.arange(1, n_bins + 1) * sample_rate / (2.0 * n_bins)
    peak = mag.max(axis=1, keepdims=True)
    weights = mag / np.where(peak == 0, _EPS, peak)
    total = weights.sum(axis=1) + _EPS
    centroid = (weights @ grid) / total
    spread = np.sqrt(((grid[None, :] - centroid[:, None]) ** 2 * weights).sum(axis=1) / total)

    spectral_entropy = _entropy_of_blocks(mag, 10)
    shares = mag / (mag + _EPS).sum(axis=1, keepdims=True)
    flux = np.concatenate([[0.0], ((shares[1:] - shares[:-1]) ** 2).sum(axis=1)])
    above = np.cumsum(power, axis=1) + _EPS > 0.90 * power.sum(axis=1, keepdims=True)
    rolloff = np.where(above.any(axis=1), np.argmax(above, axis=1) / n_bins, 0.0)

    fbank = _auditory_filterbank(sample_rate, n_bins)
    mfcc = dct(np.log10(mag @ fbank.T + _EPS), type=2, norm="ortho", axis=1)[:, :13]

    chroma = _chroma(power, sample_rate)
    columns = [zcr, energy, energy_entropy, centroid / nyquist, spread / nyquist, spectral_entropy, flux,
               rolloff]
    return np.column_stack([*columns, mfcc, chroma, chroma.std(axis=1)]).astype(np.float32)


@EXTRACTORS.register("meld-audio34")
@dataclass
class MeldAudio34(Extractor):
    """34 short-term audio features per 0.2 s window, 0.1 s hop: the audio input of the MELD
    three-branch fusion baseline (``meld-baseline-fusion``).

    Original: pyAudioAnalysis 0.3.14, ``pyAudioAnalysis/ShortTermFeatures.py``,
    ``feature_extraction(signal, fs, 0.2 fs, 0.1 fs, deltas=False)`` (Giannakopoulos 2015,
    PLoS ONE 10(12)). That project (github.com/ankurbhatia24/MULTIMODAL-EMOTION-RECOGNITION,
    README "Audio Part") describes exactly this set: 8 time/spectral features, 13 MFCCs, 13
    chroma features, 0.2 s / 0.1 s at 16 kHz, 100 frames, (100, 34); it credits openSMILE, which
    has no such set, while the names, order and windowing are pyAudioAnalysis's. (The MELD
    paper's own audio baseline used openSMILE functionals with feature selection, released only
    as pickles.) Computed here in numpy, quirks included, and checked frame by frame against
    that function on real RAVDESS clips (tests/test_parity.py; ``benchmarks/fidelity.py``
    prints the agreement).

    Columns (MELD_AUDIO34_NAMES, the toolkit's order): zero-crossing rate, energy, entropy of
    energy (10 blocks), spectral centroid and spread (fractions of Nyquist), spectral entropy
    (10 sub-bands), spectral flux, 90% roll-off (fraction of the band), 13 MFCCs (40-filter
    auditory filterbank, log10, orthonormal DCT-II), 12 chroma features and their std. The clip
    is DC-removed and peak-normalised first; the spectrum is the |DFT| of the untapered frame.
    The toolkit's grid quirks are kept: the MFCC filters sit at half their nominal frequencies,
    centroid, spread and chroma take each bin one bin higher than it is, and the chroma vector
    keeps one bin per semitone and folds the bins below 27.5 Hz in from the wrong end (see
    ``_auditory_filterbank`` and ``_chroma``).

    Where it still differs, and why: the baseline zero-pads every clip to 100 frames; here a
    clip gives only its real frames, at most ``max_frames`` (T <= 100, 34), as a sequence: the
    datamodule pads a batch with zeros and its mask marks the real frames, so padding is never
    mistaken for audio. A clip shorter than one window is zero-padded to one frame (the toolkit
    returns no frame). Audio is decoded and resampled to 16 kHz by ``load_audio`` (channels
    averaged), not by the toolkit's reader.
    """

    sample_rate: int = 16000
    window_seconds: float = 0.2
    hop_seconds: float = 0.1
    max_frames: int = 100
    version = "2"  # 2: pyAudioAnalysis's own frequency grids and epsilons (MFCC, chroma, centroid)
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
