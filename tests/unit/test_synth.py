"""The sample-corpus generator: real files, reproducible bytes, votes, and cues only fusion reads.

The separability tests measure the cue design from the decoded files with hand features (the
hue of the saturated object, the loudest audio frequency): if the pair of groups names the class
while each group alone does not, a model trained on the corpus has to fuse the two modalities.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest

from emotions.config import SynthConfig, load_params
from emotions.synth.corpus import SynthSummary, plan_corpus, synthesize
from emotions.synth.cues import Conflict, audio_cue, design_for, make_clip

ROOT = Path(__file__).resolve().parents[2]
TAXONOMIES = load_params(ROOT / "params.yaml").taxonomies
EMOTIONS6 = dict(TAXONOMIES["emotions6"])
SMALL = SynthConfig(
    duration_s=(1.0, 1.6), fps=10, conflict_share=0.2, platforms=["douyin", "tiktok"]
)
PER_CLASS = 3
SEED = 11
# A high threshold sends every clip with any disagreement to stage 2, so a tiny corpus has some.
SECOND_STAGE_BELOW = 0.9


def _make(out: Path, **overrides) -> SynthSummary:
    args = dict(
        taxonomy=EMOTIONS6,
        config=SMALL,
        clips_per_class=PER_CLASS,
        seed=SEED,
        second_stage_below=SECOND_STAGE_BELOW,
        progress=False,
    )
    args.update(overrides)
    return synthesize(out, **args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, _make(out)


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory) -> Path:
    """No conflicts: every clip shows only its own class's cues."""
    out = tmp_path_factory.mktemp("synth_folder") / "clips"
    _make(out, layout="folder", config=SMALL.model_copy(update={"conflict_share": 0.0}))
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, int, float]:
    """RGB frames, mono audio, audio sample rate, video stream duration in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].sample_rate
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return frames, np.concatenate(chunks).astype(np.float64), rate, duration


def _frame_hue(frame: np.ndarray) -> float | None:
    """Hue of the object: the only strongly saturated pixels of a frame."""
    pixels = frame.reshape(-1, 3).astype(np.float64)
    saturated = pixels[(pixels.max(1) - pixels.min(1)) > 60]
    if len(saturated) < 20:
        return None
    r, g, b = saturated.mean(0) / 255.0
    return colorsys.rgb_to_hsv(r, g, b)[0]


def _nearest_hue_group(hue: float, n_groups: int) -> int:
    centres = np.arange(n_groups) / n_groups
    distance = np.abs((hue - centres + 0.5) % 1.0 - 0.5)
    return int(np.argmin(distance))


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1.0 / rate)[np.argmax(spectrum)])


def _nearest_audio_group(hz: float, n_groups: int, rate: int) -> int:
    centres = [audio_cue(g, n_groups, rate).freq_hz for g in range(n_groups)]
    return int(np.argmin([abs(np.log(hz / c)) for c in centres]))


def _best_accuracy(keys: list, labels: list[str]) -> float:
    """Accuracy of the best classifier that sees only ``keys`` (majority label per key)."""
    by_key: dict = defaultdict(Counter)
    for key, label in zip(keys, labels, strict=True):
        by_key[key][label] += 1
    return sum(c.most_common(1)[0][1] for c in by_key.values()) / len(labels)


def test_emotions_layout_contents(corpus):
    out, summary = corpus
    n = PER_CLASS * len(EMOTIONS6)
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations.csv",
        "generator.json",
        "meta.csv",
        "videos",
    ]
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == n == summary.n_clips
    assert summary.classes == tuple(EMOTIONS6)
    assert summary.total_bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert summary.total_bytes / n < 25_000
    meta = _read_csv(out / "meta.csv")
    assert [row["clip_id"] for row in meta] == [p.stem for p in videos]
    assert {row["platform"] for row in meta} <= {"douyin", "tiktok"}
    record = json.loads((out / "generator.json").read_text())
    assert record["seed"] == SEED and record["classes"] == list(EMOTIONS6)
    assert record["counts"]["n_clips"] == n
    assert record["partitions"]["video_only_cap"] == 0.5
    # The truth is written per clip nowhere but in the votes.
    generator_text = (out / "generator.json").read_text()
    assert not any(p.stem in generator_text for p in videos)
    meta_text = (out / "meta.csv").read_text()
    assert not any(name in meta_text for name in EMOTIONS6)


def test_every_clip_decodes_with_audio_and_duration(corpus):
    out, _ = corpus
    plans = {p.clip_id: p for p in _plans()}
    for video in sorted((out / "videos").glob("*.mp4")):
        frames, audio, rate, duration = _decode(video)
        plan = plans[video.stem]
        assert len(frames) == round(plan.duration_s * SMALL.fps)
        assert frames[0].shape == (SMALL.height, SMALL.width, 3)
        assert duration == pytest.approx(plan.duration_s, abs=1.5 / SMALL.fps)
        assert rate == SMALL.audio_sample_rate
        assert len(audio) / rate == pytest.approx(plan.duration_s, abs=0.15)
        assert np.abs(audio).max() > 0.05
        assert SMALL.duration_s[0] - 0.1 <= plan.duration_s <= SMALL.duration_s[1] + 0.1


def _plans(config: SynthConfig = SMALL, **overrides):
    args = dict(clips_per_class=PER_CLASS, seed=SEED, second_stage_below=SECOND_STAGE_BELOW)
    args.update(overrides)
    return plan_corpus(EMOTIONS6, config, **args)


def test_votes_per_stage_and_second_stage_exactly_below_threshold(corpus):
    out, summary = corpus
    rows = _read_csv(out / "annotations.csv")
    assert list(rows[0]) == ["clip_id", "stage", "annotator", "label"]
    by_clip: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    annotators_of: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_clip[row["clip_id"]][row["stage"]].append(row["label"])
        annotators_of[row["clip_id"]].append(row["annotator"])
        assert row["label"] in EMOTIONS6
        assert row["annotator"].startswith("a")
    assert len(by_clip) == summary.n_clips
    n_second = 0
    for clip_id, stages in by_clip.items():
        assert len(stages["1"]) == SMALL.annotators_stage1
        agreement = max(Counter(stages["1"]).values()) / len(stages["1"])
        expected = SMALL.annotators_stage2 if agreement < SECOND_STAGE_BELOW else 0
        assert len(stages.get("2", [])) == expected, clip_id
        assert set(stages) <= {"1", "2"}
        n_second += expected > 0
        assert len(set(annotators_of[clip_id])) == len(annotators_of[clip_id])
    assert n_second == summary.n_second_stage > 0
    # A shared pool: annotators label many clips each.
    per_annotator = Counter(row["annotator"] for row in rows)
    assert len(per_annotator) <= 20
    assert max(per_annotator.values()) >= 5


def _vote_accuracy(plans) -> float:
    return float(np.mean([v.label == p.label for p in plans for v in p.votes]))


def test_vote_model_majority_truth_polarity_and_low_agreement_share():
    config = SMALL.model_copy(update={"conflict_share": 0.1})
    plans = _plans(config, clips_per_class=60, second_stage_below=0.6)
    majority_right = sum(
        Counter(v.label for v in p.votes if v.stage == 1).most_common(1)[0][0] == p.label
        for p in plans
    )
    assert majority_right / len(plans) >= 0.95
    low = sum(p.agreement(2 if p.second_stage else 1) < 0.8 for p in plans) / len(plans)
    assert 0.03 <= low <= 0.3
    assert all(p.second_stage == (p.agreement(1) < 0.6) for p in plans)
    wrong = [(p.label, v.label) for p in plans for v in p.votes if v.label != p.label]
    same_polarity = sum(EMOTIONS6[a] == EMOTIONS6[b] for a, b in wrong) / len(wrong)
    assert same_polarity > 0.5
    conflicted = [p for p in plans if p.conflict is not None]
    assert len(conflicted) == round(0.1 * len(plans))
    clear = [p for p in plans if p.conflict is None]
    assert _vote_accuracy(conflicted) < _vote_accuracy(clear)


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    _make(again)
    assert _hashes(again) == _hashes(out)
    other = tmp_path / "other"
    _make(other, seed=SEED + 1)
    assert (other / "annotations.csv").read_bytes() != (out / "annotations.csv").read_bytes()
    assert _hashes(other)["videos/c000000.mp4"] != _hashes(out)["videos/c000000.mp4"]


def test_folder_layout_has_true_labels_and_no_annotations(folder_corpus):
    assert sorted(p.name for p in folder_corpus.iterdir()) == sorted([*EMOTIONS6, "generator.json"])
    truth = {p.clip_id: p.label for p in _plans(SMALL.model_copy(update={"conflict_share": 0.0}))}
    found = {p.stem: p.parent.name for p in folder_corpus.glob("*/*.mp4")}
    assert found == truth


def test_only_both_modalities_name_the_class(folder_corpus):
    design = design_for(list(EMOTIONS6))
    labels, visual, audio = [], [], []
    for video in sorted(folder_corpus.glob("*/*.mp4")):
        frames, samples, rate, _ = _decode(video)
        hues = [h for h in (_frame_hue(f) for f in frames) if h is not None]
        assert len(hues) >= len(frames) // 2, video
        hue_groups = Counter(_nearest_hue_group(h, design.n_visual) for h in hues)
        labels.append(video.parent.name)
        visual.append(hue_groups.most_common(1)[0][0])
        audio.append(_nearest_audio_group(_dominant_hz(samples, rate), design.n_audio, rate))
    # The features recover the designed cells exactly...
    assert all(
        (v, a) in design.cells[label] for v, a, label in zip(visual, audio, labels, strict=True)
    )
    fused = _best_accuracy(list(zip(visual, audio, strict=True)), labels)
    video_only = _best_accuracy(visual, labels)
    audio_only = _best_accuracy(audio, labels)
    # ...the pair names every class, each modality alone at most half / a third of them.
    assert fused == 1.0
    assert video_only <= design.single_modality_cap("visual") + 1e-9 <= 0.5 + 1e-9
    assert audio_only <= design.single_modality_cap("audio") + 1e-9 <= 1 / 3 + 1e-9


def test_conflict_clips_show_a_decoy_for_part_of_the_clip(corpus):
    out, _ = corpus
    design = design_for(list(EMOTIONS6))
    conflicted = [p for p in _plans() if p.conflict is not None]
    assert len(conflicted) == round(SMALL.conflict_share * PER_CLASS * len(EMOTIONS6))
    for plan in conflicted:
        frames, samples, rate, _ = _decode(out / "videos" / f"{plan.clip_id}.mp4")
        conflict = plan.conflict
        assert conflict.decoy_class != plan.label
        assert 0.2 <= (conflict.end_s - conflict.start_s) / plan.duration_s <= 0.45
        inside, outside = [], []
        if conflict.modality == "visual":
            for t, frame in enumerate(frames):
                hue = _frame_hue(frame)
                group = None if hue is None else _nearest_hue_group(hue, design.n_visual)
                time = t / SMALL.fps
                if conflict.start_s + 0.1 <= time < conflict.end_s - 0.1:
                    inside.append(group)
                elif time < conflict.start_s - 0.1 or time >= conflict.end_s + 0.1:
                    outside.append(group)
            true_group = plan.cell[0]
        else:
            hop = rate // 10
            for start in range(0, len(samples) - hop, hop):
                window = samples[start : start + hop]
                group = _nearest_audio_group(_dominant_hz(window, rate), design.n_audio, rate)
                begin, end = start / rate, (start + hop) / rate
                if conflict.start_s + 0.05 <= begin and end <= conflict.end_s - 0.05:
                    inside.append(group)
                elif end <= conflict.start_s - 0.05 or begin >= conflict.end_s + 0.05:
                    outside.append(group)
            true_group = plan.cell[1]
        assert inside and Counter(inside).most_common(1)[0][0] == conflict.decoy_group
        assert Counter(outside).most_common(1)[0][0] == true_group
        assert len(outside) > len(inside)


@pytest.mark.parametrize("name", ["emotions6", "videoemotion8"])
def test_partitions_cap_single_modalities(name):
    design = design_for(list(TAXONOMIES[name]))
    cells = [cell for owned in design.cells.values() for cell in owned]
    assert len(cells) == len(set(cells))  # a cell belongs to one class: the pair is decisive
    assert design.single_modality_cap("visual") <= 0.85
    assert design.single_modality_cap("audio") <= 0.85


def test_the_sample_corpus_design_for_the_released_classes():
    """The bundled sample speaks eMotions' six classes, and still only fusion names them all."""
    design = design_for(list(EMOTIONS6))
    assert design.classes == ("Excitation", "Fear", "Neutral", "Relaxation", "Sadness", "Tension")
    assert (design.n_visual, design.n_audio) == (3, 2)
    assert design.single_modality_cap("visual") == pytest.approx(1 / 2)
    assert design.single_modality_cap("audio") == pytest.approx(1 / 3)
    # Every picture group and every sound group is shared by at least two classes.
    for modality in ("visual", "audio"):
        assert all(len(members) >= 2 for members in design.groups(modality).values())


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7, 9, 12])
def test_any_number_of_classes(k):
    design = design_for([f"k{i}" for i in range(k)])
    cells = [cell for owned in design.cells.values() for cell in owned]
    assert len(cells) == len(set(cells))
    assert all(design.class_of(cell) is not None for cell in cells)
    assert max(design.single_modality_cap(m) for m in ("visual", "audio")) <= 0.85


