"""Task kinds: what a prediction head predicts, its loss and its metrics.

A corpus declares one or more tasks; the base recognizer builds one head, loss and metric set per
task, and the runner scores finished predictions with the task. Every task kind offers the same
small interface:

- ``num_outputs``: width of the head (classes, or regressed values)
- ``columns``: the manifest columns holding the target; ``target_of(values)`` turns them into one
  clip's target (an int class, or a float32 vector of ``num_outputs`` values)
- ``loss(output, target, class_weights=None, label_smoothing=0.0)``
- ``postprocess(output)``: the head's raw output -> what is stored and scored (class probabilities,
  or values clamped to the label range)
- ``metric_collection()``: torchmetrics for validation logging (fed postprocessed outputs)
- ``scores(outputs, target)``: final metrics from numpy arrays of postprocessed outputs
- ``confusion(outputs, target)``: a JSON-able confusion summary of the test part
- ``metric_mode(metric)``: "max" or "min" (MAE is lower-is-better), used for checkpoint selection
  and leaderboard ranking; ``report_metrics`` / ``primary_metric``: leaderboard columns (empty for
  classification: the corpus chooses them)

CMU-MOSEI metrics follow Zadeh et al. 2018 (ACL, Graph-MFN) and Williams et al. 2018: emotion
presence (intensity > 0) scored by weighted accuracy and F1, sentiment by Acc2, Acc7, MAE and
Pearson r. Helpers below give the other granularities used in the literature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchmetrics
from sklearn import metrics as skm
from torchmetrics import classification as tmc

# Metrics computed for every classification task, in the order the leaderboard shows them.
CLASSIFICATION_METRICS = ("accuracy", "uar", "macro_f1", "weighted_f1")
# The CMU-MOSEI annotation grid: averages of three annotators' 0-3 ratings, as the labels are released.
INTENSITY_GRID = (0.0, 0.16, 0.33, 0.5, 0.66, 1.0, 1.33, 1.66, 2.0, 2.33, 2.66, 3.0)
INTEGER_GRID = (0.0, 1.0, 2.0, 3.0)
MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")


@dataclass(frozen=True)
class ClassificationTask:
    """Single-label classification over ``classes`` (index = position in the tuple)."""

    name: str
    classes: tuple[str, ...]
    weight: float = 1.0  # weight of this task's loss in the total loss
    kind = "classification"
    report_metrics: tuple[str, ...] = ()  # empty: the corpus's report_metrics
    primary_metric = None  # None: the corpus's primary_metric

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name,)

    def describe(self) -> str:
        return f"{self.num_classes} classes: {', '.join(self.classes)}"

    def target_of(self, values) -> int:
        return int(values[0])

    def invalid(self, manifest) -> np.ndarray:
        labels = manifest[self.name]
        return ((labels < 0) | (labels >= self.num_classes) | labels.isna()).to_numpy()

    def metric_mode(self, metric: str) -> str:
        return "max"

    def loss(self, logits: torch.Tensor, target: torch.Tensor, class_weights=None, label_smoothing=0.0):
        """Cross-entropy with class indices (B,) or soft targets (B, C) (mixup). With class
        weights, torch averages soft targets over the batch, hard ones over the summed weights."""
        return torch.nn.functional.cross_entropy(
            logits, target, weight=class_weights, label_smoothing=label_smoothing
        )

    def postprocess(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def metric_collection(self) -> torchmetrics.MetricCollection:
        n = self.num_classes
        return torchmetrics.MetricCollection(
            {
                "accuracy": tmc.MulticlassAccuracy(n, average="micro"),
                "uar": tmc.MulticlassRecall(n, average="macro"),
                "macro_f1": tmc.MulticlassF1Score(n, average="macro"),
                "weighted_f1": tmc.MulticlassF1Score(n, average="weighted"),
            }
        )

    def scores(self, probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
        return classification_scores(self, probs, target)

    def confusion(self, probs: np.ndarray, target: np.ndarray) -> list:
        return confusion(self, probs, target).tolist()


@dataclass(frozen=True)
class _RegressionTask:
    """Shared by the regression kinds: L1 loss on the raw output, values clamped to [low, high]."""

    name: str
    weight: float = 1.0
    kind = "regression"
    low = 0.0
    high = 3.0
    primary_metric = "mae"

    @property
    def classes(self) -> tuple[str, ...]:  # names of the outputs (stored in the predictions' metadata)
        return self.columns

    @property
    def num_outputs(self) -> int:
        return len(self.columns)

    def target_of(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def invalid(self, manifest) -> np.ndarray:
        values = manifest[list(self.columns)]
        return ((values < self.low) | (values > self.high) | values.isna()).any(axis=1).to_numpy()

    def metric_mode(self, metric: str) -> str:
        return "min" if metric.startswith("mae") else "max"

    def loss(self, output: torch.Tensor, target: torch.Tensor, class_weights=None, label_smoothing=0.0):
        return torch.nn.functional.l1_loss(output, target)

    def postprocess(self, output: torch.Tensor) -> torch.Tensor:
        return output.float().clamp(self.low, self.high)

    def metric_collection(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({"mae": torchmetrics.MeanAbsoluteError()})


@dataclass(frozen=True)
class IntensityTask(_RegressionTask):
    """Multi-output regression of emotion intensities (CMU-MOSEI: six emotions, each in [0, 3])."""

    name: str = "emotions"
    dimensions: tuple[str, ...] = MOSEI_EMOTIONS
    threshold: float = 0.0  # an emotion is present when its intensity is above this
    report_metrics: tuple[str, ...] = ("mae", "wa", "f1")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.dimensions

    def describe(self) -> str:
        return f"intensity regression [{self.low:g}, {self.high:g}]: {', '.join(self.dimensions)}"

    def scores(self, outputs: np.ndarray, target: np.ndarray) -> dict[str, float]:
        return intensity_scores(outputs, target, self.dimensions, self.threshold)

    def confusion(self, outputs: np.ndarray, target: np.ndarray) -> dict:
        matrices = multilabel_confusion(outputs, target, self.threshold)
        return {name: m.tolist() for name, m in zip(self.dimensions, matrices)}


@dataclass(frozen=True)
class SentimentTask(_RegressionTask):
    """One sentiment value in [-3, 3] (CMU-MOSI / CMU-MOSEI)."""

    name: str = "sentiment"
    report_metrics: tuple[str, ...] = ("acc2", "acc2_nonzero", "f1_nonzero", "acc5", "acc7", "mae", "corr")
    low = -3.0
    high = 3.0

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name,)

    def describe(self) -> str:
        return f"sentiment regression [{self.low:g}, {self.high:g}]"

    def scores(self, outputs: np.ndarray, target: np.ndarray) -> dict[str, float]:
        return sentiment_scores(np.asarray(outputs).reshape(-1), np.asarray(target).reshape(-1))

    def confusion(self, outputs: np.ndarray, target: np.ndarray) -> list:
        classes = np.arange(-3, 4)
        return skm.confusion_matrix(sentiment_classes(target), sentiment_classes(outputs), labels=classes).tolist()


Task = ClassificationTask | IntensityTask | SentimentTask


# --- classification ------------------------------------------------------------------------------

def classification_scores(task: ClassificationTask, probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics of a finished set of predictions, with the same torchmetrics as training."""
    metrics = task.metric_collection()
    values = metrics(torch.tensor(np.asarray(probs), dtype=torch.float32), torch.tensor(np.asarray(target), dtype=torch.long))
    return {k: float(v) for k, v in values.items()}


