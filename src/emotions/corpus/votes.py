"""Turn annotators' votes into one label per clip, and describe how much they agreed.

eMotions was labelled in stages: several annotators vote, and clips they disagree on go to a
second stage whose votes decide. So per clip the latest stage that has votes decides by
majority; a tie there is broken by pooling every stage's votes, and a remaining tie by the
taxonomy's class order (deterministic, never random). ``agreement`` is the share of the
deciding stage's votes that chose the label: the test variant keeps only well-agreed clips.

Pure pandas/numpy over data frames: the ingest stage does the reading and writing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

VOTE_COLUMNS = ("clip_id", "stage", "annotator", "label")
AGGREGATE_COLUMNS = ("label", "agreement", "n_votes", "deciding_stage", "first_stage_agreement")


def clean_votes(votes: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Votes with integer stages and non-empty labels; returns (clean votes, rows dropped).

    A stage that is not an integer cannot be ordered against the others, so its rows are
    dropped (and counted) rather than guessed at. When one annotator voted twice on a clip in
    the same stage, the later row replaces the earlier one.
    """
    missing = [c for c in VOTE_COLUMNS if c not in votes.columns]
    if missing:
        raise ValueError(f"votes lack column(s) {', '.join(missing)}")
    frame = votes[list(VOTE_COLUMNS)].copy()
    stage = pd.to_numeric(frame["stage"], errors="coerce")
    label = frame["label"].astype("string").str.strip()
    usable = stage.notna() & (stage == stage.round()) & label.notna() & (label != "")
    usable &= frame["clip_id"].notna()
    frame = frame[usable].assign(
        stage=stage[usable].astype("int64"), label=label[usable].astype(str)
    )
    annotator = frame["annotator"].astype("string").fillna("").str.strip()
    named = annotator != ""
    repeated = named & frame.assign(annotator=annotator).duplicated(
        ["clip_id", "stage", "annotator"], keep="last"
    )
    frame = frame[~repeated].reset_index(drop=True)
    return frame, int(len(votes) - len(frame))


def aggregate_votes(votes: pd.DataFrame, class_order: Sequence[str]) -> pd.DataFrame:
    """One row per clip id (the index): label, agreement, n_votes, deciding_stage, first-stage agreement.

    ``votes`` must already be clean (``clean_votes``). Labels outside ``class_order`` can still
    win (the caller then reports the clip as having an unknown label); in a final tie they rank
    after every known class, alphabetically.
    """
    rank = {name: i for i, name in enumerate(class_order)}
    counts = votes.groupby(["clip_id", "stage", "label"], sort=True).size()
    rows: dict[object, tuple] = {}
    for clip_id, per_clip in counts.groupby(level=0, sort=True):
        stages: dict[int, Counter[str]] = {}
        for (_, stage, label), n in per_clip.items():
            stages.setdefault(int(stage), Counter())[label] = int(n)
        label, deciding = decide(stages, rank)
        decided = stages[deciding]
        first = stages[min(stages)]
        rows[clip_id] = (
            label,
            decided[label] / sum(decided.values()),
            sum(sum(c.values()) for c in stages.values()),
            deciding,
            max(first.values()) / sum(first.values()),
        )
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(AGGREGATE_COLUMNS))
    frame.index.name = "clip_id"
    return frame.astype(
        {"label": str, "agreement": float, "n_votes": "int64", "deciding_stage": "int64"}
    )


