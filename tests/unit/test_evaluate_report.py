"""The evaluate stage's metrics file, the report rendered from it, and `dvc metrics show`.

A real tiny model (the shared small corpus, 2 epochs) is evaluated on its real test split;
the metrics file is then checked against scikit-learn on the predictions evaluate itself
wrote, the report is rendered from that file and the corpus's real annotation_stats.json,
and real DVC reads the file in a scratch repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from emotions.config import CalibrationConfig
from emotions.evaluation.calibration import fit_temperature, nll
from emotions.evaluation.metrics import expected_calibration_error
from emotions.layout import detail_of
from emotions.stages.evaluate import HEADLINE_KEYS, accuracy_by_agreement, evaluate_run
from emotions.stages.report import read_curves, render_curves, results_table

CONTRACT = {"accuracy", "weighted_f1", "macro_f1", "polarity_accuracy", "ece", "n_test"}


@pytest.fixture(scope="module")
def evaluated(corpus, model_dir, tmp_path_factory) -> dict:
    from smallcorpus import RUN, keep_torch_threads

    out = tmp_path_factory.mktemp("evaluated")
    params = corpus.params()
    with keep_torch_threads():
        metrics = evaluate_run(
            params,
            RUN,
            paths=corpus.paths(model_dir),
            metrics_path=out / "metrics" / "emotions" / "full.json",
            plots_dir=out / "plots",
            eval_dir=out / "eval",
        )
    return {"params": params, "out": out, "metrics": metrics, "corpus": corpus}


def test_accuracy_by_agreement_includes_the_threshold_and_skips_clips_without_votes():
    agreement = pd.Series([0.9, 0.8, 0.5, np.nan, 0.4])
    labels = np.array([0, 1, 2, 3, 4])
    predicted = np.array([0, 0, 2, 3, 0])
    groups = accuracy_by_agreement(agreement, labels, predicted, 0.8)
    assert groups == {
        "threshold": 0.8,
        "high": {"n": 2, "accuracy": 0.5},  # 0.9 right, 0.8 (at the threshold) wrong
        "low": {"n": 2, "accuracy": 0.5},
        "n_without_votes": 1,
    }
    none = accuracy_by_agreement(pd.Series([np.nan]), labels[:1], predicted[:1], 0.8)
    assert none["high"] == {"n": 0, "accuracy": None} and none["n_without_votes"] == 1


@pytest.mark.slow
def test_metrics_file_carries_the_fields_metrics_and_matches_scikit_learn(evaluated):
    out, params = evaluated["out"], evaluated["params"]
    headline_file = out / "metrics" / "emotions" / "full.json"
    written = json.loads(detail_of(headline_file).read_text(encoding="utf-8"))
    assert written == evaluated["metrics"]
    # The headline file DVC shows: a few scalars, the same values.
    headline = json.loads(headline_file.read_text(encoding="utf-8"))
    assert set(headline) == set(HEADLINE_KEYS)
    assert headline == {key: written[key] for key in HEADLINE_KEYS}
    assert CONTRACT | {"uar", "war", "per_class", "by_agreement"} <= written.keys()
    classes = list(params.taxonomy_for("emotions"))
    assert set(written["per_class"]) == set(classes)  # every class, even one absent from test
    assert written["confusion_matrix"]["classes"] == classes
    for scores in written["per_class"].values():
        assert set(scores) == {"accuracy", "precision", "recall", "f1", "support"}
        assert scores["accuracy"] == scores["recall"]

    predictions = pd.read_parquet(out / "eval" / "predictions.parquet")
    index = {name: i for i, name in enumerate(classes)}
    y_true = predictions["label"].map(index).to_numpy()
    y_pred = predictions["predicted"].map(index).to_numpy()
    labels = list(range(len(classes)))
    assert written["n_test"] == len(predictions)
    assert written["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert written["war"] == pytest.approx(written["accuracy"])
    assert written["uar"] == pytest.approx(
        skm.recall_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro")
    )
    assert written["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )
    assert written["weighted_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    )
    assert written["confusion_matrix"]["counts"] == (
        skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    )
    support = [written["per_class"][name]["support"] for name in classes]
    assert support == np.bincount(y_true, minlength=len(classes)).tolist()


@pytest.mark.slow
def test_accuracy_by_agreement_splits_voted_test_clips_at_the_threshold(evaluated):
    out, corpus, params = evaluated["out"], evaluated["corpus"], evaluated["params"]
    groups = evaluated["metrics"]["by_agreement"]
    threshold = params.evaluate.high_agreement
    assert groups["threshold"] == threshold

    predictions = pd.read_parquet(out / "eval" / "predictions.parquet")
    split = pd.read_parquet(corpus.artifacts / "emotions" / "variants" / "full" / "split.parquet")
    manifest = pd.read_parquet(corpus.artifacts / "emotions" / "manifest.parquet")
    clips = predictions.merge(split[["clip_id", "agreement"]], on="clip_id").merge(
        manifest[["clip_id", "n_votes"]], on="clip_id"
    )
    assert len(clips) == len(predictions)
    voted = clips[clips["n_votes"].fillna(0) >= 2]
    assert len(voted) > 0  # the synthetic corpus comes with annotators' votes
    high = voted[voted["agreement"] >= threshold]
    low = voted[voted["agreement"] < threshold]
    assert groups["high"]["n"] == len(high) and groups["low"]["n"] == len(low)
    assert groups["n_without_votes"] == len(clips) - len(voted)
    for name, group in (("high", high), ("low", low)):
        expected = (group["label"] == group["predicted"]).mean() if len(group) else None
        assert groups[name]["accuracy"] == pytest.approx(expected)


@pytest.mark.slow
def test_report_renders_the_new_columns_and_the_annotation_section(evaluated):
    out, corpus, params = evaluated["out"], evaluated["corpus"], evaluated["params"]
    metrics = evaluated["metrics"]
    # An ablation file from before UAR existed still renders (its UAR cell is "–").
    old_row = {k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1", "polarity_accuracy")}
    rows = [
        {"modality": "both", "fusion": "lgfm", "loss": "epce", **old_row, "uar": metrics["uar"]},
        {"modality": "video", "fusion": "lgfm", "loss": "ce", **old_row},
    ]
    (out / "metrics" / "emotions" / "ablation.json").write_text(json.dumps(rows))
    text = results_table(params, out / "metrics", corpus.artifacts)

    header = next(line for line in text.splitlines() if line.startswith("| dataset | variant"))
    for title in ("accuracy", "UAR", "WAR", "weighted F1", "macro F1", "polarity acc."):
        assert f"| {title} |" in header
    row = next(line for line in text.splitlines() if line.startswith("| emotions | full |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:9] == [
        f"{metrics[k]:.3f}"
        for k in ("accuracy", "uar", "war", "weighted_f1", "macro_f1", "polarity_accuracy")
    ]
    assert cells[-1] == str(metrics["n_test"])
    per_class = text[text.index("## Per class: emotions / full") :]
    per_class = per_class[: per_class.index("Confusion matrix")].splitlines()
    class_rows = [line for line in per_class if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in class_rows] == list(params.taxonomy_for("emotions"))
    for row_text in class_rows:
        name, support, accuracy = (c.strip() for c in row_text.strip("|").split("|")[:3])
        assert support == str(int(metrics["per_class"][name]["support"]))
        assert accuracy == f"{metrics['per_class'][name]['recall']:.3f}"

    groups = metrics["by_agreement"]
    assert "## Accuracy on high- and low-agreement test clips" in text
    assert f"| emotions | full | ≥ {groups['threshold']:g} |" in text

    stats = json.loads(
        (corpus.artifacts / "emotions" / "annotation_stats.json").read_text(encoding="utf-8")
    )
    assert "## Annotations: emotions" in text
    assert stats["per_stage"], "the synthetic corpus has annotator votes"
    for stage, summary in stats["per_stage"].items():
        kappa = summary["fleiss_kappa"]["kappa"]
        shown = "–" if kappa is None else f"{kappa:.3f}"
        expected = (
            f"| {stage} | {summary['n_clips']} | {summary['n_votes']} | "
            f"{summary['mean_agreement']:.3f} | {shown} |"
        )
        assert expected in text
    assert "| agreement stage 1 | κ stage 1 |" in text
    first = stats["per_stage"]["1"]
    for name, n in stats["label_distribution"].items():
        kappa = first["fleiss_kappa"]["per_class"].get(name)
        expected = (
            f"| {name} | {n} | {stats['mean_agreement_per_class'][name]:.3f} | "
            f"{first['mean_agreement_per_class'][name]:.3f} | "
            f"{'–' if kappa is None else f'{kappa:.3f}'} |"
        )
        assert expected in text, expected
    ablation = text[text.index("## Ablation on emotions") :]
    assert f"| both | lgfm | epce | {metrics['accuracy']:.3f} | {metrics['uar']:.3f} |" in ablation
    assert f"| video | lgfm | ce | {metrics['accuracy']:.3f} | – |" in ablation


@pytest.mark.slow
def test_dvc_metrics_show_is_the_headline_and_the_detail_is_one_target_away(evaluated, tmp_path):
    repo = tmp_path / "repo"
    source = evaluated["out"] / "metrics" / "emotions" / "full.json"
    for path in (source, detail_of(source)):
        copy = repo / path.relative_to(evaluated["out"])
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/emotions/full.json\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=repo, env=env, check=True, timeout=120)

    def show(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["dvc", "metrics", "show", *args],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    data = json.loads(show("--json").stdout)
    (values,) = [v["data"]["metrics/emotions/full.json"]["data"] for v in data.values()]
    metrics = evaluated["metrics"]
    assert set(values) == set(HEADLINE_KEYS)
    for key in HEADLINE_KEYS:
        assert values[key] == pytest.approx(metrics[key]), key
    table = show().stdout
    assert "uar" in table and "per_class" not in table
    assert max(len(line) for line in table.splitlines()) < 150  # one readable line per file
    # The detail, as the README shows it: the file as a target.
    first = next(iter(metrics["per_class"]))
    detail = show("metrics/emotions/full/detail.json").stdout
    assert f"per_class.{first}.f1" in detail and "by_agreement.high.n" in detail


def test_training_curves_render_as_one_png_per_run(tmp_path):
    """DVCLive's .tsv curves (nested metric names too) become one image: `dvc plots show`
    embeds it without vega from a CDN."""
    curves = tmp_path / "curves"
    (curves / "train").mkdir(parents=True)
    (curves / "val_uar.tsv").write_text("step\tval_uar\n0\t0.2\n1\t0.5\n", encoding="utf-8")
    (curves / "train" / "train_loss.tsv").write_text(
        "step\ttrain_loss\n0\t2.0\n1\t1.0\n2\t0.5\n", encoding="utf-8"
    )
    read = read_curves(curves)
    assert read == {
        "train/train_loss": [(0, 2.0), (1, 1.0), (2, 0.5)],
        "val_uar": [(0, 0.2), (1, 0.5)],
    }
    out = render_curves(read, tmp_path / "png" / "full.png", "full")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Calibration: the `calibrate` stage's validation fit, and what evaluate reports with it.


def _logits_and_labels(scale: float, n: int = 400, k: int = 6, seed: int = 0):
    """Labels drawn from softmax(z): z is calibrated by construction, ``scale * z`` is not,
    and the temperature that undoes it is ``scale``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, k))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return scale * z, labels


