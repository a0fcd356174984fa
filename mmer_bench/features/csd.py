"""Word-aligned features from CMU-Multimodal SDK computational sequences (CMU-MOSEI).

For each segment (a manifest row with ``video``, ``start``, ``end``) the sequence is word level:
the words of the TimestampedWordVectors sequence whose midpoint lies in the segment, silence
(``sp``) tokens left out; a frame-level modality (COVAREP, FACET, OpenFace) becomes the mean of
the frames that overlap each word's interval, as the SDK's alignment to the word vectors
averages them. A word that no frame overlaps gets zeros; non-finite values (COVAREP holds -inf
for unvoiced frames) become 0 before averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmer_bench.csd import ComputationalSequence
from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

SILENCE = "sp"


def word_mask(vectors: np.ndarray, words: np.ndarray | None) -> np.ndarray:
    """True for real words: not ``sp`` (when the words are known), else not an all-zero vector."""
    if words is not None:
        text = [w.decode() if isinstance(w, bytes) else str(w) for w in np.asarray(words).reshape(len(words), -1)[:, 0]]
        return np.array([t.strip() != SILENCE for t in text], dtype=bool)
    return np.abs(vectors).sum(axis=1) > 0


def segment_words(intervals: np.ndarray, start: float, end: float, keep: np.ndarray) -> np.ndarray:
    """Indices of the kept words whose midpoint lies in [start, end], in time order."""
    middle = intervals.mean(axis=1)
    chosen = np.flatnonzero(keep & (middle >= start) & (middle <= end))
    return chosen[np.argsort(intervals[chosen, 0], kind="stable")]


def average_per_word(features: np.ndarray, frames: np.ndarray, words: np.ndarray) -> np.ndarray:
    """(W, D): per word interval, the mean of the frames overlapping it (zeros where none does)."""
    features = np.where(np.isfinite(features), features, 0.0)
    overlap = (frames[None, :, 0] < words[:, None, 1]) & (frames[None, :, 1] > words[:, None, 0])
    counts = overlap.sum(axis=1, keepdims=True)
    return (overlap @ features) / np.maximum(counts, 1)


@dataclass
class WordAligned(Extractor):
    """One CMU-MOSEI modality as a word-level sequence per segment (module doc)."""

    version = "1"
    kind = "sequence"
    source_column = "covarep_path"
    text = False  # True: the word vectors themselves

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        results: dict[str, np.ndarray | str] = {}
        rows = manifest[manifest[self.source_column].notna()] if self.source_column in manifest else manifest[:0]
        for clip in set(manifest["clip_id"]) - set(rows["clip_id"]):
            results[clip] = f"segment {clip} has no {self.source_column.replace('_path', '')} sequence"
        if rows.empty:
            return results
        first = rows.iloc[0]
        words_path = first.get("words_path")
        with (ComputationalSequence(first["glove_path"]) as vectors,
              ComputationalSequence(first[self.source_column]) as modality):
            word_seq = ComputationalSequence(words_path) if isinstance(words_path, str) else None
            try:
                for video, segments in rows.groupby("video", sort=False):
                    if video not in vectors or video not in modality:
                        for clip in segments["clip_id"]:
                            results[clip] = f"video {video} is missing from {vectors.path.name} or {modality.path.name}"
                        continue
                    word_vectors, word_times = vectors.get(video)
                    words = word_seq.get(video)[0] if word_seq is not None and video in word_seq else None
                    keep = word_mask(word_vectors, words)
                    features, frames = (word_vectors, word_times) if self.text else modality.get(video)
                    for clip, start, end in zip(segments["clip_id"], segments["start"], segments["end"]):
                        chosen = segment_words(word_times, start, end, keep)
                        if len(chosen) == 0:
                            results[clip] = f"segment {clip} ({start:.2f}-{end:.2f} s) holds no words"
                        elif self.text:
                            results[clip] = np.asarray(features[chosen], dtype=np.float32)
                        else:
                            span = (frames[:, 0] < end) & (frames[:, 1] > start)
                            aligned = average_per_word(features[span].astype(np.float64), frames[span], word_times[chosen])
                            results[clip] = aligned.astype(np.float32)
            finally:
                if word_seq is not None:
                    word_seq.close()
        return results


@EXTRACTORS.register("mosei-covarep")
@dataclass
class MoseiCovarep(WordAligned):
    """COVAREP acoustic features (74-d), averaged per word."""

    source_column = "covarep_path"


@EXTRACTORS.register("mosei-facet")
@dataclass
class MoseiFacet(WordAligned):
    """FACET 4.2 facial expression features (35-d), averaged per word."""

    source_column = "facet_path"


@EXTRACTORS.register("mosei-openface")
@dataclass
class MoseiOpenFace(WordAligned):
    """OpenFace 2 features (713-d), averaged per word."""

    source_column = "openface_csd_path"


@EXTRACTORS.register("mosei-glove")
@dataclass
class MoseiGlove(WordAligned):
    """The 300-d GloVe vectors of the segment's words."""

    source_column = "glove_path"
    text = True
