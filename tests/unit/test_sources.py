"""Each layout adapter on a small tree of real clips: what it lists, what it rejects, and how."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import get_args

import pytest
from realworld import make_clip, write_emotions_layout

from emotions.config import Layout, load_params
from emotions.corpus.sources import (
    Candidate,
    Reject,
    available_layouts,
    get_source,
    normalise_label,
)

REPO = Path(__file__).resolve().parents[2]
TAXONOMIES = load_params(REPO / "params.yaml").taxonomies
EMOTIONS6 = dict(TAXONOMIES["emotions6"])  # Excitation, Fear, Neutral, Relaxation, Sadness, Tension
VE8 = dict(TAXONOMIES["videoemotion8"])
EKMAN6 = dict(TAXONOMIES["ekman6"])


def scan(layout: str, root: Path) -> tuple[dict[str, Candidate], dict[str, str]]:
    candidates, rejects = {}, {}
    for record in get_source(layout).scan(root):
        if isinstance(record, Reject):
            rejects[record.path] = record.reason
        else:
            candidates[record.path] = record
    return candidates, rejects


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """One tiny real clip that trees copy around (copies are cheap, encodes are not)."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seed=1, audio_channels=1)


def place(clip: Path, root: Path, *paths: str) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, root / rel)


def test_registry_knows_every_configured_layout():
    assert set(available_layouts()) == set(get_args(Layout))
    for layout in available_layouts():
        assert get_source(layout).name == layout
    with pytest.raises(ValueError, match=r"unknown layout 'nope' \(known layouts: emotions"):
        get_source("nope")


def test_label_normalisation_and_synonyms():
    assert normalise_label("  Happy_Face-Now ") == "happy face now"
    assert normalise_label("ＪＯＹ") == "joy"  # full-width letters
    folder = get_source("folder")
    assert folder.resolve_label(" tension ", EMOTIONS6) == "Tension"  # the taxonomy's spelling
    assert folder.resolve_label("EXCITED", EMOTIONS6) == "Excitation"  # a built-in synonym
    assert folder.resolve_label("sad", EMOTIONS6) == "Sadness"
    assert folder.resolve_label("contempt", EMOTIONS6) is None
    assert folder.resolve_label("happiness", EKMAN6) == "joy"
    # A synonym never overrides a class the taxonomy really has.
    both = {**EKMAN6, "happiness": "positive"}
    assert folder.resolve_label("Happiness", both) == "happiness"


def test_declared_aliases_come_before_built_in_synonyms():
    folder = get_source("folder")
    aliases = {"Scared": "Tension", "Chill": "Relaxation"}
    assert folder.resolve_label("chill", EMOTIONS6) is None
    assert folder.resolve_label("CHILL", EMOTIONS6, aliases) == "Relaxation"
    # The built-in synonym says "scared" is fear; the user's table says otherwise and wins.
    assert folder.resolve_label("scared", EMOTIONS6) == "Fear"
    assert folder.resolve_label("scared", EMOTIONS6, aliases) == "Tension"
    # A class name is never shadowed by an alias, and synonyms still apply next to aliases.
    assert folder.resolve_label("fear", EMOTIONS6, {"fear": "Tension"}) == "Fear"
    assert folder.resolve_label("afraid", EMOTIONS6, aliases) == "Fear"


