"""The sample-corpus generator behind `emotions synth`.

It stands in for eMotions on a fresh machine, so it has to exercise what the real corpus does:
real h264 + AAC files, emotions that show only when picture and sound are combined
(see synth_cues), a share of clips whose two modalities disagree for part of the clip, and
several annotators per clip over two stages with realistic disagreement. In the ``emotions``
layout the true label exists only through the votes: ingest has to aggregate them, as it would
for the real corpus.

A seed fixes everything: annotations.csv, meta.csv, generator.json and every encoded byte,
because DVC content-addresses the corpus and a rerun must not look like new data. That takes
two x264 settings (measured here with PyAV 18.1): one thread, since the output depends on the
thread count, and no SIMD (``asm=0``): with SIMD on (AVX-512 here) two encodes of the same
frames in one process differed for 96- and 192-pixel-wide frames (not for 64 or 128), the
mark of reads from uninitialised row padding; SIMD output also differs from the C path, so
only the C path gives the same bytes on every CPU. It costs about 2× encode time.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from emotions.config import SynthConfig
from emotions.media.encode import write_clip
from emotions.synth.cues import (
    Cell,
    Conflict,
    CueDesign,
    Modality,
    design_for,
    make_clip,
    n_frames_for,
)

SynthLayout = Literal["emotions", "folder"]
GENERATOR_FILE = "generator.json"
GENERATOR_VERSION = 1
# veryfast: half the encode time of x264's default preset and no larger files at this size.
DEFAULT_VIDEO_OPTIONS = {"crf": "30", "preset": "veryfast"}
# Byte-identical output on any machine and on every run (see the module docstring).
DETERMINISTIC_VIDEO_OPTIONS = {"threads": "1", "x264-params": "asm=0"}
# AAC's default rate (~70 kbit/s for our tone + noise) would be 3/4 of every clip; 24 kbit/s keeps
# the tones intact. Used once write_clip accepts an audio bit rate.
AUDIO_BIT_RATE = 24000
# A conflict clip shows the decoy for this share of its duration; the true cue keeps the rest.
DECOY_SHARE = (0.25, 0.4)
# Annotator model: per-annotator accuracy, lowered for clips whose modalities disagree.
RELIABILITY = (0.8, 0.97)
CONFLICT_PENALTY = 0.2
SAME_POLARITY_PREFERENCE = 0.7
DECOY_PREFERENCE = 0.5
LOW_AGREEMENT = 0.8

__all__ = [
    "ClipPlan",
    "SynthSummary",
    "Vote",
    "design_for",
    "make_clip",
    "plan_corpus",
    "synthesize",
]


@dataclass(frozen=True)
class Vote:
    stage: int
    annotator: str
    label: str


@dataclass(frozen=True)
class ClipPlan:
    """Everything decided about one clip before it is rendered."""

    index: int
    clip_id: str
    label: str
    cell: Cell
    duration_s: float
    platform: str
    conflict: Conflict | None
    votes: tuple[Vote, ...] = field(default=())

    def agreement(self, stage: int) -> float:
        """Share of one stage's votes that went to that stage's most chosen label."""
        labels = [vote.label for vote in self.votes if vote.stage == stage]
        if not labels:
            return float("nan")
        return max(Counter(labels).values()) / len(labels)

    @property
    def second_stage(self) -> bool:
        return any(vote.stage == 2 for vote in self.votes)


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    layout: SynthLayout
    n_clips: int
    n_conflict: int
    n_second_stage: int
    n_low_agreement: int
    total_bytes: int
    classes: tuple[str, ...]


def clip_id_for(index: int) -> str:
    return f"c{index:06d}"


def _annotator_ids(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"a{i:0{width}d}" for i in range(1, n + 1)]


def _pick_conflict(
    rng: np.random.Generator, design: CueDesign, cell: Cell, duration_s: float
) -> Conflict | None:
    """A decoy group in one modality such that the decoy pair is some other class's cell."""
    first: Modality = "visual" if rng.random() < 0.5 else "audio"
    second: Modality = "audio" if first == "visual" else "visual"
    for modality in (first, second):
        axis = 0 if modality == "visual" else 1
        size = design.n_visual if axis == 0 else design.n_audio
        options = []
        for group in range(size):
            if group == cell[axis]:
                continue
            decoy_cell = (group, cell[1]) if axis == 0 else (cell[0], group)
            decoy_class = design.class_of(decoy_cell)
            if decoy_class is not None:
                options.append((group, decoy_class))
        if options:
            group, decoy_class = options[int(rng.integers(len(options)))]
            share = rng.uniform(*DECOY_SHARE)
            start = rng.uniform(0, duration_s * (1 - share))
            end = start + share * duration_s
            return Conflict(modality, decoy_class, group, round(start, 4), round(end, 4))
    return None