def decide(stages: dict[int, Counter[str]], rank: dict[str, int]) -> tuple[str, int]:
    """(label, deciding stage) for one clip's vote counts per stage."""
    deciding = max(stage for stage, counter in stages.items() if sum(counter.values()) > 0)
    counter = stages[deciding]
    top = max(counter.values())
    tied = sorted(label for label, n in counter.items() if n == top)
    if len(tied) > 1:
        pooled: Counter[str] = Counter()
        for stage_counter in stages.values():
            pooled.update(stage_counter)
        best = max(pooled[label] for label in tied)
        tied = [label for label in tied if pooled[label] == best]
    tied.sort(key=lambda label: (rank.get(label, len(rank)), label))
    return tied[0], deciding


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for a subjects × categories matrix of rating counts.

    Every subject must have the same number of ratings n ≥ 2 (Fleiss 1971). Returns NaN when
    chance agreement is already perfect (every rating in one category), where kappa is undefined.
    Written here because scikit-learn only has Cohen's kappa (two raters, each rating every
    subject); eMotions has several anonymous annotators per clip.
    """
    table = _rating_table(counts)
    n = table.sum(axis=1)[0]
    p_category = table.sum(axis=0) / (table.shape[0] * n)
    p_subject = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_observed = p_subject.mean()
    p_chance = float((p_category**2).sum())
    if np.isclose(p_chance, 1.0):
        return float("nan")
    return float((p_observed - p_chance) / (1.0 - p_chance))


def category_kappas(counts: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of each category (Fleiss 1971): how far raters agree on *that* class.

    κ_j = 1 − Σ_i n_ij (n − n_ij) / (N n (n − 1) p_j (1 − p_j)); NaN for a category nobody or
    everybody chose. The overall kappa is their p_j (1 − p_j)-weighted mean, so a low overall
    value can be traced to the classes annotators confuse.
    """
    table = _rating_table(counts)
    subjects, n = table.shape[0], table.sum(axis=1)[0]
    p_category = table.sum(axis=0) / (subjects * n)
    spread = p_category * (1.0 - p_category)
    disagreement = (table * (n - table)).sum(axis=0)
    defined = ~np.isclose(spread, 0.0)
    kappas = np.full(table.shape[1], np.nan)
    kappas[defined] = 1.0 - disagreement[defined] / (subjects * n * (n - 1) * spread[defined])
    return kappas


def _rating_table(counts: np.ndarray) -> np.ndarray:
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("counts must be a non-empty subjects × categories matrix")
    raters = table.sum(axis=1)
    if raters[0] < 2 or not np.all(raters == raters[0]):
        raise ValueError("every subject needs the same number of ratings, at least two")
    return table


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def stage_kappa(
    votes: pd.DataFrame, stage: int, class_order: Sequence[str] = ()
) -> dict[str, object]:
    """Fleiss' kappa (overall and per class) of one stage, on its clips with the usual vote count.

    Fleiss' kappa needs equal ratings per subject; the usual count (the mode) keeps the most
    clips, and how many were left out is reported next to the value. ``per_class`` lists the
    classes voted for in the stage, in taxonomy order (unknown labels last).
    """
    empty = {
        "kappa": None,
        "n_clips": 0,
        "raters_per_clip": None,
        "n_clips_excluded": 0,
        "per_class": {},
    }
    chosen_stage = votes[votes["stage"] == stage] if len(votes) else votes
    if chosen_stage.empty:
        return empty
    table = chosen_stage.groupby(["clip_id", "label"]).size().unstack(fill_value=0)
    rank = {name: i for i, name in enumerate(class_order)}
    table = table[sorted(table.columns, key=lambda c: (rank.get(c, len(rank)), c))]
    per_clip = table.sum(axis=1)
    usual = int(per_clip.mode().max())
    chosen = table[per_clip == usual]
    if usual < 2 or chosen.empty:
        return {**empty, "n_clips_excluded": len(table)}
    matrix = chosen.to_numpy()
    return {
        "kappa": _rounded(fleiss_kappa(matrix)),
        "n_clips": len(chosen),
        "raters_per_clip": usual,
        "n_clips_excluded": len(table) - len(chosen),
        "per_class": {
            str(label): _rounded(k)
            for label, k in zip(chosen.columns, category_kappas(matrix), strict=True)
        },
    }


def first_stage_kappa(votes: pd.DataFrame, class_order: Sequence[str] = ()) -> dict[str, object]:
    """``stage_kappa`` of the first stage, the one every annotated clip went through."""
    if votes.empty:
        return stage_kappa(votes, 0)
    return stage_kappa(votes, int(votes["stage"].min()), class_order)


