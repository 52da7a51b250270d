"""Which kept clips go to annotators, and why: the queue's rules over a candidate table.

Every rule gives each candidate a score (higher = more in need of a label) and a bar to clear;
:func:`select` then fills one queue from them. The rules, by the reason they write:

- ``low_confidence``: ``1 - confidence`` (the served, calibrated top probability), for clips
  whose confidence is below ``queue.max_confidence``: the model itself is unsure.
- ``modality_disagreement``: the total-variation distance ``0.5 * sum |p_audio - p_video|``
  between the audio-only and the video-only probabilities (the model's auxiliary heads, logged
  as ``modality_probabilities``), at least ``queue.min_modality_disagreement``: sound and
  picture tell different stories, the case the paper's multi-stage annotation exists for.
  Clips without sound have no audio view and never qualify.
- ``window_disagreement``: the largest total-variation distance between two timeline windows
  (``window_probabilities``), at least ``queue.min_window_disagreement``: the emotion changes
  within the clip, so one clip label may be wrong for half of it.
- ``drifted_slice``: the clips where the traffic moved. For every input statistic (and the
  confidence) the monitor found drifted, the side it moved to is the sign of (median of the log -
  median of the reference); a clip is in the slice when it lies beyond the reference's
  ``queue.drift_tail`` quantile on that side. Its score is how far beyond, in units of the
  reference's central spread (the quantile range), the largest over drifted features. Label and
  embedding drift define no slice (no single value to be "beyond").
- ``random_control``: drawn uniformly (seeded) from all candidates before any rule picks, so the
  control is an unbiased sample of what was served; its score is the draw.

:func:`select` draws the control first (``round(max_clips * random_share)``, at least one when the
share is positive), then the rules take turns in the order above, each taking its best remaining
clip that clears its bar, until ``max_clips`` or no rule has any left. A clip is picked once, by
the first rule to reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from emotions.annotation.queue_format import (
    DRIFTED_SLICE,
    LOW_CONFIDENCE,
    MODALITY_DISAGREEMENT,
    RANDOM_CONTROL,
    WINDOW_DISAGREEMENT,
)
from emotions.config import QueueConfig

# The numeric columns a drifted check can name, as the monitor's tables call them.
SLICE_FEATURES = ("brightness", "motion", "loudness", "duration_s", "confidence")
RULES = (LOW_CONFIDENCE, MODALITY_DISAGREEMENT, WINDOW_DISAGREEMENT, DRIFTED_SLICE)


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance of two distributions over the same classes (0 same, 1 disjoint)."""
    names = set(p) | set(q)
    return 0.5 * sum(abs(float(p.get(n, 0.0)) - float(q.get(n, 0.0))) for n in names)


def modality_disagreement(record: Mapping[str, Any]) -> float:
    """Audio-only vs video-only distance of a log record; NaN without both views."""
    views = record.get("modality_probabilities") or {}
    audio, video = views.get("audio"), views.get("video")
    if not audio or not video:
        return float("nan")
    return total_variation(audio, video)


def window_disagreement(record: Mapping[str, Any]) -> float:
    """The largest distance between two timeline windows of a log record; NaN with < 2."""
    windows = [w for w in record.get("window_probabilities") or [] if w]
    if len(windows) < 2:
        return float("nan")
    return max(total_variation(a, b) for i, a in enumerate(windows) for b in windows[i + 1 :])


