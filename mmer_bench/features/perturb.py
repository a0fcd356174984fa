"""Test-time conditions: named, versioned perturbations of a corpus's test part.

Each condition degrades one modality (``speech``, ``face`` or ``text``) of the clips it is given:

- ``speech-white-<snr>db`` / ``speech-babble-<snr>db`` (20, 10, 5, 0 dB): additive white noise,
  or babble (the sum of ``BABBLE_TALKERS`` other clips of the same test part, each at unit RMS,
  preferably of other subjects; never a clip outside the part it is given), scaled so that the
  clip's SNR over its whole length is the level. Mixed at the file's own sample rate into a
  float WAV that the unchanged extractor then reads, so every speech feature sees the same noisy
  audio.
- ``face-noise-<k>sd``: Gaussian noise on the extracted face features, per dimension ``k`` times
  that dimension's standard deviation over the clips given (every frame of a sequence).
- ``face-drop-<p>pct``: a share ``p`` of the real frames removed: rows of a per-frame face
  sequence before the mask is built, or the tracked frames of an OpenFace CSV before a per-clip
  mean is taken (at least one frame is kept). A feature with no frames behind it (a released
  table of AU means) cannot drop frames: the condition does not apply to it.
- ``text-dropout-<p>pct`` (10, 30): each word of the transcript dropped with probability ``p``
  (at least one word kept) before the text extractor runs; word-aligned features shipped with a
  corpus (one row per word) drop the same share of rows.
- ``speech-removed``, ``face-removed``, ``text-removed``: the modality is absent. Nothing is
  extracted: the data module gives the method an absent input with an all-false mask.

Randomness is a pure function of the condition, its version, the base seed and the clip id
(``clip_seed``), so a perturbed clip is the same whatever else is in the batch, part or run.
Perturbed features go through the unchanged extractors and are stored in the feature store
under the extractor's key extended by the perturbation (name, version, level, seed): clean keys
are untouched and a re-run reads the stored entry.

This module is part of the features layer: it reads manifests (pandas) and media, never corpora
or methods. Bump a condition's ``version`` when what it produces changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from mmer_bench.features.audio import VIDEO_SUFFIXES, AudioError, _decode_audio_track, _read_audio_file
from mmer_bench.features.base import Extractor, extract
from mmer_bench.features.store import FeatureSet, FeatureStore, StoreEntryError

log = logging.getLogger(__name__)

MODALITIES = ("speech", "face", "text")
# The manifest column an extractor reads -> the modality it carries.
SOURCE_MODALITY = {
    "audio_path": "speech", "covarep_path": "speech",
    "openface_path": "face", "au_means_path": "face", "video_path": "face", "facet_path": "face",
    "openface_csd_path": "face",
    "text": "text", "text_npz_path": "text", "glove_path": "text",
}
BABBLE_TALKERS = 4


class NotApplicable(ValueError):
    """The condition cannot be applied to this feature (the message says why)."""


@dataclass(frozen=True)
class Condition:
    name: str
    modality: str  # speech | face | text
    kind: str  # white | babble | removed | gaussian | drop_frames | word_dropout
    level: float | None = None  # dB SNR, noise in standard deviations, or a share in [0, 1]
    version: str = "1"

    @property
    def removes(self) -> bool:
        return self.kind == "removed"

    def key(self, seed: int = 0) -> dict:
        """What enters the feature store key of the perturbed features."""
        return {"name": self.name, "version": self.version, "level": self.level, "seed": int(seed)}


def _conditions() -> dict[str, Condition]:
    out = {}
    for kind in ("white", "babble"):
        for snr in (20, 10, 5, 0):
            out[f"speech-{kind}-{snr}db"] = Condition(f"speech-{kind}-{snr}db", "speech", kind, float(snr))
    for sd in (0.5, 1.0):
        name = f"face-noise-{sd:g}sd"
        out[name] = Condition(name, "face", "gaussian", sd)
    for share in (0.5, 0.9):
        name = f"face-drop-{round(100 * share)}pct"
        out[name] = Condition(name, "face", "drop_frames", share)
    for share in (0.1, 0.3):
        name = f"text-dropout-{round(100 * share)}pct"
        out[name] = Condition(name, "text", "word_dropout", share)
    for modality in MODALITIES:
        out[f"{modality}-removed"] = Condition(f"{modality}-removed", modality, "removed")
    return out


CONDITIONS: dict[str, Condition] = _conditions()


def get_condition(name: str) -> Condition:
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
    return CONDITIONS[name]


def snr_conditions(kind: str) -> list[Condition]:
    """The additive-noise conditions of one kind (white, babble), highest SNR first."""
    return sorted((c for c in CONDITIONS.values() if c.kind == kind), key=lambda c: -c.level)


def modality_of(extractor: Extractor) -> str | None:
    """The modality an extractor's features carry (an extractor may declare ``modality``)."""
    return getattr(extractor, "modality", None) or SOURCE_MODALITY.get(extractor.source_column)