def test_the_temperature_fit_recovers_a_known_overconfidence():
    logits, labels = _logits_and_labels(scale=3.0)
    fit = fit_temperature(logits, labels, CalibrationConfig())
    assert fit["status"] == "fitted"
    assert fit["temperature"] == pytest.approx(3.0, rel=0.2)
    assert fit["val_nll"] < fit["val_nll_raw"]
    assert fit["val_nll"] == pytest.approx(nll(logits, labels, fit["temperature"]))


def test_degenerate_fits_fall_back_to_t_1():
    # A split the model separates perfectly: NLL falls all the way to T -> 0 (what put the
    # old unbounded fit on its 0.05 floor). The optimum lands on the bound and is rejected.
    labels = np.repeat(np.arange(6), 10)
    separable = np.eye(6)[labels] * 4.0
    fit = fit_temperature(separable, labels, CalibrationConfig())
    assert fit["temperature"] == 1.0 and fit["status"].startswith("optimum on the search bound")
    assert fit["optimum"] == pytest.approx(0.25, rel=0.02)
    # Too few clips: not fitted at all.
    logits, few = _logits_and_labels(scale=3.0, n=8)
    fit = fit_temperature(logits, few, CalibrationConfig(min_clips=20))
    assert fit["temperature"] == 1.0 and fit["status"].startswith("too few validation clips")
    # Already calibrated logits: a T that gains less than min_gain is not kept.
    logits, labels = _logits_and_labels(scale=1.0)
    fit = fit_temperature(logits, labels, CalibrationConfig(min_gain=0.01))
    assert fit["temperature"] == 1.0 and fit["status"] == "no validation NLL gain over T = 1"
    with pytest.raises(ValueError, match="bounds"):
        CalibrationConfig(bounds=(1.5, 4.0))


