"""Classification metrics shared by training (early stopping) and evaluation (reports).

Plain numpy over integer labels: the project avoids a scikit-learn dependency for five formulas,
and having one implementation means the validation score that picks the best checkpoint is the
same number the report prints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where a ratio is undefined."""
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(precision), where=denominator > 0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_summary(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Top-1 accuracy, support-weighted F1 and macro F1 (over classes present in y_true)."""
    y_true = np.asarray(y_true, int)
    y_pred = np.asarray(y_pred, int)
    if len(y_true) == 0:
        return {"accuracy": 0.0, "weighted_f1": 0.0, "macro_f1": 0.0}
    scores = per_class_scores(confusion_matrix(y_true, y_pred, num_classes))
    support = scores["support"]
    present = support > 0
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "weighted_f1": float((scores["f1"] * support).sum() / support.sum()),
        "macro_f1": float(scores["f1"][present].mean()),
    }


def polarity_accuracy(y_true: np.ndarray, y_pred: np.ndarray, polarity_of: Sequence[str]) -> float:
    """Share of clips whose predicted class has the true class's polarity."""
    if len(y_true) == 0:
        return 0.0
    polarity = np.asarray(polarity_of)
    return float((polarity[np.asarray(y_true, int)] == polarity[np.asarray(y_pred, int)]).mean())


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15
) -> float:
    """ECE with equal-width confidence bins: mean |accuracy − confidence| weighted by bin size."""
    probabilities = np.asarray(probabilities, float)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true, int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