def clip_seed(condition: Condition, clip_id: str, seed: int = 0) -> int:
    text = f"{condition.name}|{condition.version}|{condition.level}|{seed}|{clip_id}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def clip_rng(condition: Condition, clip_id: str, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(clip_seed(condition, clip_id, seed))


# --- the perturbations themselves (pure functions of their inputs and a generator) ----------
def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """10 log10(power of clean / power of noisy - clean), over the whole clip."""
    return 10.0 * np.log10(power(clean) / max(power(noisy - clean), 1e-30))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``signal`` plus ``noise`` scaled so that the SNR over the whole clip is ``snr`` dB."""
    if noise.shape != signal.shape:
        raise ValueError(f"noise of shape {noise.shape} for a signal of shape {signal.shape}")
    p_signal, p_noise = power(signal), power(noise)
    if p_signal <= 0 or p_noise <= 0:
        raise AudioError("cannot set an SNR on a silent signal or with silent noise")
    gain = np.sqrt(p_signal / (p_noise * 10.0 ** (snr / 10.0)))
    return (signal.astype(np.float64) + gain * noise).astype(np.float32)


def babble(talkers: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """The sum of the talkers, each at unit RMS, looped to ``length`` from a random offset."""
    out = np.zeros(length, np.float64)
    for talker in talkers:
        rms = np.sqrt(power(talker))
        if rms <= 0:
            continue
        start = int(rng.integers(0, len(talker)))
        index = (start + np.arange(length)) % len(talker)
        out += talker[index] / rms
    return out


def drop_rows(array: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The rows of a (T, D) sequence, each kept with probability 1 - ``share`` (at least one)."""
    keep = rng.random(len(array)) >= share
    if not keep.any():
        keep[rng.integers(len(array))] = True
    return array[keep]


def drop_words(text: str, share: float, rng: np.random.Generator) -> str:
    words = text.split()
    if not words:
        return text
    return " ".join(drop_rows(np.array(words, dtype=object), share, rng).tolist())


