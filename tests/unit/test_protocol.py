"""evaluate.protocol: authors — both numbers a reader needs, side by side and clearly named.

A real tiny model trains on the shared small corpus with the authors' protocol on (the test
split scored every epoch on random views) and the authors' spatial pipeline; evaluate then
reports the val-selected test score and the authors' protocol score, and the report shows both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from smallcorpus import RUN, SmallCorpus, keep_torch_threads, shared_corpus

from emotions.evaluation.metrics import AUTHORS_TEST, authors_protocol
from emotions.layout import TRAIN_SUMMARY
from emotions.stages.evaluate import evaluate_run
from emotions.stages.report import results_table
from emotions.training.dataset import build_dataset
from emotions.training.trainer import train_run


def test_the_authors_figure_is_the_first_best_epoch_on_test() -> None:
    history = [
        {"epoch": 1, f"{AUTHORS_TEST}accuracy": 0.4, f"{AUTHORS_TEST}weighted_f1": 0.3},
        {"epoch": 2, f"{AUTHORS_TEST}accuracy": 0.7, f"{AUTHORS_TEST}weighted_f1": 0.6},
        {"epoch": 3, f"{AUTHORS_TEST}accuracy": 0.7, f"{AUTHORS_TEST}weighted_f1": 0.9},
    ]
    assert authors_protocol(history) == {
        "epoch": 2,  # their `acc > best_acc` keeps the first of equal epochs
        "epochs_scored": 3,
        "accuracy": 0.7,
        "weighted_f1": 0.6,
    }
    assert authors_protocol([{"epoch": 1, "val_accuracy": 0.5}]) is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SmallCorpus:
    return shared_corpus(tmp_path_factory)


def test_random_views_change_with_the_epoch_and_are_not_augmented(corpus: SmallCorpus) -> None:
    params = corpus.params({"evaluate": {"protocol": "authors"}})
    paths = corpus.paths(corpus.base / "unused")
    views = build_dataset(params, RUN, paths, "test", train=False, random_views=True)
    assert views.random_views and not views.train and views.spec_augment is None
    crop, size = views.crop, views.cached_size
    first = [views[(0, i)]["video"] for i in range(len(views))]
    again = [views[(0, i)]["video"] for i in range(len(views))]
    later = [views[(1, i)]["video"] for i in range(len(views))]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # (seed, epoch, clip)
    assert any(not torch.equal(a, b) for a, b in zip(first, later, strict=True))
    # Each view is an unflipped crop of the cached square: a random position, no augmentation.
    for i, view in enumerate(first):
        cached = torch.from_numpy(np.array(views._open().frames[views.rows[i]]))
        cached = cached.permute(0, 3, 1, 2)
        crops = [
            cached[..., top : top + crop, left : left + crop]
            for top in range(size - crop + 1)
            for left in range(size - crop + 1)
        ]
        assert any(torch.equal(view, c) for c in crops)


@pytest.mark.slow
def test_both_scores_side_by_side(corpus: SmallCorpus, tmp_path) -> None:
    params = corpus.params({"evaluate": {"protocol": "authors"}}, epochs=2, spatial="authors")
    model_dir = tmp_path / "model"
    with keep_torch_threads():
        summary = train_run(params, RUN, paths=corpus.paths(model_dir), progress=False)
        metrics = evaluate_run(
            params,
            RUN,
            paths=corpus.paths(model_dir),
            metrics_path=tmp_path / "metrics" / "emotions" / "full.json",
            plots_dir=tmp_path / "plots",
            eval_dir=tmp_path / "eval",
        )
    history = json.loads((model_dir / TRAIN_SUMMARY).read_text(encoding="utf-8"))["history"]
    scored = [record[f"{AUTHORS_TEST}accuracy"] for record in history]
    assert len(scored) == 2 == summary["epochs"]
    theirs, ours = metrics["authors_protocol"], metrics["val_selected"]
    assert theirs["accuracy"] == max(scored)
    assert history[theirs["epoch"] - 1][f"{AUTHORS_TEST}accuracy"] == max(scored)
    assert (ours["accuracy"], ours["epoch"]) == (metrics["accuracy"], summary["best_epoch"])
    table = results_table(params, metrics_dir=tmp_path / "metrics", artifacts_dir=tmp_path)
    assert "## Val-selected test score and the authors' protocol score" in table
    section = table.split("## Val-selected test score and the authors' protocol score")[1]
    row = next(line for line in section.splitlines() if line.startswith("| emotions | full |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == f"{ours['accuracy']:.3f}" and cells[5] == f"{theirs['accuracy']:.3f}"
    assert cells[4] == str(ours["epoch"]) and cells[7] == str(theirs["epoch"])
