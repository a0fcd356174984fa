"""The original pipelines that some extractors reproduce, run with the originals' own tools.

Only the parity tests (tests/test_parity.py) and ``benchmarks/fidelity.py`` use this module: it
imports its peer tools lazily, and they come from the ``parity`` extra
(``pip install "mmer-bench[parity]"``), never from the core install. Each function takes the
samples an extractor would analyse, so a comparison isolates the feature computation from
decoding and resampling.
"""

from __future__ import annotations

import numpy as np


def pyaudioanalysis_short_term(audio: np.ndarray, sample_rate: int, window_seconds: float = 0.2,
                               hop_seconds: float = 0.1) -> np.ndarray:
    """pyAudioAnalysis 0.3.14 ``ShortTermFeatures.feature_extraction`` without deltas, (frames, 34).

    ``audio`` is float in [-1, 1] as ``load_audio`` returns it; it is handed over at 16-bit
    scale, as ``audioBasicIO.read_audio_file`` reads a 16-bit WAV (the toolkit divides by 2**15).
    """
    from pyAudioAnalysis import ShortTermFeatures

    window = int(round(window_seconds * sample_rate))
    step = int(round(hop_seconds * sample_rate))
    features, _ = ShortTermFeatures.feature_extraction(audio.astype(np.float64) * 32768.0, sample_rate,
                                                       window, step, deltas=False)
    return features.T


def merc2020_log_mel(audio: np.ndarray, sample_rate: int = 16000, n_fft: int = 512, hop: int = 256,
                     n_mels: int = 128, fmin: float = 80.0, fmax: float = 8000.0,
                     top_db: float = 20.0) -> np.ndarray:
    """MERC2020 AttnCNN's ``preprocess_audio`` (SeongwoongCho/Multimodal-Emotional-Recognition,
    src/preprocess.py) with librosa and scipy, (frames, n_mels).

    The calls and arguments of that function, in its order. The librosa of 2020 (0.7/0.8) padded
    the STFT frames by reflection and returned complex64; librosa >= 0.10 pads with zeros and
    follows the input's precision unless told, so ``pad_mode`` and ``dtype`` are passed.
    ``librosa.effects.trim`` cannot be told: its RMS frames are zero-padded here where 2020's were
    reflected (tests/test_parity.py checks that both keep the same span on its clips).
    """
    import librosa
    import scipy.signal

    wav = np.asarray(audio, dtype=np.float64)
    wav, _ = librosa.effects.trim(wav, frame_length=n_fft, hop_length=hop, top_db=top_db)
    wav = wav.copy()
    wav[wav == 0] = 1e-10
    with np.errstate(divide="ignore", invalid="ignore"):  # as the extractor: zero local variances
        denoised = scipy.signal.wiener(wav, mysize=None, noise=None)
    spectrogram = librosa.stft(y=denoised, hop_length=hop, n_fft=n_fft, window="hann", pad_mode="reflect",
                               dtype=np.complex64)
    # The complex STFT goes into the mel product, as in the original (a quirk: |sum of complex
    # bins|, not a sum of magnitudes); amplitude_to_db then takes the magnitude.
    mel = librosa.feature.melspectrogram(S=spectrogram, sr=sample_rate, n_mels=n_mels, n_fft=n_fft,
                                         hop_length=hop, fmax=fmax, fmin=fmin)
    db = librosa.amplitude_to_db(np.abs(mel))
    image = librosa.util.normalize(db)
    return ((1 + image) / 2).T
