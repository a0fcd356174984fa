"""Scoring trained models under test-time conditions (features/perturb.py), without retraining.

The model, its fold, its scalers (fitted on its training clips) and its validation choice stay as
they were; only the test part's inputs change: perturbed media go through the same extractors,
a removed modality arrives as an absent input (all-false mask). The rules:

- a condition on a modality the method does not read leaves it ``unaffected`` (not scored: its
  score is the clean one);
- a removal that takes away every input of a method, or an input of a method that has no path for
  absent inputs (``handles_absent_inputs`` False), gives ``n/a``: never a score computed on the
  placeholder zeros;
- a perturbation that cannot act on a feature (frames dropped from a table of per-clip means)
  gives ``not applicable``;
- a stacker (posterior fusion) fuses the sources' test posteriors under the condition (clean for
  sources the condition does not touch); sources that are ``n/a`` are left out and the stacker is
  refitted on the training posteriors of the sources it still has (training clips are clean, so
  nothing of the test part is used); with no source left it is ``n/a``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mmer_bench.corpora.base import CorpusDataModule
from mmer_bench.features import perturb
from mmer_bench.features.perturb import Condition, NotApplicable
from mmer_bench.features.store import FeatureSet
from mmer_bench.fusion import align, fuse
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)

SCORED, NA, UNAFFECTED, NOT_APPLICABLE = "scored", "n/a", "unaffected", "not applicable"


class ConditionDataModule(CorpusDataModule):
    """A fold's data module whose test part is under ``condition``; train and val (and the
    scalers fitted on train) are exactly the clean ones."""

    def __init__(self, *args, condition: Condition, condition_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.condition, self.condition_seed = condition, condition_seed

    def features(self) -> dict[str, FeatureSet]:
        clean = super().features()
        test_ids = set(self.fold.test)
        test_manifest = self.manifest[self.manifest["clip_id"].isin(test_ids)].reset_index(drop=True)
        test_hash = self.corpus.manifest_hash(test_manifest)
        out = {}
        for name, extractor_name in self.inputs.items():
            extractor = EXTRACTORS.get(extractor_name)(**self.extractor_params.get(extractor_name, {}))
            if not perturb.applies(self.condition, extractor):
                out[name] = clean[name]
                continue
            changed = perturb.perturbed_features(self.condition, extractor, test_manifest, test_hash, self.store,
                                                 clean[name], self.condition_seed, self.workers)
            arrays = {c: a for c, a in clean[name].arrays.items() if c not in test_ids}
            errors = {c: e for c, e in clean[name].errors.items() if c not in test_ids}
            if changed is None:  # removed: absent for every test clip (setup gives an all-false mask)
                arrays.update({c: None for c in test_ids})
            else:
                arrays.update({c: a for c, a in changed.arrays.items() if c in test_ids})
                errors.update({c: e for c, e in changed.errors.items() if c in test_ids})
            out[name] = FeatureSet(arrays, errors)
        return out


def condition_status(method_cls, inputs: dict[str, str], condition: Condition,
                     extractor_params: dict[str, dict] | None = None) -> tuple[str, str]:
    """(status, reason) of a trained method under a condition, before anything is computed."""
    params = extractor_params or {}
    hit = [name for name, e in inputs.items() if perturb.applies(condition, EXTRACTORS.get(e)(**params.get(e, {})))]
    if not hit:
        return UNAFFECTED, f"reads no {condition.modality} input"
    if condition.removes:
        if len(hit) == len(inputs):
            return NA, f"its only modality ({condition.modality}) is removed"
        if not getattr(method_cls, "handles_absent_inputs", False):
            return NA, f"has no path for an absent {condition.modality} input"
    return SCORED, f"inputs {hit} under {condition.name}"


def evaluate_condition(model, corpus, manifest, fold, inputs: dict[str, str], scaling: dict[str, str], store,
                       condition: Condition, batch_size: int = 32, extractor_params: dict | None = None,
                       skip_missing: bool = False, workers: int | None = None, dialogues: bool = False,
                       condition_seed: int = 0) -> tuple[str, str, dict | None]:
    """(status, reason, test predictions {task: {clip_id, probs, target}} or None) of a trained
    model on its fold's test part under the condition. ``fold`` is the fold the model's scalers
    were fitted on (train + val when it was refit)."""
    from mmer_bench.runner import predict  # the runner's prediction loop, so clean scores match exactly

    status, reason = condition_status(type(model), inputs, condition, extractor_params)
    if status != SCORED:
        return status, reason, None
    dm = ConditionDataModule(corpus, manifest, fold, inputs, scaling, store, batch_size=batch_size,
                             skip_missing=skip_missing, workers=workers, extractor_params=extractor_params,
                             dialogues=dialogues, condition=condition, condition_seed=condition_seed)
    try:
        dm.setup()
    except NotApplicable as exc:
        return NOT_APPLICABLE, str(exc), None
    return SCORED, reason, predict(model, dm.part_dataloader("test"))


def stack_condition(task, sources: dict[str, tuple[str, pd.DataFrame, pd.DataFrame | None]], train_labels: pd.Series,
                    C: float = 1.0, seed: int = 0) -> tuple[str, str, np.ndarray | None, list[str]]:
    """The stacker under a condition. ``sources``: name -> (status, clean training posteriors,
    test posteriors under the condition or clean when unaffected, None when n/a); posterior frames
    have ``clip_id`` and one column per class. Returns (status, reason, test probabilities in the
    order of the aligned test clips, the test clip ids)."""
    kept = {name: s for name, s in sources.items() if s[0] in (SCORED, UNAFFECTED)}
    if not kept:
        return NA, "no fused source is left under this condition", None, []
    dropped = sorted(set(sources) - set(kept))
    if all(s[0] == UNAFFECTED for s in kept.values()) and not dropped:
        return UNAFFECTED, "no fused source is affected", None, []
    train = align({n: s[1] for n, s in kept.items()}, task.classes, "train")
    test = align({n: s[2] for n, s in kept.items()}, task.classes, "test")
    probs = fuse(train, train_labels.loc[train.index].to_numpy(), test, C=C, seed=seed)
    reason = f"fuses {sorted(kept)}" + (f"; refitted without {dropped} (n/a)" if dropped else "")
    return SCORED, reason, probs, list(test.index)