def test_folder_layout_lists_files_by_class_folder(clip, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    place(clip, root, "tension/a.mp4", "tension/deeper/b.mp4", "Excitation/c.mkv", ".cache/x.mp4")
    place(clip, outside, "elsewhere/d.mp4")
    (root / "excitation_notes.txt").write_text("a file in the root is no clip", encoding="utf-8")
    (root / "Excitation/.DS_Store").write_bytes(b"\0")
    os.symlink(outside / "elsewhere", root / "tension/linked")
    candidates, rejects = scan("folder", root)
    assert {p: c.label for p, c in candidates.items()} == {
        "Excitation/c.mkv": "Excitation",
        "tension/a.mp4": "tension",
        "tension/deeper/b.mp4": "tension",
    }
    assert list(candidates) == sorted(candidates)  # deterministic order
    assert all(c.platform is None and c.votes is None for c in candidates.values())
    assert rejects == {"tension/linked": "outside root (linked folder)"}


def test_videoemotion8_layout_with_capitalised_folders(clip, tmp_path):
    names = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
    place(clip, tmp_path, *(f"{name}/{name.lower()}_001.mp4" for name in names))
    place(clip, tmp_path, "Acceptance/extra.mp4", "Boredom/b.mp4")
    candidates, rejects = scan("videoemotion8", tmp_path)
    assert not rejects
    source = get_source("videoemotion8")
    resolved = {p: source.resolve_label(c.label, VE8) for p, c in candidates.items()}
    assert resolved["Trust/trust_001.mp4"] == "Trust"
    assert resolved["Anticipation/anticipation_001.mp4"] == "Anticipation"
    assert resolved["Acceptance/extra.mp4"] == "Trust"  # Plutchik's mild trust
    assert set(resolved.values()) == set(VE8)
    assert source.dataset_classes == tuple(VE8)


def test_ekman6_layout_maps_happiness_to_joy(clip, tmp_path):
    place(clip, tmp_path, "anger/1.mp4", "Happiness/2.mp4", "surprise /3.mp4", "neutral/4.mp4")
    candidates, _ = scan("ekman6", tmp_path)
    source = get_source("ekman6")
    resolved = {p: source.resolve_label(c.label, EKMAN6) for p, c in candidates.items()}
    assert resolved == {
        "Happiness/2.mp4": "joy",
        "anger/1.mp4": "anger",
        "neutral/4.mp4": None,
        "surprise /3.mp4": "surprise",
    }
    assert source.dataset_classes == tuple(EKMAN6)


def test_csv_layout_reads_paths_labels_and_platforms(clip, tmp_path):
    place(clip, tmp_path, "clips/a.mp4", "clips/b.mp4")
    (tmp_path / "manifest.csv").write_text(
        "path,label,platform\n"
        "clips/a.mp4,Excitation,tiktok\n"
        "clips/b.mp4, tension ,\n"
        ",excitation,\n"  # no path: nothing to list
        "../escape.mp4,Fear,douyin\n",  # listed as given; ingest checks paths
        encoding="utf-8",
    )
    candidates, rejects = scan("csv", tmp_path)
    assert not rejects
    assert {p: (c.label, c.platform) for p, c in candidates.items()} == {
        "clips/a.mp4": ("Excitation", "tiktok"),
        "clips/b.mp4": ("tension", None),
        "../escape.mp4": ("Fear", "douyin"),
    }


def test_csv_layout_without_a_usable_manifest(tmp_path):
    _, rejects = scan("csv", tmp_path)
    assert rejects["manifest.csv"].startswith("missing file")
    (tmp_path / "manifest.csv").write_text("file,class\na.mp4,Excitation\n", encoding="utf-8")
    _, rejects = scan("csv", tmp_path)
    assert (
        rejects["manifest.csv"].startswith("unreadable")
        and "path, label" in rejects["manifest.csv"]
    )


def test_emotions_layout_attaches_votes_and_platforms(tmp_path):
    write_emotions_layout(
        tmp_path,
        {
            "007": [(1, "Excitation"), (1, "Excitation"), (1, "Tension")],
            "008": [(1, "Fear"), (1, "Sadness"), (2, "Fear")],
            "ghost": [(1, "Excitation")],
        },
        platforms={"007": "douyin"},
        videos=("007", "008", "unvoted"),
    )
    candidates, rejects = scan("emotions", tmp_path)
    assert set(candidates) == {"videos/007.mp4", "videos/008.mp4"}
    first = candidates["videos/007.mp4"]
    assert first.label is None and first.platform == "douyin"
    assert list(first.votes.columns) == ["stage", "annotator", "label"]
    assert sorted(first.votes["label"]) == ["Excitation", "Excitation", "Tension"]
    assert sorted(candidates["videos/008.mp4"].votes["stage"]) == ["1", "1", "2"]
    assert candidates["videos/008.mp4"].platform is None
    assert rejects["videos/unvoted.mp4"] == "no annotations"
    assert rejects["videos/ghost"].startswith("missing file")


def test_emotions_layout_without_annotations_rejects_every_video(tmp_path):
    write_emotions_layout(tmp_path, {"a": [(1, "Excitation")], "b": [(1, "Fear")]})
    (tmp_path / "annotations.csv").unlink()
    candidates, rejects = scan("emotions", tmp_path)
    assert not candidates
    assert rejects == {
        "videos/a.mp4": "no annotations (annotations.csv is missing)",
        "videos/b.mp4": "no annotations (annotations.csv is missing)",
    }
    (tmp_path / "annotations.csv").write_text("clip,vote\na,Excitation\n", encoding="utf-8")
    _, rejects = scan("emotions", tmp_path)
    assert all("lacks column(s) clip_id, stage, annotator, label" in r for r in rejects.values())