def _vote(
    rng: np.random.Generator,
    truth: str,
    accuracy: float,
    polarity: Mapping[str, str],
    decoy: str | None,
) -> str:
    """The true label with probability ``accuracy``, else a confusable class."""
    if rng.random() < accuracy:
        return truth
    if decoy is not None and rng.random() < DECOY_PREFERENCE:
        return decoy
    others = [name for name in polarity if name != truth]
    same = [name for name in others if polarity[name] == polarity[truth]]
    if same and rng.random() < SAME_POLARITY_PREFERENCE:
        return same[int(rng.integers(len(same)))]
    return others[int(rng.integers(len(others)))]


def _votes_for(
    rng: np.random.Generator,
    truth: str,
    conflict: Conflict | None,
    *,
    polarity: Mapping[str, str],
    pool: Sequence[str],
    reliability: Mapping[str, float],
    config: SynthConfig,
    second_stage_below: float,
) -> tuple[Vote, ...]:
    decoy = conflict.decoy_class if conflict is not None else None
    penalty = CONFLICT_PENALTY if conflict is not None else 0.0
    chosen = rng.choice(len(pool), size=config.annotators_stage1, replace=False)
    stage1 = [pool[i] for i in sorted(chosen.tolist())]
    votes = [
        Vote(1, who, _vote(rng, truth, reliability[who] - penalty, polarity, decoy))
        for who in stage1
    ]
    agreement = max(Counter(v.label for v in votes).values()) / len(votes)
    if agreement < second_stage_below:
        rest = [who for who in pool if who not in stage1]
        chosen = rng.choice(len(rest), size=config.annotators_stage2, replace=False)
        # Second-stage annotators know the clip is contested: a decoy misleads them less.
        votes += [
            Vote(2, who, _vote(rng, truth, reliability[who] - penalty / 2, polarity, decoy))
            for who in (rest[i] for i in sorted(chosen.tolist()))
        ]
    return tuple(votes)


def plan_corpus(
    taxonomy: Mapping[str, str],
    config: SynthConfig,
    *,
    clips_per_class: int,
    seed: int,
    second_stage_below: float = 0.6,
    design: CueDesign | None = None,
) -> list[ClipPlan]:
    """Decide every clip's class, cue cell, duration, platform, conflict and votes.

    Rendering details (position, colour jitter, noise...) are drawn later from a per-clip
    generator, so a plan is cheap and tests can recompute it to know the hidden truth.

    Classes are shuffled over clip ids so an id says nothing about the label.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be >= 1, got {clips_per_class}")
    design = design or design_for(list(taxonomy))
    rng = np.random.default_rng([seed, 0])
    pool = _annotator_ids(max(20, config.annotators_stage1 + config.annotators_stage2))
    reliability = {who: float(rng.uniform(*RELIABILITY)) for who in pool}
    labels = [name for name in design.classes for _ in range(clips_per_class)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    n_conflict = round(config.conflict_share * len(labels))
    conflicted = set(rng.choice(len(labels), size=n_conflict, replace=False).tolist())
    low, high = config.duration_s
    plans = []
    for index, label in enumerate(labels):
        owned = design.cells[label]
        cell = owned[int(rng.integers(len(owned)))]
        n_frames = n_frames_for(rng.uniform(min(low, high), max(low, high)), config.fps)
        duration = n_frames / config.fps
        platform = str(rng.choice(config.platforms)) if config.platforms else ""
        conflict = _pick_conflict(rng, design, cell, duration) if index in conflicted else None
        votes = _votes_for(
            rng,
            label,
            conflict,
            polarity=taxonomy,
            pool=pool,
            reliability=reliability,
            config=config,
            second_stage_below=second_stage_below,
        )
        plans.append(
            ClipPlan(index, clip_id_for(index), label, cell, duration, platform, conflict, votes)
        )
    return plans


def _check_inputs(taxonomy: Mapping[str, str], layout: str, second_stage_below: float) -> None:
    if layout not in ("emotions", "folder"):
        raise ValueError(f"layout must be 'emotions' or 'folder', got '{layout}'")
    if not 0.0 <= second_stage_below <= 1.0:
        raise ValueError(f"second_stage_below must be in [0, 1], got {second_stage_below}")
    for name in taxonomy:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise ValueError(f"class name '{name}' cannot be used as a folder name")


def _prepare_target(out: Path) -> None:
    """Refuse to replace anything that synth did not write."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / GENERATOR_FILE).is_file():
        raise FileExistsError(
            f"{out} is not empty and has no {GENERATOR_FILE}, so it was not written by "
            "`emotions synth`; refusing to overwrite it (remove it or pick another path)"
        )


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_annotations(root: Path, plans: Sequence[ClipPlan]) -> None:
    votes = [(p.clip_id, v.stage, v.annotator, v.label) for p in plans for v in p.votes]
    header = ("clip_id", "stage", "annotator", "label")
    (root / "annotations.csv").write_text(_csv_text(header, votes), encoding="utf-8")
    meta = [(p.clip_id, p.platform) for p in plans]
    (root / "meta.csv").write_text(_csv_text(("clip_id", "platform"), meta), encoding="utf-8")