def candidate_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One answered, kept log record as a row of the candidate table."""
    probabilities = record.get("probabilities") or {}
    stats = record.get("input") or {}
    row: dict[str, Any] = {
        "request_id": record.get("id"),
        "served_at": record.get("time"),
        "stored": record.get("stored"),
        "sha256": record.get("sha256") or str(record.get("stored", "")).split(".")[0],
        "predicted_label": record.get("label"),
        "confidence": max(map(float, probabilities.values())) if probabilities else np.nan,
        "modality_disagreement": modality_disagreement(record),
        "window_disagreement": window_disagreement(record),
    }
    for name in SLICE_FEATURES[:-1]:
        value = stats.get(name)
        row[name] = np.nan if value is None else float(value)
    return row


def candidate_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Answered records that kept their upload, one row per content (the latest request)."""
    rows = [candidate_row(r) for r in records if r.get("status") == "ok" and r.get("stored")]
    columns = list(candidate_row({}).keys())
    table = pd.DataFrame(rows, columns=columns)
    table = table.drop_duplicates("sha256", keep="last")
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class DriftSlice:
    """What the monitor found: the drifted checks, the reference table, the whole log table."""

    drifted: Sequence[str]
    reference: pd.DataFrame
    current: pd.DataFrame

    @property
    def features(self) -> list[str]:
        return [
            f
            for f in SLICE_FEATURES
            if f in self.drifted and f in self.reference and f in self.current
        ]


def drift_scores(candidates: pd.DataFrame, drift: DriftSlice | None, tail: float) -> pd.Series:
    """Per candidate: how far beyond the reference tail on the drifted side (0: inside)."""
    score = pd.Series(0.0, index=candidates.index)
    if drift is None:
        return score
    for feature in drift.features:
        ref = drift.reference[feature].dropna()
        now = drift.current[feature].dropna()
        if ref.empty or now.empty or feature not in candidates:
            continue
        low, high = float(ref.quantile(tail)), float(ref.quantile(1.0 - tail))
        spread = max(high - low, 1e-9)
        values = candidates[feature].astype(float)
        if now.median() >= ref.median():
            beyond = (values - high) / spread
        else:
            beyond = (low - values) / spread
        score = np.maximum(score, beyond.fillna(0.0).clip(lower=0.0))
    return score


def rule_scores(
    candidates: pd.DataFrame, config: QueueConfig, drift: DriftSlice | None = None
) -> dict[str, pd.Series]:
    """Each rule's score of each candidate, NaN where the clip does not clear the rule's bar."""
    confidence = candidates["confidence"].astype(float)
    modality = candidates["modality_disagreement"].astype(float)
    windows = candidates["window_disagreement"].astype(float)
    drifted = drift_scores(candidates, drift, config.drift_tail)
    return {
        LOW_CONFIDENCE: (1.0 - confidence).where(confidence < config.max_confidence),
        MODALITY_DISAGREEMENT: modality.where(modality >= config.min_modality_disagreement),
        WINDOW_DISAGREEMENT: windows.where(windows >= config.min_window_disagreement),
        DRIFTED_SLICE: drifted.where(drifted > 0.0),
    }


def control_count(config: QueueConfig) -> int:
    if config.random_share <= 0:
        return 0
    return max(1, round(config.max_clips * config.random_share))


def select(
    candidates: pd.DataFrame, config: QueueConfig, drift: DriftSlice | None = None
) -> pd.DataFrame:
    """The picked candidates in pick order, with ``reason`` and ``score`` columns added."""
    picked: list[tuple[int, str, float]] = []
    taken: set[int] = set()
    rng = np.random.default_rng(config.seed)
    draws = pd.Series(rng.random(len(candidates)), index=candidates.index)
    for index in draws.sort_values().index[: min(control_count(config), config.max_clips)]:
        picked.append((index, RANDOM_CONTROL, float(draws[index])))
        taken.add(index)
    ranked = {
        rule: list(score.dropna().sort_values(ascending=False, kind="stable").items())
        for rule, score in rule_scores(candidates, config, drift).items()
    }
    while len(picked) < config.max_clips:
        progressed = False
        for rule in RULES:
            queue = ranked[rule]
            while queue and queue[0][0] in taken:
                queue.pop(0)
            if not queue or len(picked) >= config.max_clips:
                continue
            index, score = queue.pop(0)
            picked.append((index, rule, float(score)))
            taken.add(index)
            progressed = True
        if not progressed:
            break
    rows = candidates.loc[[index for index, _, _ in picked]].copy()
    rows["reason"] = [reason for _, reason, _ in picked]
    rows["score"] = [round(score, 6) for _, _, score in picked]
    return rows.reset_index(drop=True)
