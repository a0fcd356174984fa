"""What a corpus is: how its release is parsed into a manifest, its tasks and its protocol.

Flow: ``Corpus.build_manifest`` (one row per clip: clip_id, subject, the target columns of each
task -- an integer class, or one float column per regressed value such as ``happy`` ... ``fear``
and ``sentiment`` -- and media paths) -> ``Corpus.folds`` (protocols.py) -> feature store ->
``mmer_bench.data.CorpusDataModule`` batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.errors import CorpusFormatError, reading, reads_file  # noqa: F401 (re-exported for the corpora)
from mmer_bench.features.store import stable_hash
from mmer_bench.protocols import Fold, check_disjoint
from mmer_bench.registry import EXTRACTORS
from mmer_bench.tasks import Task


class CorpusNotFoundError(FileNotFoundError):
    """The data root lacks the corpus; the message says what to get and where to put it."""


class Corpus:
    """A corpus: how to parse its release, its tasks and its protocol. Subclasses set the
    class attributes and implement ``build_manifest`` and ``folds``."""

    tasks: tuple[Task, ...] = ()
    primary_metric = "accuracy"  # of the first task; selects checkpoints on validation
    report_metrics: tuple[str, ...] = ("accuracy", "uar", "macro_f1")  # leaderboard columns
    group_columns: tuple[str, ...] = ("subject",)  # kept apart across train/val/test
    protocol = ""  # one line for the leaderboard, e.g. "subject-wise 5-fold CV (published folds)"
    # (dialogue column, utterance-order column) for corpora of conversations; None: no dialogues.
    dialogue_columns: tuple[str, str] | None = None
    # Columns of the manifest that hold media paths -> the modality they carry.
    media_columns = {"audio_path": "audio", "video_path": "video", "openface_path": "au", "au_means_path": "au"}

    def __init__(self, data_root: str | Path | None = None, **options):
        self.data_root = Path(data_root) if data_root else None
        self.options = options

    @property
    def name(self) -> str:
        return self.registry_name

    @property
    def primary_mode(self) -> str:
        """"max" or "min": whether a higher primary metric is better (MAE: lower)."""
        return self.tasks[0].metric_mode(self.primary_metric)

    def build_manifest(self) -> pd.DataFrame:
        raise NotImplementedError

    def folds(self, manifest: pd.DataFrame) -> list[Fold]:
        raise NotImplementedError

    def manifest(self) -> pd.DataFrame:
        # Before any corpus looks inside it: a mistyped root is an error, never an empty or a
        # freshly generated corpus.
        if self.data_root is not None and not self.data_root.is_dir():
            raise CorpusNotFoundError(f"{self.name}: the data root {self.data_root} does not exist or is not a folder "
                                      "(check --data-root)")
        manifest = self.build_manifest().reset_index(drop=True)
        self.validate(manifest)
        return manifest

    def validate(self, manifest: pd.DataFrame) -> None:
        if manifest.empty:
            raise ValueError(f"{self.name}: the manifest is empty (data root {self.data_root})")
        duplicated = manifest["clip_id"][manifest["clip_id"].duplicated()]
        if not duplicated.empty:
            raise ValueError(f"{self.name}: clip ids {list(duplicated[:5])} appear twice in the manifest")
        for task in self.validated_tasks():
            bad = manifest.loc[task.invalid(manifest), "clip_id"]
            if not bad.empty:
                raise ValueError(f"{self.name}: {task.name} labels missing or out of range for clips {list(bad[:5])}")

    def validated_tasks(self) -> tuple[Task, ...]:
        """The tasks whose labels ``validate`` checks (a partial release may lack some)."""
        return self.tasks

    def plan(self, manifest: pd.DataFrame) -> list[Fold]:
        """The folds, checked for leakage before anything trains."""
        folds = self.folds(manifest)
        check_disjoint(manifest, folds, self.group_columns)
        return folds

    @staticmethod
    def manifest_hash(manifest: pd.DataFrame) -> str:
        media = [c for c in manifest.columns if c.endswith("_path")]
        rows = [[v if isinstance(v, str) else "" for v in row] for row in manifest[["clip_id", *media]].to_numpy().tolist()]
        # File sizes catch a re-encoded or truncated file without hashing every byte.
        sizes = [[Path(p).stat().st_size if p and Path(p).is_file() else -1 for p in row[1:]] for row in rows]
        # A transcript lives in the manifest itself, not in a file: hash its content.
        texts = [t if isinstance(t, str) else "" for t in manifest["text"]] if "text" in manifest.columns else []
        return stable_hash([rows, sizes, texts] if texts else [rows, sizes])

    def labels_for(self, clip_ids: list[str], task: str) -> np.ndarray:
        """Integer labels of clips (from the manifest; corpora whose ids encode labels override)."""
        labels = self.manifest().set_index("clip_id")[task]
        unknown = [c for c in clip_ids if c not in labels.index]
        if unknown:
            raise KeyError(f"{self.name}: clips {unknown[:5]} are not in the corpus under {self.data_root}")
        return labels.loc[list(clip_ids)].to_numpy()

    def describe_extra(self, manifest: pd.DataFrame, folds: list[Fold]) -> list[str]:
        """Corpus-specific lines that ``mmer describe`` prints after the generic summary (files
        missing or unreadable, split-list problems, ...); none by default."""
        return []

    def available_features(self, manifest: pd.DataFrame) -> set[str]:
        """Extractor names whose source this manifest has for at least one clip."""
        names = set()
        for name, cls in EXTRACTORS.items():
            if any(c in manifest.columns and manifest[c].notna().any() for c in cls.manifest_columns()):
                names.add(name)
        return names