def _clip_path(root: Path, plan: ClipPlan, layout: SynthLayout) -> Path:
    folder = root / "videos" if layout == "emotions" else root / plan.label
    return folder / f"{plan.clip_id}.mp4"


def _low_agreement(plan: ClipPlan) -> bool:
    return plan.agreement(2 if plan.second_stage else 1) < LOW_AGREEMENT


def _generator_record(
    *,
    seed: int,
    layout: SynthLayout,
    clips_per_class: int,
    second_stage_below: float,
    config: SynthConfig,
    taxonomy: Mapping[str, str],
    design: CueDesign,
    plans: Sequence[ClipPlan],
    video_options: Mapping[str, str],
    audio_options: Mapping[str, int],
) -> dict:
    """How the corpus was made and aggregate counts; never a per-clip label."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "layout": layout,
        "clips_per_class": clips_per_class,
        "second_stage_below": second_stage_below,
        "config": config.model_dump(mode="json"),
        "video_options": dict(video_options),
        "audio_options": dict(audio_options),
        "classes": list(design.classes),
        "taxonomy": dict(taxonomy),
        "partitions": design.to_json(),
        "counts": {
            "n_clips": len(plans),
            "per_class": dict(Counter(p.label for p in plans)),
            "n_conflict": sum(p.conflict is not None for p in plans),
            "n_second_stage": sum(p.second_stage for p in plans),
            "n_low_agreement": sum(_low_agreement(p) for p in plans),
            "n_votes": sum(len(p.votes) for p in plans),
        },
    }


def _audio_kwargs() -> dict[str, int]:
    if "audio_bit_rate" in inspect.signature(write_clip).parameters:
        return {"audio_bit_rate": AUDIO_BIT_RATE}
    return {}


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.synth-{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def synthesize(
    out: Path,
    *,
    taxonomy: dict[str, str],
    config: SynthConfig,
    clips_per_class: int,
    seed: int,
    layout: SynthLayout = "emotions",
    second_stage_below: float = 0.6,
    progress: bool = True,
    video_options: Mapping[str, str] | None = None,
    deterministic: bool = True,
) -> SynthSummary:
    """Write a corpus to ``out``: the same seed gives the same bytes.

    The corpus is built in a temporary directory next to ``out`` and renamed into place, so
    ``out`` is either the old corpus or the complete new one. ``video_options`` are merged over
    DEFAULT_VIDEO_OPTIONS (for larger benchmark corpora, e.g. a different crf);
    ``deterministic=False`` lets x264 use its threads and SIMD: faster, same pixels to the eye,
    but not the same bytes from run to run.
    """
    out = Path(out)
    _check_inputs(taxonomy, layout, second_stage_below)
    _prepare_target(out)
    design = design_for(list(taxonomy))
    plans = plan_corpus(
        taxonomy,
        config,
        clips_per_class=clips_per_class,
        seed=seed,
        second_stage_below=second_stage_below,
        design=design,
    )
    options = {
        **DEFAULT_VIDEO_OPTIONS,
        **(DETERMINISTIC_VIDEO_OPTIONS if deterministic else {}),
        **(video_options or {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.synth-{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    audio_kwargs = _audio_kwargs()
    try:
        for plan in tqdm(plans, desc=f"synth {out.name}", unit="clip", disable=not progress):
            frames, audio = make_clip(
                plan.label,
                np.random.default_rng([seed, 1, plan.index]),
                design=design,
                width=config.width,
                height=config.height,
                fps=config.fps,
                duration_s=plan.duration_s,
                sample_rate=config.audio_sample_rate,
                cell=plan.cell,
                conflict=plan.conflict,
            )
            write_clip(
                _clip_path(tmp, plan, layout),
                frames,
                config.fps,
                audio,
                config.audio_sample_rate,
                video_options=dict(options),
                **audio_kwargs,
            )
        if layout == "emotions":
            _write_annotations(tmp, plans)
        record = _generator_record(
            seed=seed,
            layout=layout,
            clips_per_class=clips_per_class,
            second_stage_below=second_stage_below,
            config=config,
            taxonomy=taxonomy,
            design=design,
            plans=plans,
            video_options=options,
            audio_options=audio_kwargs,
        )
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        (tmp / GENERATOR_FILE).write_text(text, encoding="utf-8")
        total_bytes = sum(path.stat().st_size for path in tmp.rglob("*") if path.is_file())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = record["counts"]
    return SynthSummary(
        out=out,
        layout=layout,
        n_clips=counts["n_clips"],
        n_conflict=counts["n_conflict"],
        n_second_stage=counts["n_second_stage"],
        n_low_agreement=counts["n_low_agreement"],
        total_bytes=total_bytes,
        classes=design.classes,
    )