@pytest.fixture(scope="module")
def calibrated(corpus, model_dir, tmp_path_factory):
    from calibrated import calibrate_and_evaluate

    return calibrate_and_evaluate(corpus, model_dir, tmp_path_factory.mktemp("calibrated"))


@pytest.mark.slow
def test_the_temperature_comes_from_validation_never_from_test(
    calibrated, corpus, model_dir, tmp_path
):
    from smallcorpus import RUN, keep_torch_threads

    from emotions.layout import RunPaths
    from emotions.model_folder import checkpoint_sha256, read_calibration
    from emotions.stages.calibrate import calibrate_run

    record = read_calibration(calibrated.temperature_file, model_dir / "best.pt")
    assert record == calibrated.record
    assert record["split"] == "val"
    assert record["checkpoint_sha256"] == checkpoint_sha256(model_dir / "best.pt")
    paths = corpus.paths(model_dir)
    split = pd.read_parquet(paths.split)
    val_ids = set(split.loc[split["split"] == "val", "clip_id"].astype(str))
    test_ids = set(split.loc[split["split"] == "test", "clip_id"].astype(str))
    assert set(record["clip_ids"]) == val_ids and not val_ids & test_ids
    assert record["n_val"] == len(val_ids)

    # Scramble the test labels and drop half the test clips: the temperature cannot move.
    scrambled = split.copy()
    test_rows = scrambled.index[scrambled["split"] == "test"]
    scrambled.loc[test_rows, "label"] = np.roll(scrambled.loc[test_rows, "label"].to_numpy(), 1)
    scrambled = scrambled.drop(test_rows[: len(test_rows) // 2])
    scrambled.to_parquet(tmp_path / "split.parquet", index=False)
    other = RunPaths(cache=paths.cache, split=tmp_path / "split.parquet", model_dir=model_dir)
    with keep_torch_threads():
        again = calibrate_run(calibrated.params, RUN, paths=other, out=tmp_path / "t.json")
    assert again["temperature"] == record["temperature"]
    assert again["clip_ids"] == record["clip_ids"]


@pytest.mark.slow
def test_evaluate_reports_ece_and_nll_before_and_after_the_temperature(calibrated):
    metrics, record = calibrated.metrics, calibrated.record
    temperature = metrics["temperature"]
    assert temperature == record["temperature"]
    assert record["status"] == "fitted" and temperature != 1.0  # a real fit on 6 val clips
    assert metrics["calibration"]["status"] == "fitted"
    predictions = pd.read_parquet(calibrated.predictions)
    classes = list(metrics["confusion_matrix"]["classes"])
    index = {name: i for i, name in enumerate(classes)}
    probs = predictions[[f"p_{name}" for name in classes]].to_numpy()
    y_true = predictions["label"].map(index).to_numpy()
    labels = list(range(len(classes)))
    assert metrics["nll"] == pytest.approx(skm.log_loss(y_true, probs, labels=labels))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, y_true, 15))
    # Undo the temperature on the written probabilities: the raw scores come back.
    raw = np.exp(np.log(probs) * temperature)
    raw /= raw.sum(axis=1, keepdims=True)
    assert metrics["nll_uncalibrated"] == pytest.approx(skm.log_loss(y_true, raw, labels=labels))
    assert metrics["ece_uncalibrated"] == pytest.approx(expected_calibration_error(raw, y_true, 15))
    assert metrics["nll"] != pytest.approx(metrics["nll_uncalibrated"])
