"""The `evaluate` stage: test-split metrics, calibration, plots and a drift reference.

The temperature comes from the `calibrate` stage (:mod:`emotions.stages.calibrate`, fitted on the
validation split only); ECE and NLL on test are reported before and after it, and the test
probabilities written here are the calibrated ones the Predictor (and so the service) returns.
The test predictions with their embeddings are kept as `predictions.parquet`, the reference the
drift monitor compares live traffic against.

`metrics/<dataset>/<variant>/detail.json` carries what the field reports
(`emotions.evaluation.metrics`): accuracy (= WAR), UAR, weighted and macro F1, per-class
accuracy/precision/recall/F1, polarity accuracy, ECE and NLL (raw and calibrated), the confusion
matrix, and the accuracy on high- against low-agreement test clips (`evaluate.high_agreement`),
where the labels come with votes. `metrics/<dataset>/<variant>.json` holds only the headline
scores (:data:`HEADLINE_KEYS`): it is the DVC `metrics:` file, so `dvc metrics show` and
`dvc exp show` stay a few columns per run wide while the detail is one command away.

With `evaluate.protocol: authors` it also carries, side by side, `val_selected` (the epoch
validation chose and its test scores: the same numbers as the top level) and
`authors_protocol` (the best epoch on test over the training history, scored on random views,
as the authors' main_final_delay.py reports it): the second is what compares with the paper's
tables, the first is the estimate to trust.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from emotions import model_folder
from emotions.atomic import atomic_write, atomic_write_json
from emotions.config import Params
from emotions.errors import StageError
from emotions.evaluation.calibration import fit_temperature
from emotions.evaluation.metrics import (
    SUMMARY_KEYS,
    accuracy_or_none,
    authors_protocol,
    classification_summary,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    per_class_scores,
    polarity_accuracy,
)
from emotions.layout import TRAIN_SUMMARY, Layout, RunPaths, detail_of
from emotions.model_folder import CalibrationError, read_calibration
from emotions.training.dataset import build_dataset
from emotions.training.predict import predict_views
from emotions.training.runtime import resolve_runtime


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


PER_CLASS_KEYS = ("accuracy", "precision", "recall", "f1", "support")
# The headline file's keys: every `flow.promote_metric` and what the served model's metadata
# shows (emotions.serve.model_store.METRIC_KEYS) are among them.
HEADLINE_KEYS = ("accuracy", "uar", "weighted_f1", "macro_f1", "polarity_accuracy", "ece", "n_test")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few scores DVC shows per run (the authors' protocol accuracy too, where measured)."""
    out = {key: metrics[key] for key in HEADLINE_KEYS if key in metrics}
    theirs = metrics.get("authors_protocol")
    if theirs:
        out["authors_protocol_accuracy"] = theirs["accuracy"]
    return out


def clip_agreement(paths: RunPaths, clip_ids: Sequence[str]) -> pd.Series:
    """Annotator agreement of each test clip (NaN where its label came without votes).

    The agreement is in the split; whether votes stand behind it is in the dataset's manifest
    (``n_votes``): a single-label source's agreement of 1.0 says nothing about annotators, so
    it must not land in the high-agreement group.
    """
    split = pd.read_parquet(paths.split, columns=["clip_id", "agreement"]).set_index("clip_id")
    agreement = split["agreement"].reindex(list(clip_ids)).astype(float)
    manifest = paths.manifest
    voted = pd.Series(False, index=agreement.index)
    if manifest.is_file():
        n_votes = pd.read_parquet(manifest, columns=["clip_id", "n_votes"]).set_index("clip_id")
        counts = pd.to_numeric(n_votes["n_votes"], errors="coerce").reindex(agreement.index)
        voted = (counts >= 2).fillna(False).astype(bool)
    return agreement.where(voted)