def confusion(task: ClassificationTask, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    matrix = tmc.MulticlassConfusionMatrix(task.num_classes)
    return matrix(torch.tensor(np.asarray(probs)), torch.tensor(np.asarray(target), dtype=torch.long)).numpy()


# --- emotion intensities -------------------------------------------------------------------------

def snap(values: np.ndarray, grid=INTENSITY_GRID) -> np.ndarray:
    """Each value replaced by the nearest grid point (ties go to the lower point)."""
    grid = np.asarray(grid, dtype=float)
    values = np.asarray(values, dtype=float)
    return grid[np.abs(values[..., None] - grid).argmin(axis=-1)]


def presence(values: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """True where an emotion is present: intensity strictly above ``threshold``."""
    return np.asarray(values) > threshold


def weighted_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """wA = (TP * N / P + TN) / (2N) for binary labels (Tong et al. 2017, as used on CMU-MOSEI).

    Equal to the mean of the recalls of both classes; NaN when one class is absent from ``target``.
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    p, n = target.sum(), (~target).sum()
    if p == 0 or n == 0:
        return float("nan")
    tp, tn = (pred & target).sum(), (~pred & ~target).sum()
    return float((tp * n / p + tn) / (2 * n))


def binary_f1(pred: np.ndarray, target: np.ndarray) -> float:
    """F1 of the positive class (0 when nothing is predicted or present)."""
    return float(skm.f1_score(np.asarray(target, bool), np.asarray(pred, bool), zero_division=0))


def intensity_scores(outputs: np.ndarray, target: np.ndarray, names=MOSEI_EMOTIONS, threshold: float = 0.0) -> dict:
    """Per emotion: MAE, presence wA and F1 (``mae_happy``, ``wa_happy``, ``f1_happy``, ...), and
    their means over emotions (``mae``, ``wa``, ``f1``; NaN emotions left out of the mean)."""
    outputs, target = np.asarray(outputs, float), np.asarray(target, float)
    out: dict[str, float] = {}
    for metric in ("mae", "wa", "f1"):
        per = []
        for i, name in enumerate(names):
            if metric == "mae":
                value = float(np.abs(outputs[:, i] - target[:, i]).mean())
            else:
                score = weighted_accuracy if metric == "wa" else binary_f1
                value = score(presence(outputs[:, i], threshold), presence(target[:, i], threshold))
            out[f"{metric}_{name}"] = value
            per.append(value)
        out[metric] = float(np.nanmean(per)) if not np.all(np.isnan(per)) else float("nan")
    return out


def multilabel_confusion(outputs: np.ndarray, target: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Per emotion a 2 x 2 presence matrix [[TN, FP], [FN, TP]] (rows: truth), shape (E, 2, 2)."""
    return skm.multilabel_confusion_matrix(presence(target, threshold), presence(outputs, threshold))


def dominant(values: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Multi-hot (N, E + 1): the emotion(s) of highest intensity (ties all count), or the last
    column, neutral, when no emotion is above ``threshold``."""
    values = np.asarray(values, float)
    top = values.max(axis=1, keepdims=True)
    hot = (values == top) & (top > threshold)
    return np.concatenate([hot, ~hot.any(axis=1, keepdims=True)], axis=1)


def dominant_scores(outputs: np.ndarray, target: np.ndarray, names=MOSEI_EMOTIONS, threshold: float = 0.0) -> dict:
    """The dominant emotion as a single-label task over ``names`` + neutral.

    The prediction is the highest predicted intensity (neutral when none is above ``threshold``);
    it is correct when it is one of the target's dominant emotions (ties). F1 uses the first
    dominant target emotion. ROC-AUC (one vs rest) scores each emotion by its predicted intensity
    and neutral by minus the highest one.
    """
    outputs, target = np.asarray(outputs, float), np.asarray(target, float)
    classes = [*names, "neutral"]
    truth_hot = dominant(target, threshold)
    pred = dominant(outputs, threshold).argmax(axis=1)  # first of tied maxima
    truth = truth_hot.argmax(axis=1)
    labels = np.arange(len(classes))
    out = {"accuracy": float(truth_hot[np.arange(len(pred)), pred].mean()),
           "macro_f1": float(skm.f1_score(truth, pred, labels=labels, average="macro", zero_division=0)),
           "weighted_f1": float(skm.f1_score(truth, pred, labels=labels, average="weighted", zero_division=0))}
    per_class = skm.f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    scores = np.concatenate([outputs, -outputs.max(axis=1, keepdims=True)], axis=1)
    aucs = []
    for i, name in enumerate(classes):
        out[f"f1_{name}"] = float(per_class[i])
        positive = truth == i
        auc = float(skm.roc_auc_score(positive, scores[:, i])) if 0 < positive.sum() < len(positive) else float("nan")
        out[f"auc_{name}"] = auc
        aucs.append(auc)
    out["macro_auc"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")
    return out


# --- sentiment -----------------------------------------------------------------------------------

def sentiment_classes(values: np.ndarray, bound: int = 3) -> np.ndarray:
    """Classes -bound..bound: clipped to [-bound, bound] and rounded (half to even, numpy's
    round); bound 3 gives Acc7's seven classes, bound 2 Acc5's five."""
    return np.round(np.clip(np.asarray(values, float), -bound, bound)).astype(int)


def sentiment_scores(outputs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Acc2 (negative < 0 vs non-negative >= 0) and its weighted F1 (``f1_2``); Acc2 and the
    weighted F1 without the clips labelled 0 (negative vs positive: ``acc2_nonzero``,
    ``f1_nonzero``); Acc5 and Acc7 (values clipped to [-2, 2] / [-3, 3] and rounded); MAE and
    Pearson r (``corr``).

    As in the standard CMU-MOSI/MOSEI evaluation (``eval_mosei_senti`` of Tsai et al. 2019's MulT
    and of the MMSA toolkit). One deviation: MulT passes the predictions to scikit-learn's
    ``f1_score`` as the truth (its arguments are swapped), which changes a weighted F1; here the
    truth is the truth, as in MMSA.
    """
    outputs, target = np.asarray(outputs, float), np.asarray(target, float)
    pred_pos, true_pos = outputs >= 0, target >= 0
    nonzero = target != 0
    truth_nz, pred_nz = target[nonzero] > 0, outputs[nonzero] > 0
    out = {
        "acc2": float((pred_pos == true_pos).mean()),
        "f1_2": float(skm.f1_score(true_pos, pred_pos, average="weighted", zero_division=0)),
        "acc2_nonzero": float((pred_nz == truth_nz).mean()) if nonzero.any() else float("nan"),
        "f1_nonzero": float(skm.f1_score(truth_nz, pred_nz, average="weighted", zero_division=0))
        if nonzero.any() else float("nan"),
        "acc5": float((sentiment_classes(outputs, 2) == sentiment_classes(target, 2)).mean()),
        "acc7": float((sentiment_classes(outputs) == sentiment_classes(target)).mean()),
        "mae": float(np.abs(outputs - target).mean()),
    }
    constant = outputs.std() == 0 or target.std() == 0
    out["corr"] = float("nan") if constant else float(np.corrcoef(outputs, target)[0, 1])
    return out
