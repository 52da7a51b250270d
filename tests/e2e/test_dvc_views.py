"""DVC the way its users work: metrics, plots and experiments read through DVC's own commands.

A scratch git + DVC repository (tests/support/flowrepo.py: our dvc.yaml, code, .gitignore and a small
generated corpus, one run, one epoch, one ablation cell) runs `dvc repro`, commits what git
tracks (dvc.lock, metrics/, plots/, reports/), then runs `dvc exp run -S train.lr=...`; the
test reads the results back through `dvc metrics show`, `dvc plots show` and `dvc exp show`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flowrepo import real_repo, run

from flows.commit_results import commit_results

LR = 0.0005


def _find(tree: Any, predicate) -> list[dict[str, Any]]:
    """Every dict in `tree` (nested lists/dicts) that satisfies `predicate`."""
    found = []
    if isinstance(tree, dict):
        if predicate(tree):
            found.append(tree)
        for value in tree.values():
            found += _find(value, predicate)
    elif isinstance(tree, list):
        for value in tree:
            found += _find(value, predicate)
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = real_repo(tmp_path_factory.mktemp("views") / "repo")
    run(["dvc", "repro"], repo, timeout=900)
    commit_results(repo, "baseline run")  # what `make demo` commits: the outputs git tracks
    return repo


@pytest.mark.slow
def test_git_tracks_the_lock_metrics_plots_and_reports(repo: Path):
    tracked = set(run(["git", "ls-files"], repo).stdout.splitlines())
    assert "dvc.lock" in tracked
    assert {
        "metrics/emotions/full.json",
        "metrics/emotions/full/train.json",
        "metrics/emotions/ablation.json",
        "metrics/emotions/ablation_cells.json",
        "plots/emotions/full/confusion.csv",
        "plots/train/emotions/full/val_weighted_f1.tsv",
        "reports/results.md",
    } <= tracked
    assert not any(path.startswith("artifacts/") for path in tracked)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


@pytest.mark.slow
def test_metrics_show_lists_the_ablation_cells(repo: Path):
    rows = json.loads((repo / "metrics/emotions/ablation.json").read_text(encoding="utf-8"))
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = _find(shown, lambda d: "metrics/emotions/ablation_cells.json" in d)[0]
    cells = files["metrics/emotions/ablation_cells.json"]["data"]
    assert list(cells) == [f"{r['modality']}/{r['fusion']}/{r['loss']}" for r in rows]
    assert list(cells) == ["video/lgfm/soft"]
    assert cells["video/lgfm/soft"]["accuracy"] == rows[0]["accuracy"]
    assert "modality" not in cells["video/lgfm/soft"]


@pytest.mark.slow
def test_plots_show_has_the_training_curves_and_the_confusion_matrix(repo: Path):
    live = repo / "artifacts/models/emotions/full/dvclive/plots/metrics/val_weighted_f1.tsv"
    copied = repo / "plots/train/emotions/full/val_weighted_f1.tsv"
    assert copied.read_text(encoding="utf-8") == live.read_text(encoding="utf-8")
    shown = json.loads(run(["dvc", "plots", "show", "--json", "--split"], repo).stdout)["data"]
    curve = shown["plots/train/emotions/full/val_weighted_f1.tsv"][0]
    assert curve["type"] == "vega"
    anchors = curve["anchor_definitions"]
    assert anchors["<DVC_METRIC_X_LABEL>"] == "step"
    points = anchors["<DVC_METRIC_DATA>"]
    assert [float(p["val_weighted_f1"]) for p in points] == [
        float(line.split("\t")[1]) for line in live.read_text().splitlines()[1:]
    ]
    assert "plots/train/emotions/full/train/train_loss.tsv" in shown
    confusion = shown["plots/emotions/full/confusion.csv"][0]
    points = confusion["anchor_definitions"]["<DVC_METRIC_DATA>"]
    assert {"actual", "predicted"} <= points[0].keys()
    # The HTML a user opens: every curve in one page (git-ignored dvc_plots/).
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert "val_weighted_f1" in html and "train_loss" in html


@pytest.mark.slow
def test_exp_run_with_a_changed_param_shows_its_metrics_in_exp_show(repo: Path):
    run(
        ["dvc", "exp", "run", "-S", f"train.lr={LR}", "-n", "lr-small", "evaluate@emotions-full"],
        repo,
        timeout=900,
    )
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exp = _find(shown, lambda d: d.get("name") == "lr-small" and "data" in d)[0]["data"]
    assert exp["params"]["params.yaml"]["data"]["train"]["lr"] == LR
    metrics = exp["metrics"]
    evaluated = json.loads((repo / "metrics/emotions/full.json").read_text(encoding="utf-8"))
    assert metrics["metrics/emotions/full.json"]["data"]["accuracy"] == evaluated["accuracy"]
    trained = metrics["metrics/emotions/full/train.json"]["data"]
    before = json.loads(run(["git", "show", "HEAD:metrics/emotions/full/train.json"], repo).stdout)
    # The schedule scales with the base lr: the last logged lr moved by the same factor.
    assert trained["lr"] == pytest.approx(before["lr"] * LR / 0.001, rel=1e-6)
    assert "val_weighted_f1" in trained
    # The baseline commit's row is there too, with the old lr: what `dvc exp diff` compares.
    baseline = _find(shown, lambda d: d.get("rev") == "workspace" and "data" in d)
    assert baseline and "metrics" in baseline[0]["data"]