def accuracy_by_agreement(
    agreement: pd.Series, labels: np.ndarray, predicted: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Top-1 accuracy on high- (agreement ≥ threshold) and low-agreement test clips.

    Clips without votes are in neither group and counted apart; an empty group's accuracy
    is None (omitted by `dvc metrics show`, printed as "–" by the report).
    """
    values = agreement.to_numpy(dtype=float)
    high = values >= threshold
    low = values < threshold  # NaN (no votes) is in neither
    return {
        "threshold": float(threshold),
        "high": {"n": int(high.sum()), "accuracy": accuracy_or_none(labels[high], predicted[high])},
        "low": {"n": int(low.sum()), "accuracy": accuracy_or_none(labels[low], predicted[low])},
        "n_without_votes": int(np.isnan(values).sum()),
    }


def evaluate_run(
    params: Params,
    run: str,
    *,
    paths: RunPaths | None = None,
    metrics_path: Path | None = None,
    plots_dir: Path | None = None,
    eval_dir: Path | None = None,
    calibration: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the best checkpoint of a run on its test split and write every output.

    ``metrics_path`` gets the headline scores and its :func:`~emotions.layout.detail_of` the
    full record, which is also what this returns.

    ``calibration`` is the run's ``temperature.json`` (default: where `emotions calibrate`
    writes it). Without one, the same validation fit runs here in memory, so a bare call
    reports what the stage would have stored.
    """
    spec = params.run(run)
    paths = paths or RunPaths.for_run(params, run)
    layout = Layout()
    metrics_path = metrics_path or layout.metrics(spec.dataset, spec.variant)
    plots_dir = plots_dir or layout.plots_dir(spec.dataset, spec.variant)
    eval_dir = eval_dir or layout.eval_dir(spec.dataset, spec.variant)
    runtime = resolve_runtime("cpu" if params.train.device == "cpu" else "auto", "fp32")
    model, meta = model_folder.load(paths.model_dir)
    model.to(runtime.device)
    classes, polarity = meta["classes"], meta["polarity"]
    batch = params.train.batch_size

    def run_split(split: str) -> dict[str, np.ndarray]:
        dataset = build_dataset(params, run, paths, split, train=False)
        views = params.evaluate.views
        return predict_views(model, dataset, views, runtime, batch_size=batch, desc=split)

    fit = _calibration(params, spec, paths, calibration, run_split)
    temperature = float(fit["temperature"])
    test = run_split("test")
    if len(test["labels"]) == 0:
        raise StageError(f"run {run}: the test split of {paths.split} is empty")
    raw_probs = softmax(test["logits"])
    probs = softmax(test["logits"], temperature)
    labels, predicted = test["labels"], probs.argmax(1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    per_class = per_class_scores(labels, predicted, len(classes))
    metrics: dict[str, Any] = {
        **classification_summary(labels, predicted, len(classes)),
        "polarity_accuracy": polarity_accuracy(labels, predicted, polarity),
        "ece": expected_calibration_error(probs, labels, params.evaluate.ece_bins),
        "ece_uncalibrated": expected_calibration_error(raw_probs, labels, params.evaluate.ece_bins),
        "nll": log_loss(labels, probs, labels=list(range(len(classes)))),
        "nll_uncalibrated": log_loss(labels, raw_probs, labels=list(range(len(classes)))),
        "temperature": temperature,
        # Why T is what it is: "fitted" on validation, or the reason it stayed 1.
        "calibration": {
            "status": str(fit["status"]),
            "n_val": int(fit["n_val"]),
            "val_nll_raw": float(fit["val_nll_raw"]),
            "val_nll": float(fit["val_nll"]),
        },
        "n_test": len(labels),
        "per_class": {
            name: {
                **{key: float(per_class[key][i]) for key in PER_CLASS_KEYS[:-1]},
                "support": int(per_class["support"][i]),
            }
            for i, name in enumerate(classes)
        },
        "by_agreement": accuracy_by_agreement(
            clip_agreement(paths, test["clip_ids"]),
            labels,
            predicted,
            params.evaluate.high_agreement,
        ),
        # Lists: `dvc metrics show` skips them (K² columns would drown the table); the report
        # and `dvc plots show` (confusion.csv) render the matrix.
        "confusion_matrix": {"classes": list(classes), "counts": matrix.tolist()},
    }
    if params.evaluate.protocol == "authors":
        metrics.update(protocol_scores(paths, metrics))
    atomic_write_json(metrics, detail_of(metrics_path))
    atomic_write_json(headline(metrics), metrics_path)
    _write_plots(plots_dir, matrix, classes, labels, predicted, test["clip_ids"])
    _write_predictions(eval_dir, test, probs, classes)
    return metrics


def protocol_scores(paths: RunPaths, metrics: dict[str, Any]) -> dict[str, Any]:
    """The two numbers a reader needs, clearly named: the val-selected test score (ours) and
    the authors' protocol score (best epoch on test, random views) from the training history."""
    summary_path = paths.model_dir / TRAIN_SUMMARY
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    theirs = authors_protocol(summary.get("history") or [])
    if theirs is None:
        raise StageError(
            f"evaluate.protocol 'authors' needs the per-epoch test scores training records "
            f"with it, and {summary_path} has none: train the run again with the protocol set"
        )
    ours = {"epoch": int(summary.get("best_epoch", -1))}
    ours.update({key: float(metrics[key]) for key in SUMMARY_KEYS})
    return {"val_selected": ours, "authors_protocol": theirs}


def _calibration(params: Params, spec, paths: RunPaths, given: Path | None, run_split):
    """The temperature record evaluate applies: ``given`` (which must match the checkpoint),
    else the calibrate stage's file when it was fitted for these weights, else the same
    validation fit in memory (a champion's model re-scored by flows/rescore.py has no file)."""
    checkpoint = model_folder.weights(paths.model_dir)
    if given is not None:
        return read_calibration(given, checkpoint)
    default = Layout().calibration(spec.dataset, spec.variant)
    if default.is_file():
        try:
            return read_calibration(default, checkpoint)
        except CalibrationError:
            pass
    val = run_split("val")
    return fit_temperature(val["logits"], val["labels"], params.evaluate.calibration)


def _write_plots(plots_dir: Path, matrix, classes, labels, predicted, clip_ids) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(
        {
            "clip_id": clip_ids,
            "actual": [classes[i] for i in labels],
            "predicted": [classes[i] for i in predicted],
        }
    )
    atomic_write(plots_dir / "confusion.csv", lambda tmp: rows.to_csv(tmp, index=False))
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axis, label="share of true class")
    axis.set_title("test confusion matrix")
    figure.tight_layout()
    atomic_write(
        plots_dir / "confusion.png", lambda tmp: figure.savefig(tmp, dpi=120, format="png")
    )
    plt.close(figure)


def _write_predictions(eval_dir: Path, test, probs, classes) -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    embeddings = test["embeddings"].astype(np.float32)
    columns: dict[str, Any] = {
        "clip_id": test["clip_ids"],
        "label": [classes[i] for i in test["labels"]],
        "predicted": [classes[i] for i in probs.argmax(1)],
        "confidence": probs.max(1),
        **{f"p_{name}": probs[:, i] for i, name in enumerate(classes)},
        "embedding_norm": np.linalg.norm(embeddings, axis=1),
        **{f"emb_{i}": embeddings[:, i] for i in range(embeddings.shape[1])},
    }
    frame = pd.DataFrame(columns)
    atomic_write(eval_dir / "predictions.parquet", lambda tmp: frame.to_parquet(tmp, index=False))


def main(params: Params, *, run: str) -> None:
    """`emotions evaluate`: :func:`evaluate_run` with the headline scores on one line."""
    metrics = evaluate_run(params, run)
    shown = ("accuracy", "uar", "weighted_f1", "macro_f1", "polarity_accuracy", "ece")
    scores = ", ".join(f"{key}={metrics[key]:.3f}" for key in shown)
    theirs = metrics.get("authors_protocol")
    if theirs:
        scores += (
            f"; authors' protocol (best epoch on test, random views): "
            f"accuracy={theirs['accuracy']:.3f} at epoch {theirs['epoch']}"
        )
    print(f"evaluate {run}: {scores}, n_test={metrics['n_test']}")
