"""Metrics against hand-computed values and against scikit-learn's own functions.

The hand-computed numbers keep the tests from being tautological (the module calls
scikit-learn too); the scikit-learn comparisons pin the definitions (all K classes,
``zero_division=0``) on the cases that used to go wrong: classes absent from the truth,
predictions of a class that is not there, and a heavily imbalanced confusion.
"""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from emotions.evaluation.metrics import (
    SUMMARY_KEYS,
    accuracy_or_none,
    classification_summary,
    confusion_matrix,
    expected_calibration_error,
    per_class_scores,
    polarity_accuracy,
)

# Class 3 never occurs in the truth, yet the model predicts it once. The old macro F1 averaged
# over the three classes present in the truth only: (1 + 0.5 + 2/3) / 3 = 0.722; scikit-learn
# over the whole taxonomy: (1 + 0.5 + 2/3 + 0) / 4 = 0.542.
ABSENT_TRUE = np.array([0, 0, 1, 1, 2, 2])
ABSENT_PRED = np.array([0, 0, 1, 3, 2, 1])

# Imbalanced: 10 clips of class 0, 3 of class 1, 1 of class 2, none of class 3 (K = 4);
# the model leans towards the majority class.
IMBALANCED_TRUE = np.array([0] * 10 + [1] * 3 + [2])
IMBALANCED_PRED = np.array([0] * 9 + [1] + [0, 0, 1] + [0])


def sklearn_reference(y_true, y_pred, k: int) -> dict[str, float]:
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        uar = skm.balanced_accuracy_score(y_true, y_pred)
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "war": skm.recall_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
        "uar": uar,
        "weighted_f1": skm.f1_score(
            y_true, y_pred, labels=labels, average="weighted", zero_division=0
        ),
        "macro_f1": skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
    }


def test_confusion_and_per_class_scores_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = per_class_scores(y_true, y_pred, 3)
    assert scores["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert scores["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert scores["accuracy"] == pytest.approx([2 / 3, 0.5, 1.0])  # per-class accuracy = recall
    assert scores["f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert scores["support"].tolist() == [3, 2, 1]


def test_macro_f1_counts_every_class_of_the_taxonomy():
    summary = classification_summary(ABSENT_TRUE, ABSENT_PRED, 4)
    assert summary["macro_f1"] == pytest.approx((1 + 0.5 + 2 / 3 + 0) / 4)  # 0.542
    assert summary["macro_f1"] == pytest.approx(0.5417, abs=1e-4)
    f1 = per_class_scores(ABSENT_TRUE, ABSENT_PRED, 4)["f1"]
    present_only = f1[:3].mean()  # what the hand-written version reported
    assert present_only == pytest.approx(0.7222, abs=1e-4)
    assert summary["macro_f1"] != pytest.approx(present_only)
    assert summary["macro_f1"] == pytest.approx(
        skm.f1_score(ABSENT_TRUE, ABSENT_PRED, labels=range(4), average="macro", zero_division=0)
    )


@pytest.mark.parametrize(
    ("y_true", "y_pred", "k"),
    [
        (ABSENT_TRUE, ABSENT_PRED, 4),
        (ABSENT_TRUE, ABSENT_PRED, 6),  # two more classes, neither true nor predicted
        (IMBALANCED_TRUE, IMBALANCED_PRED, 4),
        (np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), 4),
    ],
    ids=["absent-predicted", "absent-unseen", "imbalanced", "perfect"],
)
def test_every_summary_metric_matches_scikit_learn(y_true, y_pred, k):
    summary = classification_summary(y_true, y_pred, k)
    assert set(summary) == set(SUMMARY_KEYS)
    assert summary == pytest.approx(sklearn_reference(y_true, y_pred, k))
    assert summary["war"] == pytest.approx(summary["accuracy"])  # WAR is top-1 accuracy
    expected = skm.precision_recall_fscore_support(y_true, y_pred, labels=range(k), zero_division=0)
    scores = per_class_scores(y_true, y_pred, k)
    for key, values in zip(("precision", "recall", "f1", "support"), expected, strict=True):
        assert scores[key] == pytest.approx(values)
    assert confusion_matrix(y_true, y_pred, k).tolist() == (
        skm.confusion_matrix(y_true, y_pred, labels=range(k)).tolist()
    )


def test_imbalanced_confusion_by_hand():
    matrix = confusion_matrix(IMBALANCED_TRUE, IMBALANCED_PRED, 4)
    assert matrix.tolist() == [[9, 1, 0, 0], [2, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    summary = classification_summary(IMBALANCED_TRUE, IMBALANCED_PRED, 4)
    # Accuracy flatters the majority class; UAR does not.
    assert summary["accuracy"] == pytest.approx(10 / 14)
    assert summary["uar"] == pytest.approx((9 / 10 + 1 / 3 + 0) / 3)
    # F1: class 0 = 2·(9/12)(9/10)/(9/12 + 9/10) = 18/22, class 1 = 2·(1/2)(1/3)/(1/2 + 1/3) = 0.4
    assert summary["macro_f1"] == pytest.approx((18 / 22 + 0.4 + 0 + 0) / 4)
    assert summary["weighted_f1"] == pytest.approx((10 * 18 / 22 + 3 * 0.4) / 14)


def test_uar_leaves_out_classes_absent_from_the_truth():
    summary = classification_summary(ABSENT_TRUE, ABSENT_PRED, 4)
    assert summary["uar"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_empty_inputs_give_zeros_not_errors():
    assert classification_summary([], [], 3) == dict.fromkeys(SUMMARY_KEYS, 0.0)
    assert polarity_accuracy([], [], ["a"]) == 0.0
    assert accuracy_or_none([], []) is None
    assert accuracy_or_none([1, 2], [1, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_classes"):
        classification_summary([0], [0], 0)


def test_polarity_accuracy_counts_same_polarity_mistakes_as_right():
    polarity = ["negative", "negative", "positive"]
    assert polarity_accuracy([0, 1, 2, 2], [1, 0, 2, 0], polarity) == pytest.approx(0.75)
    mapped = np.asarray(polarity)
    assert polarity_accuracy(IMBALANCED_TRUE % 3, IMBALANCED_PRED % 3, polarity) == pytest.approx(
        skm.accuracy_score(mapped[IMBALANCED_TRUE % 3], mapped[IMBALANCED_PRED % 3])
    )


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    calibrated = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(calibrated, [0, 1]) == pytest.approx(0.0)
    overconfident = np.array([[0.99, 0.01]] * 4)
    assert expected_calibration_error(overconfident, [0, 1, 1, 1]) == pytest.approx(0.99 - 0.25)


def test_ece_bins_agree_with_scikit_learn_reliability_curve():
    """The per-bin means match ``calibration_curve`` on (correct, confidence)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 4)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=400)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(int)
    edges = np.linspace(0, 1, 11)
    counts, _ = np.histogram(confidence, bins=edges)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=10)
    weights = counts[counts > 0] / len(labels)
    expected = float((weights * np.abs(accuracy - mean_confidence)).sum())
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(
        expected, abs=1e-9
    )
