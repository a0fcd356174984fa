"""Task kinds: what a prediction head predicts, its loss and its metrics.

Only single-label classification exists so far; a corpus may declare several such tasks (for
example emotion and sentiment) and the base recognizer builds one head, loss and metric set per
task. Metric names are shared with the results table and the leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchmetrics
from torchmetrics import classification as tmc

# Metrics computed for every classification task, in the order the leaderboard shows them.
CLASSIFICATION_METRICS = ("accuracy", "uar", "macro_f1", "weighted_f1")


@dataclass(frozen=True)
class ClassificationTask:
    """Single-label classification over ``classes`` (index = position in the tuple)."""

    name: str
    classes: tuple[str, ...]
    weight: float = 1.0  # weight of this task's loss in the total loss

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, class_weights=None, label_smoothing=0.0):
        return torch.nn.functional.cross_entropy(
            logits, target, weight=class_weights, label_smoothing=label_smoothing
        )

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


def classification_scores(task: ClassificationTask, probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics of a finished set of predictions, with the same torchmetrics as training."""
    metrics = task.metric_collection()
    values = metrics(torch.tensor(np.asarray(probs), dtype=torch.float32), torch.tensor(np.asarray(target), dtype=torch.long))
    return {k: float(v) for k, v in values.items()}


def confusion(task: ClassificationTask, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    matrix = tmc.MulticlassConfusionMatrix(task.num_classes)
    return matrix(torch.as_tensor(probs), torch.as_tensor(target, dtype=torch.long)).numpy()