def test_eight_class_corpus_plans_every_class(tmp_path):
    taxonomy = dict(TAXONOMIES["videoemotion8"])
    plans = plan_corpus(taxonomy, SMALL, clips_per_class=4, seed=3)
    assert Counter(p.label for p in plans) == dict.fromkeys(taxonomy, 4)
    assert all(p.conflict is None or p.conflict.decoy_class in taxonomy for p in plans)


def test_refuses_foreign_directory_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    config = SMALL.model_copy(update={"duration_s": (1.0, 1.0)})
    taxonomy = {"a": "positive", "b": "negative"}
    with pytest.raises(FileExistsError, match="not written by"):
        _make(foreign, taxonomy=taxonomy, config=config, clips_per_class=1)
    assert (foreign / "keep.txt").read_text() == "mine"

    own = tmp_path / "own"
    _make(own, taxonomy=taxonomy, config=config, clips_per_class=1)
    (own / "stray.txt").write_text("old run")
    summary = _make(own, taxonomy=taxonomy, config=config, clips_per_class=1, layout="folder")
    assert not (own / "stray.txt").exists()
    assert summary.n_clips == 2 and sorted(p.name for p in own.iterdir())[-1] == "generator.json"

    # A failing encoder leaves the previous corpus in place and no temporary directory behind.
    before = _hashes(own)
    with pytest.raises(av.error.FFmpegError, match="preset"):
        _make(
            own,
            taxonomy=taxonomy,
            config=config,
            clips_per_class=1,
            video_options={"preset": "no-such-preset"},
        )
    assert _hashes(own) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "own"]


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2 classes"):
        _make(tmp_path / "x", taxonomy={"only": "neutral"})
    with pytest.raises(ValueError, match="folder name"):
        _make(tmp_path / "x", taxonomy={"a/b": "neutral", "c": "neutral"})
    with pytest.raises(ValueError, match="seed"):
        _make(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


def test_make_clip_shapes_for_other_sizes_and_a_visual_decoy():
    design = design_for(list(EMOTIONS6))
    # Excitation owns cell (0, 0); visual group 1 with audio group 0 is Fear's cell (1, 0).
    assert design.class_of((0, 0)) == "Excitation" and design.class_of((1, 0)) == "Fear"
    conflict = Conflict("visual", "Fear", 1, 0.5, 1.0)
    frames, audio = make_clip(
        "Excitation",
        np.random.default_rng(0),
        design=design,
        width=128,
        height=72,
        fps=12,
        duration_s=2.0,
        sample_rate=8000,
        conflict=conflict,
    )
    assert frames.shape == (24, 72, 128, 3) and frames.dtype == np.uint8
    assert audio.shape == (1, 16000) and audio.dtype == np.float32
    groups = [_nearest_hue_group(_frame_hue(f), design.n_visual) for f in frames]
    assert groups[6:12] == [1] * 6 and groups[:6] == [0] * 6 and groups[12:] == [0] * 12
    with pytest.raises(ValueError, match="does not belong"):
        make_clip(
            "Excitation",
            np.random.default_rng(0),
            design=design,
            width=32,
            height=32,
            fps=5,
            duration_s=1.0,
            cell=(1, 1),
        )