def read_native(path: str) -> tuple[np.ndarray, int]:
    """Mono samples at the file's own rate (as the extractors read them, before resampling)."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return _decode_audio_track(path)
    return _read_audio_file(path)


def _resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    g = np.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


# --- applying a condition to one extractor's features of a set of clips ---------------------
def applies(condition: Condition, extractor: Extractor) -> bool:
    return modality_of(extractor) == condition.modality


def perturbed_features(
    condition: Condition,
    extractor: Extractor,
    manifest: pd.DataFrame,
    manifest_hash: str,
    store: FeatureStore,
    clean: FeatureSet | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> FeatureSet | None:
    """The extractor's features of the clips of ``manifest`` (one test part) under the condition;
    None when the condition removes the modality. ``manifest_hash`` identifies those clips and
    their media; ``clean`` (their clean features) is needed by feature-level conditions.

    Raises NotApplicable when the condition does not act on this feature, and a ValueError /
    AudioError naming the clip when its media cannot be perturbed.
    """
    if not applies(condition, extractor):
        raise NotApplicable(f"{condition.name} degrades {condition.modality}; {extractor.name} carries "
                            f"{modality_of(extractor) or 'an unknown modality'}")
    if condition.removes:
        return None
    key = extractor.cache_key(manifest_hash, perturbation=condition.key(seed))
    meta = {"perturbation": condition.key(seed)}
    if store.has(extractor.name, key):
        try:
            return store.read(extractor.name, key)
        except StoreEntryError as exc:  # damaged, or from before the store kept checksums: never used
            aside = store.set_aside(extractor.name, key)
            log.warning("%s; extracting %s under %s again%s", exc, extractor.name, condition.name,
                        f" (old file kept as {aside})" if aside else "")
    if condition.kind in ("white", "babble"):
        media = _speech_media(condition, extractor, manifest, seed)
    elif condition.kind == "word_dropout" and extractor.source_column == "text":
        media = _text_media(condition, manifest, seed)
    elif condition.kind == "drop_frames" and extractor.kind == "vector":
        media = _openface_media(condition, extractor, manifest, seed)
    else:
        media = None
    if media is not None:
        perturbed_manifest, tmp = media
        try:
            return extract(extractor, perturbed_manifest, manifest_hash, store, workers, key=key, meta=meta)
        finally:
            if tmp is not None:
                tmp.cleanup()
    return _feature_level(condition, extractor, manifest, clean, store, key, meta, seed)


def _feature_level(condition, extractor, manifest, clean, store, key, meta, seed) -> FeatureSet:
    if clean is None:
        raise ValueError(f"{condition.name} on {extractor.name}: the clean features are needed")
    ids = [c for c in manifest["clip_id"] if c in clean.arrays]
    results: dict[str, np.ndarray | str] = {c: clean.errors.get(c, "not extracted")
                                            for c in manifest["clip_id"] if c not in clean.arrays}
    if condition.kind == "gaussian":
        if not ids:
            raise ValueError(f"{condition.name} on {extractor.name}: no clean features to perturb")
        stacked = np.concatenate([clean.arrays[c].reshape(-1, clean.arrays[c].shape[-1]) for c in ids])
        scale = condition.level * stacked.std(axis=0)
        for c in ids:
            x = clean.arrays[c]
            results[c] = (x + clip_rng(condition, c, seed).standard_normal(x.shape) * scale).astype(np.float32)
    elif condition.kind in ("drop_frames", "word_dropout"):
        if extractor.kind != "sequence":
            raise NotApplicable(f"{condition.name}: {extractor.name} has one vector per clip and no per-frame "
                                "source to drop frames from")
        for c in ids:
            results[c] = drop_rows(clean.arrays[c], condition.level, clip_rng(condition, c, seed))
    else:
        raise NotApplicable(f"{condition.name} acts on media; {extractor.name} reads none that it can perturb "
                            f"(source {extractor.source_column})")
    full_meta = {"extractor": extractor.name, "version": extractor.version, "params": extractor.params(),
                 "kind": extractor.kind, **meta}
    store.write(extractor.name, key, results, full_meta)
    arrays = {c: v for c, v in results.items() if isinstance(v, np.ndarray)}
    return FeatureSet(arrays, {c: str(v) for c, v in results.items() if not isinstance(v, np.ndarray)})


def _safe_name(clip_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(clip_id))


def noisy_clip(condition: Condition, clip_id: str, path: str, talkers: list[str], seed: int = 0,
               cache: dict | None = None) -> tuple[np.ndarray, int]:
    """The clip's mono samples at its own rate with the condition's noise added."""
    cache = {} if cache is None else cache

    def load(p):
        if p not in cache:
            cache[p] = read_native(p)
        return cache[p]

    try:
        samples, rate = load(path)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from exc
    rng = clip_rng(condition, clip_id, seed)
    if condition.kind == "white":
        noise = rng.standard_normal(len(samples))
    else:
        if not talkers:
            raise ValueError(f"{condition.name}: clip {clip_id} has no other clip in its test part to make babble of")
        voices = [_resampled(*load(p), rate) for p in talkers]
        noise = babble(voices, len(samples), rng)
    try:
        return mix_at_snr(samples, noise, condition.level), rate
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from exc


def babble_talkers(manifest: pd.DataFrame, clip_id: str, column: str, rng: np.random.Generator) -> list[str]:
    """``BABBLE_TALKERS`` media paths of other clips of ``manifest``, of other subjects when it
    has enough of them."""
    rows = manifest[(manifest["clip_id"] != clip_id) & manifest[column].notna()]
    if "subject" in manifest.columns:
        subject = manifest.loc[manifest["clip_id"] == clip_id, "subject"].iloc[0]
        others = rows[rows["subject"] != subject]
        if len(others) >= BABBLE_TALKERS:
            rows = others
    paths = rows[column].tolist()
    if not paths:
        return []
    picks = rng.choice(len(paths), size=min(BABBLE_TALKERS, len(paths)), replace=False)
    return [paths[i] for i in sorted(picks)]


def _speech_media(condition, extractor, manifest, seed):
    column = extractor.source_column
    if column not in manifest.columns or column not in ("audio_path", "video_path"):
        raise NotApplicable(f"{condition.name}: {extractor.name} reads no audio file ({column})")
    tmp = tempfile.TemporaryDirectory(prefix=f"mmer-{condition.name}-")
    out = manifest.copy()
    cache: dict = {}
    paths = []
    for clip_id, path in zip(manifest["clip_id"], manifest[column]):
        if not isinstance(path, str) or not path:
            paths.append(path)
            continue
        # The talkers are drawn with their own generator: the noise draw stays the same
        # whichever clips the part holds.
        talkers = (babble_talkers(manifest, clip_id, column, clip_rng(condition, f"{clip_id}|talkers", seed))
                   if condition.kind == "babble" else [])
        try:
            samples, rate = noisy_clip(condition, clip_id, path, talkers, seed, cache)
        except (AudioError, ValueError) as exc:
            log.warning("%s: %s", condition.name, exc)
            paths.append(f"{path} (unreadable: {exc})")  # the extractor reports it for this clip
            continue
        target = Path(tmp.name) / f"{_safe_name(clip_id)}.wav"
        sf.write(target, samples, rate, subtype="FLOAT")
        paths.append(str(target))
    out[column] = paths
    return out, tmp


def _text_media(condition, manifest, seed):
    out = manifest.copy()
    out["text"] = [drop_words(t, condition.level, clip_rng(condition, c, seed)) if isinstance(t, str) else t
                   for c, t in zip(manifest["clip_id"], manifest["text"])]
    return out, None


def _openface_media(condition, extractor, manifest, seed):
    """OpenFace CSVs with a share of their tracked frames removed, for per-clip means of them."""
    if "openface_path" not in manifest.columns or not manifest["openface_path"].notna().any():
        raise NotApplicable(f"{condition.name}: {extractor.name} has no per-frame source here (a table of "
                            "per-clip values has no frames to drop)")
    tmp = tempfile.TemporaryDirectory(prefix=f"mmer-{condition.name}-")
    out = manifest.copy()
    paths = []
    for clip_id, path in zip(manifest["clip_id"], manifest["openface_path"]):
        if not isinstance(path, str) or not path:
            paths.append(path)
            continue
        frame = pd.read_csv(path, skipinitialspace=True)
        frame.columns = [c.strip() for c in frame.columns]
        tracked = np.flatnonzero(frame["success"].to_numpy() == 1) if "success" in frame else np.arange(len(frame))
        if len(tracked):
            kept = drop_rows(tracked[:, None], condition.level, clip_rng(condition, clip_id, seed))[:, 0]
            frame = frame.drop(index=frame.index[np.setdiff1d(tracked, kept)])
        target = Path(tmp.name) / f"{_safe_name(clip_id)}.csv"
        frame.to_csv(target, index=False)
        paths.append(str(target))
    out["openface_path"] = paths
    return out, tmp
