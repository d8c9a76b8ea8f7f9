"""Classification metrics: overall and mean-class accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracies are fractions in [0, 1]; classes absent from the labels are left out of the
    class mean and reported as None (a subset or few-shot split may not contain every class)."""

    accuracy: float
    mean_class_accuracy: float
    per_class: dict[str, float | None]
    confusion_matrix: list[list[int]]  # rows = true class, columns = predicted class
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "num_samples": self.num_samples,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
        }


def classification_report(
    predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> ClassificationReport:
    """Scores integer `predictions` against `labels` (both [N])."""
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    num_classes = len(class_names)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(1)
    correct = np.diag(confusion)
    per_class: dict[str, float | None] = {
        name: (float(correct[i] / support[i]) if support[i] else None)
        for i, name in enumerate(class_names)
    }
    present = support > 0
    total = int(labels.shape[0])
    return ClassificationReport(
        accuracy=float(correct.sum() / total) if total else 0.0,
        mean_class_accuracy=float((correct[present] / support[present]).mean()) if total else 0.0,
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        num_samples=total,
    )
