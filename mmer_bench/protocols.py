"""Evaluation protocols: official splits and subject-wise k-fold cross-validation.

A protocol turns a manifest into a list of folds, each with disjoint train / val / test clip
ids. Validation always comes from the training side (training subjects, or the official dev
split): the test part never selects an epoch, a model or a hyperparameter. ``check_disjoint``
runs before any training and fails loudly when a subject (or any other grouping column, such as
a dialogue or a video) appears in two parts of one fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class LeakageError(AssertionError):
    """A split plan puts one subject (or dialogue, video, ...) in two parts of a fold."""


@dataclass(frozen=True)
class Fold:
    name: str  # "fold0", ..., or "official"
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    info: dict = field(default_factory=dict, compare=False)

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def check_disjoint(manifest: pd.DataFrame, folds: list[Fold], group_columns: tuple[str, ...] = ("subject",)) -> None:
    """Raise LeakageError if a clip or a group value is in two of train/val/test of any fold."""
    indexed = manifest.set_index("clip_id")
    for fold in folds:
        parts = fold.parts()
        seen: dict[str, str] = {}
        for part, ids in parts.items():
            for clip in ids:
                if clip in seen:
                    raise LeakageError(f"{fold.name}: clip {clip} is in both {seen[clip]} and {part}")
                seen[clip] = part
            if not ids:
                raise LeakageError(f"{fold.name}: the {part} part is empty")
        for column in group_columns:
            if column not in indexed.columns:
                continue
            groups = {part: set(indexed.loc[list(ids), column]) for part, ids in parts.items()}
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = groups[a] & groups[b]
                if shared:
                    raise LeakageError(
                        f"{fold.name}: {column} {sorted(shared)[:5]} in both {a} and {b}; "
                        "a subject-wise protocol must keep them apart"
                    )


def subject_kfold(
    manifest: pd.DataFrame,
    fold_subjects: list[list],
    val_fraction: float = 0.2,
    seed: int = 0,
    subject_column: str = "subject",
) -> list[Fold]:
    """Subject-wise k-fold from a fold table: fold k tests on ``fold_subjects[k]``.

    The validation subjects of fold k are ``val_fraction`` of its training subjects (at least
    one), drawn with ``seed``; the model is trained on the rest.
    """
    all_listed = [s for group in fold_subjects for s in group]
    if len(set(all_listed)) != len(all_listed):
        raise LeakageError(f"the fold table lists a subject twice: {all_listed}")
    present = set(manifest[subject_column])
    unlisted = present - set(all_listed)
    if unlisted:
        raise ValueError(f"subjects {sorted(unlisted)} are in the data but in no fold of the fold table")
    folds = []
    for k, test_subjects in enumerate(fold_subjects):
        train_subjects = sorted(present - set(test_subjects))
        rng = np.random.default_rng(seed * 1000 + k)
        n_val = max(1, int(round(val_fraction * len(train_subjects))))
        val_subjects = set(rng.choice(train_subjects, size=n_val, replace=False).tolist())
        subject = manifest[subject_column]
        part = np.where(
            subject.isin(test_subjects), "test", np.where(subject.isin(val_subjects), "val", "train")
        )
        ids = {p: tuple(manifest.loc[part == p, "clip_id"]) for p in ("train", "val", "test")}
        folds.append(
            Fold(
                f"fold{k}",
                ids["train"],
                ids["val"],
                ids["test"],
                info={"test_subjects": sorted(test_subjects), "val_subjects": sorted(val_subjects)},
            )
        )
    return folds


def official_split(manifest: pd.DataFrame, split_column: str = "split", names=("train", "val", "test"),
                   group_column: str | None = None) -> list[Fold]:
    """One fold from a column that names each clip's official part. With ``group_column`` (a
    dialogue, a video), first fail loudly if a group spans several parts: a re-split copy of a
    corpus would otherwise leak whole conversations or videos."""
    if group_column:
        parts_per_group = manifest.groupby(group_column)[split_column].nunique()
        crossing = list(parts_per_group.index[parts_per_group > 1])
        if crossing:
            raise LeakageError(f"{group_column}s {crossing[:5]} span several parts of the official split")
    ids = {}
    for part, name in zip(("train", "val", "test"), names):
        ids[part] = tuple(manifest.loc[manifest[split_column] == name, "clip_id"])
    return [Fold("official", ids["train"], ids["val"], ids["test"])]


def inner_folds(manifest: pd.DataFrame, outer: Fold, k: int, group_column: str = "subject",
                val_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """An inner ``k``-fold cross-validation over the training groups (subjects, dialogues, ...) of
    ``outer`` (its train and val parts): every training clip of the outer fold is in the test part
    of exactly one inner fold, so models trained on the inner folds give out-of-fold posteriors of
    all of them (what a stacker may learn from without seeing its own training clips in-sample;
    Wolpert 1992, "Stacked generalization"). Each inner fold validates on ``val_fraction`` of its
    training groups, as the outer protocol does; the outer test part is never touched.
    Folds are named ``<outer>-inner<j>``."""
    inside = manifest[manifest["clip_id"].isin(set(outer.train) | set(outer.val))]
    groups = sorted(inside[group_column].unique().tolist(), key=str)
    if len(groups) < k + 1:
        raise ValueError(f"{outer.name}: {len(groups)} training {group_column}s cannot make {k} inner folds "
                         "(each needs test and validation groups of its own)")
    rng = np.random.default_rng(seed)
    shuffled = [groups[i] for i in rng.permutation(len(groups))]
    folds = subject_kfold(inside, [shuffled[j::k] for j in range(k)], val_fraction, seed, group_column)
    inner = [Fold(f"{outer.name}-inner{j}", f.train, f.val, f.test, {**f.info, "outer": outer.name})
             for j, f in enumerate(folds)]
    check_disjoint(manifest, inner, (group_column,))
    return inner
