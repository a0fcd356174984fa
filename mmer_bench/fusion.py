"""Late fusion of posteriors: one place for the runner's fusion jobs and ``mmer fuse``.

Posteriors of several systems on the same clips are concatenated, MinMax-scaled (fitted on the
training clips) and fed to a logistic regression trained on the training clips' posteriors, as
Luna-Jimenez et al. 2022 fuse their speech and facial models.

Posterior directory layout (``mmer fuse``): ``DIR/fold<k>/train.csv`` and ``DIR/fold<k>/test.csv``,
each with a ``clip_id`` column and one column per class name (probabilities or logits), and, for
the default inner-cv recipe, ``DIR/fold<k>/oof.csv``: out-of-fold posteriors of the training
clips (each from a model that did not train on its subject).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler


class FusionInputError(ValueError):
    pass


class Stacker:
    """A late fusion trained on the posteriors of other methods of the same run (not a network:
    stacking.py runs it after the fused methods' jobs, on the training clips' posteriors).
    A subclass registers with ``@STACKERS.register(name)`` and may cite its paper."""

    paper: ClassVar[dict[str, dict]] = {}

    @dataclass(frozen=True)
    class Settings:
        C: float = 1.0  # inverse L2 strength of the logistic regression
        fuse: list[str] | None = None  # methods to fuse; None = every method of the run
        # "inner-cv": fit on out-of-fold posteriors of the training clips (an inner CV of every fused
        # method over the fold's training subjects); "in-sample": on their own training posteriors
        recipe: str = "inner-cv"
        inner_folds: int = 3

        def __post_init__(self):
            if self.recipe not in RECIPE_FILES:
                raise ValueError(f"recipe {self.recipe!r}: expected one of {', '.join(RECIPE_FILES)}")
            if self.recipe == "inner-cv" and self.inner_folds < 2:
                raise ValueError(f"inner_folds {self.inner_folds}: an inner cross-validation needs at least 2")

    @classmethod
    def fits(cls, corpus) -> bool:
        """Posterior fusion combines class probabilities: classification corpora only."""
        return all(t.kind == "classification" for t in corpus.tasks)

    def __init__(self, settings=None):
        self.settings = settings or self.Settings()

    def fit_predict(self, train: pd.DataFrame, train_labels: np.ndarray, parts: dict[str, pd.DataFrame],
                    seed: int = 0) -> dict[str, np.ndarray]:
        """Class probabilities of each aligned part, from a combiner fit on ``train``."""
        return {part: fuse(train, train_labels, frame, C=self.settings.C, seed=seed) for part, frame in parts.items()}


def align(sources: dict[str, pd.DataFrame], classes: tuple[str, ...], where: str) -> pd.DataFrame:
    """Concatenate the class columns of each source on clip_id; every clip must be in every source."""
    frames = []
    for name, frame in sources.items():
        missing = [c for c in ("clip_id", *classes) if c not in frame.columns]
        if missing:
            raise FusionInputError(f"{name} ({where}): columns {missing} are missing")
        if frame["clip_id"].duplicated().any():
            raise FusionInputError(f"{name} ({where}): clip {frame['clip_id'][frame['clip_id'].duplicated()].iloc[0]} appears twice")
        values = frame.set_index("clip_id")[list(classes)].astype(float)
        if not np.isfinite(values.to_numpy()).all():
            raise FusionInputError(f"{name} ({where}): NaN or infinite posteriors")
        frames.append(values.add_prefix(f"{name}:"))
    joined = pd.concat(frames, axis=1, join="outer")
    incomplete = joined.index[joined.isna().any(axis=1)]
    if len(incomplete):
        raise FusionInputError(
            f"{where}: {len(incomplete)} clips lack posteriors from some source, e.g. {list(incomplete[:3])}"
        )
    return joined.sort_index()


def fuse(train: pd.DataFrame, train_labels: np.ndarray, test: pd.DataFrame, C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Fit on the aligned training posteriors; return test class probabilities."""
    scaler = MinMaxScaler().fit(train.to_numpy())
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model.fit(scaler.transform(train.to_numpy()), train_labels)
    probs = np.zeros((len(test), int(train_labels.max()) + 1))
    probs[:, model.classes_] = model.predict_proba(scaler.transform(test.to_numpy()))
    return probs


RECIPE_FILES = {"inner-cv": "oof", "in-sample": "train"}  # the training posteriors each recipe fits on


def read_posterior_dirs(dirs: list[Path], recipe: str = "in-sample") -> dict[str, dict[str, dict[str, pd.DataFrame]]]:
    """{fold: {part: {source: frame}}} from directories in the documented layout; the "train" part
    is ``train.csv`` (in-sample recipe) or ``oof.csv`` (inner-cv: out-of-fold posteriors)."""
    if recipe not in RECIPE_FILES:
        raise FusionInputError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPE_FILES)}")
    folds: dict[str, dict[str, dict[str, pd.DataFrame]]] = {}
    for d in dirs:
        fold_dirs = sorted(p for p in Path(d).glob("fold*") if p.is_dir())
        if not fold_dirs:
            raise FusionInputError(f"{d}: no fold<k>/ folders (expected DIR/fold<k>/train.csv and test.csv)")
        for fold_dir in fold_dirs:
            for part in ("train", "test"):
                path = fold_dir / f"{RECIPE_FILES[recipe] if part == 'train' else part}.csv"
                if not path.exists() and part == "train" and recipe == "inner-cv":
                    raise FusionInputError(
                        f"{path} is missing: the inner-cv recipe fits the stacker on out-of-fold posteriors of "
                        "the training clips; --recipe in-sample fits it on train.csv, the posteriors of the "
                        "models' own training clips (the recipe of Luna-Jimenez et al. 2022)")
                if not path.exists():
                    raise FusionInputError(f"{path} is missing")
                folds.setdefault(fold_dir.name, {}).setdefault(part, {})[str(d)] = pd.read_csv(path, dtype={"clip_id": str})
    expected = len(dirs)
    for fold, parts in folds.items():
        if any(len(sources) != expected for sources in parts.values()):
            raise FusionInputError(f"{fold} is not present in every posterior directory")
    return folds
