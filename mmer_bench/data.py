"""The data module: scaling, collation, dialogue batching and ``CorpusDataModule``.

A fold of a corpus's manifest plus the feature store become batches:

    {"inputs": {name: float tensor (B, D) or (B, T, D)}, "masks": {name: bool (B, T), True = real frame},
     "targets": {task: long tensor (B,) for classification, float (B, num_outputs) for regression},
     "clip_id": [str]}

Methods that read a whole conversation (``reads_dialogues = True``, e.g. MELD's bcLSTM) get
batches of dialogues instead: the same utterance-level batch, every utterance of the batch's
dialogues in order, plus ``"dialogues"``: a long tensor (n_dialogues, max_utterances) of row
indices into that batch, -1 past a dialogue's end. Losses, metrics and predictions stay per
utterance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mmer_bench.features.base import FeatureExtractionError, extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.manifest import dialogues_of
from mmer_bench.protocols import Fold
from mmer_bench.registry import EXTRACTORS

if TYPE_CHECKING:
    from mmer_bench.corpora.base import Corpus

log = logging.getLogger(__name__)


@dataclass
class Scaler:
    """Per-dimension affine scaling fitted on training clips only."""

    kind: str  # "minmax" or "standard"
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None

    def fit(self, arrays: list[np.ndarray]) -> Scaler:
        stacked = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])
        if self.kind == "minmax":
            self.offset = stacked.min(axis=0)
            span = stacked.max(axis=0) - self.offset
        elif self.kind == "standard":
            self.offset = stacked.mean(axis=0)
            span = stacked.std(axis=0)
        else:
            raise ValueError(f"unknown scaling {self.kind!r}")
        self.scale = np.where(span > 1e-8, span, 1.0).astype(np.float32)
        return self

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return ((array - self.offset) / self.scale).astype(np.float32)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def collate(items: list[dict]) -> dict:
    """Stack vectors; pad sequences to the longest with zeros and return a True-for-real mask.

    An item whose input is absent (a removed modality: its name in ``item["absent"]``, its
    value a zero placeholder of the input's rank) gets an all-false mask row; a vector input
    then carries a (B, 1) mask, present only when some clip of the batch lacks it."""
    batch = {"inputs": {}, "masks": {}, "targets": {}, "clip_id": [it["clip_id"] for it in items]}
    for name in items[0]["inputs"]:
        arrays = [torch.from_numpy(it["inputs"][name]) for it in items]
        if arrays[0].ndim == 1:
            batch["inputs"][name] = torch.stack(arrays)
        else:
            lengths = torch.tensor([a.shape[0] for a in arrays])
            batch["inputs"][name] = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)
            batch["masks"][name] = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
        if any(name in it.get("absent", ()) for it in items):
            present = torch.tensor([name not in it.get("absent", ()) for it in items])
            batch["masks"][name] = batch["masks"].get(name, torch.ones(len(items), 1, dtype=torch.bool)) & present[:, None]
    for task in items[0]["targets"]:
        values = [it["targets"][task] for it in items]
        if isinstance(values[0], np.ndarray):  # a regression target: float vector per clip
            batch["targets"][task] = torch.from_numpy(np.stack(values)).float()
        else:
            batch["targets"][task] = torch.tensor(values, dtype=torch.long)
    return batch


def collate_dialogues(dialogues: list[list[dict]]) -> dict:
    """Utterances of whole dialogues, flattened in order, with their row indices per dialogue."""
    batch = collate([item for dialogue in dialogues for item in dialogue])
    index = torch.full((len(dialogues), max(len(d) for d in dialogues)), -1, dtype=torch.long)
    start = 0
    for row, dialogue in enumerate(dialogues):
        index[row, : len(dialogue)] = torch.arange(start, start + len(dialogue))
        start += len(dialogue)
    batch["dialogues"] = index
    return batch


def group_dialogues(items: list[dict], manifest: pd.DataFrame, columns: tuple[str, str]) -> list[list[dict]]:
    """Items grouped by dialogue, utterances in their order (dialogues in first-seen order)."""
    by_clip = {item["clip_id"]: item for item in items}
    return [[by_clip[c] for c in dialogue] for dialogue in dialogues_of(manifest, list(by_clip), columns)]


class CorpusDataModule(L.LightningDataModule):
    """Batches of one fold of a corpus for the features a method consumes.

    ``inputs`` maps the method's input names to extractor names; ``scaling`` maps input names to
    "minmax" / "standard" (fitted on the fold's training clips). A clip lacking a feature raises
    FeatureExtractionError naming each file and problem, unless ``skip_missing`` is set: then it
    is left out and counted in ``skipped`` (reported by the runner). With ``dialogues`` set,
    batches hold ``batch_size`` whole dialogues (the corpus's ``dialogue_columns``); the
    utterances of a dialogue that lack features are left out of it like any skipped clip.
    """

    def __init__(
        self,
        corpus: Corpus,
        manifest: pd.DataFrame,
        fold: Fold,
        inputs: dict[str, str],
        scaling: dict[str, str] | None = None,
        store: FeatureStore | None = None,
        batch_size: int = 32,
        skip_missing: bool = False,
        workers: int | None = None,
        extractor_params: dict[str, dict] | None = None,
        max_frames: int | None = None,
        dialogues: bool = False,
    ):
        super().__init__()
        self.corpus, self.manifest, self.fold = corpus, manifest, fold
        self.inputs, self.scaling = inputs, scaling or {}
        self.store = store or FeatureStore()
        self.batch_size, self.skip_missing, self.workers = batch_size, skip_missing, workers
        self.extractor_params = extractor_params or {}
        self.max_frames = max_frames
        if dialogues and not corpus.dialogue_columns:
            raise ValueError(f"{corpus.name} has no dialogues: a method that reads conversations cannot run on it")
        self.dialogues = dialogues
        self.skipped: dict[str, str] = {}
        self.datasets: dict[str, ClipDataset] = {}

    def features(self) -> dict[str, object]:
        manifest_hash = self.corpus.manifest_hash(self.manifest)
        out = {}
        for name, extractor_name in self.inputs.items():
            extractor = EXTRACTORS.get(extractor_name)(**self.extractor_params.get(extractor_name, {}))
            out[name] = extract(extractor, self.manifest, manifest_hash, self.store, self.workers)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        features = self.features()
        fold_ids = {part: list(ids) for part, ids in self.fold.parts().items()}
        problems = {}
        for name, fs in features.items():
            for part_ids in fold_ids.values():
                for clip in part_ids:
                    if clip not in fs.arrays:
                        problems.setdefault(clip, []).append(f"{name}: {fs.errors.get(clip, 'not extracted')}")
        if problems and not self.skip_missing:
            lines = [f"  {clip}: {'; '.join(p)}" for clip, p in list(problems.items())[:20]]
            raise FeatureExtractionError(
                f"{len(problems)} clips of {self.corpus.name} {self.fold.name} lack features "
                "(pass --skip-missing to leave them out, counted in the report):\n" + "\n".join(lines)
            )
        self.skipped = {clip: "; ".join(p) for clip, p in problems.items()}
        if self.skipped:
            log.warning("%s %s: skipping %d clips without features", self.corpus.name, self.fold.name, len(self.skipped))
        fold_ids = {part: [c for c in ids if c not in self.skipped] for part, ids in fold_ids.items()}

        scalers = {
            name: Scaler(kind).fit([features[name].arrays[c] for c in fold_ids["train"]])
            for name, kind in self.scaling.items()
            if name in features
        }
        labels = self.manifest.set_index("clip_id")
        columns = {t.name: list(t.columns) for t in self.corpus.tasks}
        for part, ids in fold_ids.items():
            items = []
            for clip in ids:
                inputs, absent = {}, []
                for name, fs in features.items():
                    array = fs.arrays[clip]
                    if array is None:  # a removed modality (robustness conditions): absent, not zeros
                        template = features[name].arrays[fold_ids["train"][0]]
                        inputs[name] = np.zeros(template.shape[-1:] if template.ndim == 1 else (1, template.shape[-1]),
                                                np.float32)
                        absent.append(name)
                        continue
                    if self.max_frames and array.ndim == 2:
                        array = array[: self.max_frames]
                    inputs[name] = scalers[name](array) if name in scalers else array.astype(np.float32)
                row = labels.loc[clip]
                targets = {t.name: t.target_of(row[columns[t.name]].to_numpy()) for t in self.corpus.tasks}
                items.append({"clip_id": clip, "inputs": inputs, "targets": targets, **({"absent": absent} if absent else {})})
            if self.dialogues:
                items = group_dialogues(items, self.manifest, self.corpus.dialogue_columns)
            self.datasets[part] = ClipDataset(items)

    def clips(self, part: str) -> list[dict]:
        """The clip items of a part (flattened out of their dialogues when batching dialogues)."""
        items = self.datasets[part].items
        return [it for dialogue in items for it in dialogue] if self.dialogues else items

    def class_counts(self, task: str) -> np.ndarray | None:
        """Training clips per class; None for a regression task."""
        kind = next(t for t in self.corpus.tasks if t.name == task)
        if kind.kind != "classification":
            return None
        n = kind.num_classes
        targets = [it["targets"][task] for it in self.clips("train")]
        return np.bincount(targets, minlength=n)

    def input_dims(self) -> dict[str, int]:
        first = self.clips("train")[0]["inputs"]
        return {name: int(a.shape[-1]) for name, a in first.items()}

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[part], batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=collate_dialogues if self.dialogues else collate)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)

    def part_dataloader(self, part: str) -> DataLoader:
        return self._loader(part, False)
