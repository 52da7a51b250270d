"""Vote aggregation rules, Fleiss' kappa against the textbook example, and the stats summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from emotions.corpus.votes import (
    aggregate_votes,
    annotation_stats,
    category_kappas,
    clean_votes,
    first_stage_kappa,
    fleiss_kappa,
    per_stage_summary,
    stage_kappa,
)

# emotions6 of params.yaml, in its class order (the order breaks ties).
ORDER = ["Excitation", "Fear", "Neutral", "Relaxation", "Sadness", "Tension"]


def votes(*rows: tuple[str, int, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["clip_id", "stage", "annotator", "label"])


def ballot(clip: str, stage: int, *labels: str) -> list[tuple[str, int, str, str]]:
    return [(clip, stage, f"s{stage}a{i}", label) for i, label in enumerate(labels)]


def decide(rows) -> pd.DataFrame:
    clean, _ = clean_votes(votes(*rows))
    return aggregate_votes(clean, ORDER)


# Fleiss (1971) as reproduced on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters,
# 5 categories; P̄ = 0.378, P̄e = 0.213, κ = 0.210.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_matches_the_worked_example():
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_agrees_with_statsmodels():
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(1)
    for _ in range(5):
        table = rng.multinomial(5, [0.5, 0.2, 0.2, 0.1], size=30)
        assert fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table), abs=1e-12)


def test_category_kappas_by_hand_and_their_weighted_mean_is_the_kappa():
    # 2 clips × 3 raters: [a, a, a] and [a, b, c]. p = (4/6, 1/6, 1/6), P̄ = 0.5, P̄e = 0.5.
    table = np.array([[3, 0, 0], [1, 1, 1]])
    assert fleiss_kappa(table) == pytest.approx(0.0)
    # κ_a = 1 − 2 / (2·3·2 · 4/6 · 2/6) = 0.25; κ_b = κ_c = 1 − 2 / (12 · 1/6 · 5/6) = −0.2
    assert category_kappas(table) == pytest.approx([0.25, -0.2, -0.2])
    p = FLEISS_EXAMPLE.sum(axis=0) / FLEISS_EXAMPLE.sum()
    weights = p * (1 - p)
    assert (weights * category_kappas(FLEISS_EXAMPLE)).sum() / weights.sum() == pytest.approx(
        fleiss_kappa(FLEISS_EXAMPLE)
    )
    assert math.isnan(category_kappas(np.array([[2, 0], [2, 0]]))[1])  # nobody chose it


def test_per_stage_kappa_by_hand():
    rows = (
        ballot("c1", 1, "joy", "joy")
        + ballot("c2", 1, "joy", "fear")
        + ballot("c3", 1, "fear", "fear")
        + ballot("c2", 2, "joy", "joy", "joy")
        + ballot("c3", 2, "joy", "fear", "anger")
    )
    clean, _ = clean_votes(votes(*rows))
    # Stage 1: p = (1/2, 1/2), P̄e = 1/2, P_i = (1, 0, 1), P̄ = 2/3, κ = (2/3 − 1/2) / (1/2) = 1/3.
    first = stage_kappa(clean, 1, ORDER)
    assert first["kappa"] == pytest.approx(1 / 3, abs=1e-6)
    assert first["per_class"] == pytest.approx({"fear": 1 / 3, "joy": 1 / 3}, abs=1e-6)
    assert list(first["per_class"]) == ["fear", "joy"]  # taxonomy order
    assert first_stage_kappa(clean, ORDER) == first
    # Stage 2 is the [a, a, a] / [a, b, c] table above with joy as a.
    second = stage_kappa(clean, 2, ORDER)
    assert second["kappa"] == pytest.approx(0.0, abs=1e-6)
    assert second["per_class"] == pytest.approx(
        {"anger": -0.2, "fear": -0.2, "joy": 0.25}, abs=1e-6
    )
    assert second["n_clips"] == 2 and second["raters_per_clip"] == 3
    summary = per_stage_summary(clean, ORDER)
    assert list(summary) == ["1", "2"]
    assert summary["1"]["n_votes"] == 6 and summary["1"]["n_clips"] == 3
    assert summary["1"]["mean_agreement"] == pytest.approx((1 + 0.5 + 1) / 3, abs=1e-6)
    assert summary["2"]["mean_agreement"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-6)
    assert summary["2"]["fleiss_kappa"] == second
    assert "mean_agreement_per_class" not in summary["1"]  # no final labels given
    final = pd.Series({"c1": "joy", "c2": "joy", "c3": "fear"})
    by_class = per_stage_summary(clean, ORDER, final)
    # Stage 1: fear clips c3 (2/2); joy clips c1 (2/2) and c2 (1/2). Stage 2: c3 1/3, c2 3/3.
    assert by_class["1"]["mean_agreement_per_class"] == pytest.approx({"fear": 1.0, "joy": 0.75})
    assert list(by_class["1"]["mean_agreement_per_class"]) == ["fear", "joy"]
    assert by_class["2"]["mean_agreement_per_class"] == pytest.approx(
        {"fear": 1 / 3, "joy": 1.0}, abs=1e-6
    )


def test_fleiss_kappa_extremes():
    perfect = np.array([[3, 0], [0, 3], [3, 0], [0, 3]])
    assert fleiss_kappa(perfect) == pytest.approx(1.0)
    # Every rater picks the same single category: chance agreement is total, kappa undefined.
    assert math.isnan(fleiss_kappa(np.array([[4, 0], [4, 0]])))
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa(np.array([[2, 1], [1, 1]]))


def test_majority_of_a_single_stage():
    decided = decide(ballot("c1", 1, "Sadness", "Sadness", "Sadness", "Excitation", "Neutral"))
    row = decided.loc["c1"]
    assert row["label"] == "Sadness"
    assert row["agreement"] == pytest.approx(0.6)
    assert row["n_votes"] == 5 and row["deciding_stage"] == 1


def test_the_latest_stage_decides_even_against_the_first_majority():
    rows = ballot("c1", 1, "Sadness", "Sadness", "Sadness", "Excitation", "Excitation") + ballot(
        "c1", 2, "Excitation", "Excitation", "Sadness"
    )
    row = decide(rows).loc["c1"]
    assert row["label"] == "Excitation"
    assert row["deciding_stage"] == 2
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["n_votes"] == 8
    assert row["first_stage_agreement"] == pytest.approx(0.6)


def test_a_tie_in_the_deciding_stage_is_broken_by_pooled_votes():
    rows = ballot("c1", 1, "Neutral", "Neutral", "Neutral", "Relaxation", "Sadness") + ballot(
        "c1", 2, "Relaxation", "Neutral"
    )
    row = decide(rows).loc["c1"]
    assert row["label"] == "Neutral"  # 4 pooled votes against 2
    assert row["agreement"] == pytest.approx(0.5)


def test_a_remaining_tie_follows_the_taxonomy_order():
    row = decide(ballot("c1", 1, "Sadness", "Excitation")).loc["c1"]
    assert row["label"] == "Excitation"  # Excitation precedes Sadness in ORDER
    row = decide(ballot("c2", 1, "zzz", "Tension")).loc["c2"]
    assert row["label"] == "Tension"  # unknown labels rank after every class


def test_clean_votes_drops_bad_rows_and_keeps_an_annotators_last_vote():
    raw = votes(
        ("c1", 1, "ann", "Sadness"),
        ("c1", 1, "ann", "Excitation"),  # same annotator, same stage: replaces the first
        ("c1", "x", "bob", "Sadness"),  # stage is not an integer
        ("c1", 1, "eve", ""),  # no label
        ("c1", 1, "", "Neutral"),  # anonymous votes are all kept
        ("c1", 1, "", "Neutral"),
    )
    clean, dropped = clean_votes(raw)
    assert dropped == 3
    assert sorted(clean["label"]) == ["Excitation", "Neutral", "Neutral"]
    assert clean["stage"].dtype == "int64"
    assert aggregate_votes(clean, ORDER).loc["c1", "label"] == "Neutral"


def test_clean_votes_names_missing_columns():
    with pytest.raises(ValueError, match="annotator"):
        clean_votes(pd.DataFrame({"clip_id": ["a"], "stage": [1], "label": ["Sadness"]}))


def test_first_stage_kappa_uses_clips_with_the_usual_vote_count():
    rows = []
    for i, row in enumerate(FLEISS_EXAMPLE):
        labels = [cat for cat, n in zip("abcde", row, strict=True) for _ in range(n)]
        rows += ballot(f"c{i}", 1, *labels)
    rows += ballot("short", 1, "a", "b")  # 2 votes instead of 14: left out
    rows += ballot("c0", 2, "b", "b")  # later stages do not enter the kappa
    clean, _ = clean_votes(votes(*rows))
    result = first_stage_kappa(clean)
    assert result["kappa"] == pytest.approx(0.210, abs=5e-4)
    assert result["n_clips"] == 10
    assert result["raters_per_clip"] == 14
    assert result["n_clips_excluded"] == 1


def test_annotation_stats_summarises_votes_of_kept_clips():
    rows = (
        ballot("c1", 1, "Sadness", "Sadness", "Sadness")
        + ballot("c2", 1, "Excitation", "Neutral", "Excitation")
        + ballot("c3", 1, "Neutral", "Relaxation", "Sadness")
        + ballot("c3", 2, "Neutral", "Neutral")
        + ballot("c4", 1, "Sadness", "Excitation", "Neutral")  # low agreement, never sent on
        + ballot("gone", 1, "Sadness", "Sadness", "Sadness")  # not in the manifest
    )
    clean, _ = clean_votes(votes(*rows))
    decided = aggregate_votes(clean, ORDER)
    kept = decided.drop(index="gone").reset_index()
    manifest = kept[["clip_id", "label", "agreement"]]
    stats = annotation_stats(manifest, clean, class_order=ORDER, second_stage_below=0.6)
    assert stats["n_clips"] == 4 and stats["n_annotated_clips"] == 4
    assert stats["votes_per_stage"] == {"1": 12, "2": 2}
    assert stats["clips_per_stage"] == {"1": 4, "2": 1}
    assert stats["clips_sent_to_stage2"] == 1
    assert stats["clips_below_threshold_without_later_stage"] == 1  # c4 (1/3 < 0.6)
    assert stats["label_distribution"] == {"Excitation": 2, "Neutral": 1, "Sadness": 1}
    assert list(stats["label_distribution"]) == [
        "Excitation",
        "Neutral",
        "Sadness",
    ]  # taxonomy order
    assert stats["mean_agreement_per_class"]["Neutral"] == pytest.approx(1.0)
    assert stats["mean_agreement_per_class"]["Excitation"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert stats["fleiss_kappa_stage1"]["n_clips"] == 4
    assert stats["fleiss_kappa_stage1"]["raters_per_clip"] == 3
    assert list(stats["per_stage"]) == ["1", "2"]
    # Stage 2 is c3's two "Neutral" votes: one category only, so chance agreement is total and
    # kappa undefined (None), while the plain agreement is 1.
    assert stats["per_stage"]["2"]["fleiss_kappa"]["kappa"] is None
    assert stats["per_stage"]["2"]["fleiss_kappa"]["per_class"] == {"Neutral": None}
    assert stats["per_stage"]["2"]["mean_agreement"] == pytest.approx(1.0)
    assert stats["per_stage"]["1"]["n_votes"] == 12
    # Stage 1 share of votes for the final label: Excitation c2 2/3, c4 1/3; Neutral c3 1/3;
    # Sadness c1 1.
    assert stats["per_stage"]["1"]["mean_agreement_per_class"] == pytest.approx(
        {"Excitation": 0.5, "Neutral": 1 / 3, "Sadness": 1.0}, abs=1e-6
    )


def test_annotation_stats_for_a_single_label_source():
    manifest = pd.DataFrame(
        {"clip_id": ["a", "b"], "label": ["Sadness", "Sadness"], "agreement": [1.0, 1.0]}
    )
    empty = votes()
    stats = annotation_stats(manifest, empty, class_order=ORDER, second_stage_below=0.6)
    assert stats["n_annotated_clips"] == 0
    assert stats["fleiss_kappa_stage1"]["kappa"] is None
    assert stats["per_stage"] == {}
    assert stats["label_distribution"] == {"Sadness": 2}