def per_stage_summary(
    votes: pd.DataFrame,
    class_order: Sequence[str],
    labels: pd.Series | None = None,
) -> dict[str, object]:
    """Per stage: votes, clips, mean agreement (majority share per clip) and Fleiss' kappa.

    With ``labels`` (the final label per clip id), also ``mean_agreement_per_class``: for the
    clips of each final class, the mean share of the stage's votes that named that class, which
    shows where a second stage changed annotators' minds.
    """
    summary: dict[str, object] = {}
    if votes.empty:
        return summary
    counts = votes.groupby(["stage", "clip_id", "label"]).size()
    rank = {name: i for i, name in enumerate(class_order)}
    for stage, per_stage in counts.groupby(level=0, sort=True):
        per_clip = per_stage.droplevel(0)
        totals = per_clip.groupby(level=0).sum()
        share = per_clip.groupby(level=0).max() / totals
        entry: dict[str, object] = {
            "n_votes": int(per_stage.sum()),
            "n_clips": len(share),
            "mean_agreement": round(float(share.mean()), 6),
            "fleiss_kappa": stage_kappa(votes, int(stage), class_order),
        }
        if labels is not None:
            final = labels.reindex(totals.index).dropna()
            for_label = pd.Series(
                [per_clip.get((clip, label), 0) for clip, label in final.items()],
                index=final.index,
                dtype=float,
            )
            by_class = (for_label / totals.reindex(final.index)).groupby(final).mean()
            ordered = sorted(by_class.index, key=lambda c: (rank.get(c, len(rank)), c))
            entry["mean_agreement_per_class"] = {
                str(c): round(float(by_class[c]), 6) for c in ordered
            }
        summary[str(stage)] = entry
    return summary


def annotation_stats(
    manifest: pd.DataFrame,
    votes: pd.DataFrame,
    *,
    class_order: Sequence[str],
    second_stage_below: float,
) -> dict[str, object]:
    """Summary of the labels that made it into ``manifest`` and of the votes behind them.

    ``votes`` are clean votes keyed by the manifest's ``clip_id``; clips from single-label
    sources simply have none.
    """
    votes = votes[votes["clip_id"].isin(set(manifest["clip_id"]))] if len(votes) else votes
    distribution = manifest["label"].value_counts()
    ordered = [c for c in class_order if c in distribution.index]
    ordered += sorted(set(distribution.index) - set(ordered))
    agreement = manifest.groupby("label")["agreement"].mean()
    stats: dict[str, object] = {
        "n_clips": len(manifest),
        "n_annotated_clips": int(votes["clip_id"].nunique()) if len(votes) else 0,
        "label_distribution": {c: int(distribution[c]) for c in ordered},
        "mean_agreement_per_class": {c: round(float(agreement[c]), 6) for c in ordered},
        "votes_per_stage": {},
        "clips_per_stage": {},
        "clips_sent_to_stage2": 0,
        "second_stage_below": second_stage_below,
        "clips_below_threshold_without_later_stage": 0,
        "fleiss_kappa_stage1": first_stage_kappa(votes, class_order),
        "per_stage": per_stage_summary(
            votes, class_order, manifest.drop_duplicates("clip_id").set_index("clip_id")["label"]
        ),
    }
    if len(votes):
        per_stage = votes.groupby("stage")
        stats["votes_per_stage"] = {str(s): int(n) for s, n in per_stage.size().items()}
        stats["clips_per_stage"] = {
            str(s): int(n) for s, n in per_stage["clip_id"].nunique().items()
        }
        first = votes["stage"].min()
        later = set(votes.loc[votes["stage"] > first, "clip_id"])
        stats["clips_sent_to_stage2"] = len(later)
        counts = votes[votes["stage"] == first].groupby(["clip_id", "label"]).size()
        share = counts.groupby(level=0).max() / counts.groupby(level=0).sum()
        low = set(share[share < second_stage_below].index)
        stats["clips_below_threshold_without_later_stage"] = len(low - later)
    return stats
