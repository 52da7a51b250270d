"""Classification metrics shared by training (early stopping) and evaluation (reports).

Every score is scikit-learn's, always over the whole taxonomy (``labels=range(K)``,
``zero_division=0``): a class missing from a small test split then counts as the 0 it earns
instead of silently leaving the average, so numbers from two splits or two papers measure the
same thing. One module serves both callers, so the validation score that picks the best
checkpoint is the same number the report prints.

Names follow the video-emotion literature: WAR (weighted average recall) is top-1 accuracy,
UAR (unweighted average recall) the mean of per-class recalls, and a class's "accuracy" in
per-class tables is its recall (the share of that class's clips named correctly).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

SUMMARY_KEYS = ("accuracy", "war", "uar", "weighted_f1", "macro_f1")


def _labels(num_classes: int) -> list[int]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return list(range(num_classes))


def _as_labels(y: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.int64).reshape(-1)


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """K × K counts, rows true classes, columns predicted ones (absent classes are zero rows)."""
    return skm.confusion_matrix(
        _as_labels(y_true), _as_labels(y_pred), labels=_labels(num_classes)
    ).astype(np.int64)


def per_class_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, F1 and support per class (arrays of length K).

    ``accuracy`` is the class's recall: the per-class accuracy papers on this task report is
    "correct clips of the class / clips of the class", not the binary one-vs-rest accuracy
    (which rewards every true negative and is near 1 for any rare class). A ratio that is 0/0
    (class absent from the truth, or never predicted) is 0.
    """
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        _as_labels(y_true),
        _as_labels(y_pred),
        labels=_labels(num_classes),
        average=None,
        zero_division=0,
    )
    return {
        "accuracy": recall.astype(float),
        "precision": precision.astype(float),
        "recall": recall.astype(float),
        "f1": f1.astype(float),
        "support": support.astype(float),
    }


def classification_summary(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, float]:
    """Top-1 accuracy (= WAR), UAR, weighted F1 and macro F1 over all K classes.

    UAR averages recall over the classes present in ``y_true`` (``balanced_accuracy_score``'s
    definition): the recall of a class with no clip is 0/0, and counting it as 0 would punish a
    model for a gap in the split. Macro F1 does count such a class (as 0, or less if the model
    predicted it), since predicting a class that is not there is a real error.
    """
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    labels = _labels(num_classes)
    if len(y_true) == 0:
        return dict.fromkeys(SUMMARY_KEYS, 0.0)
    present = sorted(set(y_true.tolist()))
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "war": float(
            skm.recall_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "uar": float(
            skm.recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
    }


def polarity_accuracy(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    polarity_of: Sequence[str],
) -> float:
    """Share of clips whose predicted class has the true class's polarity.

    Classes map to their polarity first; the score is then plain accuracy on polarities.
    """
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if len(y_true) == 0:
        return 0.0
    polarity = np.asarray(polarity_of)
    return float(skm.accuracy_score(polarity[y_true], polarity[y_pred]))


def accuracy_or_none(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> float | None:
    """Top-1 accuracy, or None for an empty group (a subset of the test split may be empty)."""
    y_true = _as_labels(y_true)
    return float(skm.accuracy_score(y_true, _as_labels(y_pred))) if len(y_true) else None


def expected_calibration_error(
    probabilities: np.ndarray, y_true: Sequence[int] | np.ndarray, bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins: Σ_b (n_b / N) · |accuracy_b − confidence_b|.

    Written here because scikit-learn has no multi-class ECE: ``calibration_curve`` is binary
    and returns only the non-empty bins' means, without the bin sizes ECE weights by.
    """
    probabilities = np.asarray(probabilities, float)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == _as_labels(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def log_loss(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, labels: Sequence[int]
) -> float:
    """Mean negative log-likelihood (nats per clip), scikit-learn's ``log_loss`` over all K
    classes (so a test split missing a class still scores the same K-way distribution)."""
    y_true = _as_labels(y_true)
    if len(y_true) == 0:
        return 0.0
    probabilities = np.asarray(probabilities, float)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return float(skm.log_loss(y_true, probabilities, labels=list(labels)))


# Training history keys of the authors' protocol (evaluate.protocol: authors): the test split
# scored every epoch on random views, e.g. "test_random_view_accuracy".
AUTHORS_TEST = "test_random_view_"


def authors_protocol(history: Sequence[dict[str, float]]) -> dict[str, float | int] | None:
    """The score the authors' main_final_delay.py reports, from a training history.

    Their loop scores the test list after every epoch (val_epoch on random views) and keeps the
    epoch of the highest accuracy: the figure is the maximum over epochs on test, the number a
    test-set model selection gives, not an estimate of accuracy on unseen clips. None when the
    history holds no such scores (the run did not use the protocol).
    """
    scored = [record for record in history if f"{AUTHORS_TEST}accuracy" in record]
    if not scored:
        return None
    # The first epoch of the highest accuracy, as their `acc > best_acc` keeps it.
    best = max(scored, key=lambda record: (record[f"{AUTHORS_TEST}accuracy"], -record["epoch"]))
    out: dict[str, float | int] = {"epoch": int(best["epoch"]), "epochs_scored": len(scored)}
    for key in SUMMARY_KEYS:
        if f"{AUTHORS_TEST}{key}" in best:
            out[key] = float(best[f"{AUTHORS_TEST}{key}"])
    return out
