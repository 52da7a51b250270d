"""Metric formulas checked against hand-computed values."""

import numpy as np
import pytest

from emotions.metrics import (
    classification_summary,
    confusion_matrix,
    expected_calibration_error,
    per_class_scores,
    polarity_accuracy,
)


def test_confusion_and_per_class_scores_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = per_class_scores(matrix)
    assert scores["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert scores["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert scores["f1"] == pytest.approx([0.8, 0.5, 2 / 3])


def test_summary_weighted_and_macro():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    summary = classification_summary(y_true, y_pred, 4)  # class 3 absent: not in macro
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)
    assert summary["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_polarity_accuracy_counts_same_polarity_mistakes_as_right():
    polarity = ["negative", "negative", "positive"]
    assert polarity_accuracy([0, 1, 2, 2], [1, 0, 2, 0], polarity) == pytest.approx(0.75)


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    calibrated = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(calibrated, [0, 1]) == pytest.approx(0.0)
    overconfident = np.array([[0.99, 0.01]] * 4)
    assert expected_calibration_error(overconfident, [0, 1, 1, 1]) == pytest.approx(0.99 - 0.25)
