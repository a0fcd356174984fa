"""A small CMU-MOSEI copy in the SDK's release layout: HDF5 computational sequences (``.csd``)
with ``<sequence>/data/<video>/{features, intervals}`` and ``<sequence>/metadata`` (one-element
string datasets holding JSON text, as in the real files), plus ``mosei_std_folds.json``.

Labels depend on the features: each segment has a latent 2-d vector ``z``; word vectors, COVAREP
and FACET frames carry ``z`` (plus noise) and the labels are functions of ``z``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

METADATA_KEYS = ("alignment compatible", "computational sequence description", "computational sequence version",
                 "contact", "creator", "dataset bib citation", "dataset name", "dataset version", "dimension names",
                 "featureset bib citation", "md5", "root name", "uuid")


def write_csd(path: Path, root: str, data: dict[str, tuple[np.ndarray, np.ndarray]], dimension_names=None) -> Path:
    """One computational sequence: video -> (features, intervals) plus its metadata."""
    with h5py.File(path, "w") as f:
        group = f.create_group(root)
        for video, (features, intervals) in data.items():
            g = group.create_group(f"data/{video}")
            g.create_dataset("features", data=features)
            g.create_dataset("intervals", data=np.asarray(intervals, dtype=np.float32))
        values = {key: None for key in METADATA_KEYS}
        values.update({"root name": root, "dataset name": "CMU-MOSEI (test fixture)", "alignment compatible": True,
                       "dimension names": dimension_names or [], "computational sequence version": "1.0"})
        meta = group.create_group("metadata")
        for key, value in values.items():
            dataset = meta.create_dataset(key, (1,), dtype=h5py.string_dtype())
            dataset[0] = json.dumps(value)
    return path


def make_mosei(root: Path, videos_per_fold=(8, 2, 2), segments=6, words=4, seed=0, extra_video=True,
               with_words_file=True) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "mosei"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"vid{i:02d}_{'x' * (i % 3)}" for i in range(sum(videos_per_fold) + int(extra_video))]
    a, b = videos_per_fold[0], videos_per_fold[0] + videos_per_fold[1]
    folds = {"train": names[:a], "valid": names[a:b], "test": names[b:sum(videos_per_fold)]}
    project = {"glove": rng.normal(size=(2, 8)), "covarep": rng.normal(size=(2, 5)), "facet": rng.normal(size=(2, 4))}
    labels, vectors, tokens, covarep, facet = {}, {}, {}, {}, {}
    for video in names:
        z = rng.uniform(-1, 1, size=(segments, 2))
        emotions = np.clip(np.stack([1.5 + 1.5 * z[:, 0], 1.5 - 1.5 * z[:, 0], 1.5 + 1.5 * z[:, 1],
                                     1.5 - 1.5 * z[:, 1], 3 * np.abs(z[:, 0]), np.zeros(segments)], 1), 0, 3)
        sentiment = np.clip(3 * (z[:, 0] + z[:, 1]) / 2, -3, 3)
        seg_intervals = np.array([[10.0 * s + 1, 10.0 * s + 9] for s in range(segments)])
        order = rng.permutation(segments)  # the file lists segments in any order: index = position
        labels[video] = (np.column_stack([sentiment, emotions])[order].astype(np.float32), seg_intervals[order])
        word_rows, word_times, word_text = [], [], []
        for s in range(segments):
            for w in range(words):
                start = 10.0 * s + 1.5 + 1.8 * w
                word_rows.append(z[s] @ project["glove"] + 0.1 * rng.normal(size=8))
                word_times.append([start, start + 1.5])
                word_text.append(b"word")
            word_rows.append(np.zeros(8))  # a silence token, as the release keeps them
            word_times.append([10.0 * s + 8.7, 10.0 * s + 8.9])
            word_text.append(b"sp")
        vectors[video] = (np.array(word_rows, dtype=np.float32), np.array(word_times))
        tokens[video] = (np.array(word_text, dtype=object).reshape(-1, 1).astype("S"), np.array(word_times))
        frames = np.arange(0, 10.0 * segments, 0.25)
        frame_intervals = np.column_stack([frames, frames + 0.25])
        segment_of = np.minimum((frames // 10).astype(int), segments - 1)
        covarep_rows = z[segment_of] @ project["covarep"] + 0.2 * rng.normal(size=(len(frames), 5))
        covarep_rows[::7, 0] = -np.inf  # COVAREP marks unvoiced frames with -inf
        covarep[video] = (covarep_rows.astype(np.float32), frame_intervals)
        facet[video] = ((z[segment_of] @ project["facet"] + 0.2 * rng.normal(size=(len(frames), 4))).astype(np.float32),
                        frame_intervals)
    write_csd(folder / "CMU_MOSEI_Labels.csd", "All Labels", labels,
              ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"])
    write_csd(folder / "CMU_MOSEI_TimestampedWordVectors.csd", "glove_vectors", vectors)
    if with_words_file:
        write_csd(folder / "CMU_MOSEI_TimestampedWords.csd", "words", tokens)
    write_csd(folder / "CMU_MOSEI_COVAREP.csd", "COVAREP", covarep)
    write_csd(folder / "CMU_MOSEI_VisualFacet42.csd", "FACET 4.2", facet)
    write_csd(folder / "CMU_MOSEI_VisualOpenFace2.csd", "OpenFace_2", facet)
    (folder / "mosei_std_folds.json").write_text(json.dumps({"source": "test fixture", "license": "MIT",
                                                             "folds": folds}))
    return root
