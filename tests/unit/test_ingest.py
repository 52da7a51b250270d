"""The ingest stage end to end on real files: what is kept, what is quarantined and why, what is written."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from realworld import build_realworld_tree, make_clip, tree_digest, write_emotions_layout

from emotions.config import IngestConfig, ValidateConfig, load_params
from emotions.stages.ingest import (
    EXTRA_COLUMNS,
    MANIFEST_COLUMNS,
    NoUsableClipsError,
    atomic_write,
    ingest,
    locate,
)

PARAMS = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
EMOTIONS6 = dict(PARAMS.taxonomies["emotions6"])
ALIASES = PARAMS.aliases_of("emotions6")  # Sad → Sadness
CONFIG = IngestConfig(workers=2, timeout_s=60.0)


def run(
    root: Path,
    out: Path,
    layout: str = "folder",
    config: IngestConfig = CONFIG,
    aliases: dict[str, str] = ALIASES,
):
    return ingest(
        root,
        out,
        layout=layout,
        taxonomy=EMOTIONS6,
        config=config,
        aliases=aliases,
        progress=False,
    )


@pytest.fixture(scope="module")
def realworld(tmp_path_factory):
    base = tmp_path_factory.mktemp("realworld")
    tree = build_realworld_tree(base)
    before = tree_digest(tree.root)
    started = time.perf_counter()
    result = run(tree.root, base / "out")
    elapsed = time.perf_counter() - started
    return tree, result, before, elapsed


def test_every_good_clip_is_kept_with_its_facts(realworld):
    tree, result, _, _ = realworld
    manifest = result.manifest.set_index("path")
    assert set(manifest.index) == set(tree.kept), tree.skipped
    for path, expected in tree.kept.items():
        row = manifest.loc[path]
        assert row["label"] == expected.label, path
        assert row["polarity"] == EMOTIONS6[expected.label]
        assert row["duration_s"] == pytest.approx(expected.duration_s, abs=0.15), path
        assert row["fps"] == pytest.approx(expected.fps), path
        assert bool(row["has_audio"]) == expected.has_audio, path
        channels = row["audio_channels"]
        assert (None if pd.isna(channels) else int(channels)) == expected.audio_channels, path
        assert row["rotation"] == expected.rotation, path
        assert row["agreement"] == 1.0 and pd.isna(row["platform"]) and pd.isna(row["n_votes"])
    assert manifest.loc["Fear/hevc_120fps.mp4", "n_frames"] == 120
    assert manifest.loc["Tension/corrupt_audio_packet.mp4", "audio_bad_packets"] >= 1


def test_every_broken_file_is_quarantined_with_its_reason(realworld):
    tree, result, _, _ = realworld
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert set(reasons) == set(tree.quarantined)
    for path, prefix in tree.quarantined.items():
        assert reasons[path].startswith(prefix), (path, reasons[path])
    assert "(also at Excitation/shared.mp4)" in reasons["Tension/shared.mp4"]
    listed = set(reasons) | set(result.manifest["path"])
    assert not listed & tree.ignored  # hidden files and root-level files are not clips
    assert result.stats["quarantine_reasons"]["label conflict"] == 2


def test_manifest_contract(realworld):
    _, result, _, _ = realworld
    manifest = result.manifest
    assert tuple(manifest.columns) == MANIFEST_COLUMNS + EXTRA_COLUMNS
    assert list(manifest["clip_id"]) == sorted(manifest["clip_id"])
    assert (manifest["clip_id"] == manifest["sha256"].str[:16]).all()
    assert manifest["clip_id"].is_unique and manifest["visual_hash"].str.len().eq(16).all()
    assert not manifest["path"].str.contains("\\\\|^/", regex=True).any()
    on_disk = pd.read_parquet(result.manifest_path)
    pd.testing.assert_frame_equal(on_disk, manifest)
    quarantine = pd.read_csv(result.quarantine_path, dtype=str)
    assert list(quarantine.columns) == ["path", "reason"]
    assert sorted(quarantine["path"]) == sorted(result.quarantine["path"])
    assert "Tension/紧张_clip.mp4" in set(on_disk["path"])  # non-ASCII names survive the round trip
    stats = json.loads(result.stats_path.read_text(encoding="utf-8"))
    assert stats["n_clips"] == len(manifest) and stats["n_quarantined"] == len(quarantine)
    assert sum(stats["label_distribution"].values()) == len(manifest)
    leftovers = [p.name for p in result.manifest_path.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary files from the atomic writes


def test_what_ingest_keeps_passes_validation(realworld, tmp_path):
    """Ingest filters by the bounds validate checks (both read ingest.*): stills, single
    frames, 0.2 s blinks, 2 fps slideshows and 10-hour headers never reach the manifest, so
    the duration, rate, frame-count and size expectations pass."""
    from emotions.stages.validate import validate_manifest

    _, result, _, _ = realworld
    outcome = validate_manifest(
        result.manifest,
        tmp_path,
        taxonomy=EMOTIONS6,
        config=ValidateConfig(min_clips_per_class=1),
        bounds=CONFIG,
    )
    assert outcome.success, outcome.summary
    bounded = {"duration_s", "fps", "n_frames", "width", "height"}
    assert {row["column"] for row in outcome.results if row["success"]} >= bounded


def test_root_is_untouched_and_the_stage_is_quick(realworld):
    tree, _, before, elapsed = realworld
    assert tree_digest(tree.root) == before
    assert elapsed < 30


def test_emotions_layout_aggregates_votes(tmp_path):
    root = write_emotions_layout(
        tmp_path / "data",
        {
            "c1": [(1, "Excitation")] * 4 + [(1, "Tension")],
            "c2": [
                *[(1, "Fear"), (1, "fear"), (1, "Sadness"), (1, "Excitation"), (1, "Excitation")],
                *[(2, "Sadness"), (2, "SADNESS"), (2, "Fear")],
            ],
            "c3": [(1, "excited")] * 3 + [(1, "Neutral")] * 2,
            "c4": [(1, "contempt")] * 5,
            "ghost": [(1, "Excitation")] * 5,
        },
        platforms={"c1": "douyin", "c2": "tiktok"},
        videos=("c1", "c2", "c3", "c4", "lonely"),
    )
    result = run(root, tmp_path / "out", layout="emotions")
    manifest = result.manifest.set_index("path")
    assert set(manifest.index) == {"videos/c1.mp4", "videos/c2.mp4", "videos/c3.mp4"}
    c1, c2, c3 = (manifest.loc[f"videos/{c}.mp4"] for c in ("c1", "c2", "c3"))
    assert (c1["label"], c1["agreement"], c1["platform"]) == ("Excitation", 0.8, "douyin")
    assert (c1["n_votes"], c1["deciding_stage"]) == (5, 1)
    assert (c2["label"], c2["deciding_stage"], c2["n_votes"]) == ("Sadness", 2, 8)
    assert c2["agreement"] == pytest.approx(2 / 3)
    assert (c3["label"], c3["agreement"]) == ("Excitation", 0.6)  # "excited" is a synonym
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert reasons["videos/c4.mp4"] == "unknown label 'contempt'"
    assert reasons["videos/lonely.mp4"] == "no annotations"
    assert reasons["videos/ghost"].startswith("missing file")
    stats = json.loads(result.stats_path.read_text(encoding="utf-8"))
    assert stats["votes_per_stage"] == {"1": 15, "2": 3}
    assert stats["clips_sent_to_stage2"] == 1
    assert stats["fleiss_kappa_stage1"]["n_clips"] == 3
    assert stats["fleiss_kappa_stage1"]["raters_per_clip"] == 5
    assert stats["mean_agreement_per_class"]["Excitation"] == pytest.approx(0.7)


def test_declared_aliases_resolve_folders_and_votes(tmp_path):
    """A release's "Sad" folder and the user's own words, through params.yaml label_aliases."""
    root = tmp_path / "root"
    make_clip(root / "Sad/s1.mp4", seed=21)
    make_clip(root / "calm/c1.mp4", seed=22)
    without = run(root, tmp_path / "plain", aliases={})
    assert list(without.manifest["label"]) == ["Sadness"]  # "sad" is also a built-in synonym
    assert list(without.quarantine["reason"]) == ["unknown label 'calm'"]
    aliases = {**ALIASES, "Calm": "Relaxation"}
    with_aliases = run(root, tmp_path / "aliased", aliases=aliases)
    labels = dict(zip(with_aliases.manifest["path"], with_aliases.manifest["label"], strict=True))
    assert labels == {"Sad/s1.mp4": "Sadness", "calm/c1.mp4": "Relaxation"}
    assert with_aliases.manifest.set_index("path").loc["calm/c1.mp4", "polarity"] == "positive"
    assert with_aliases.quarantine.empty
    voted = write_emotions_layout(
        tmp_path / "voted", {"v1": [(1, "CALM")] * 3 + [(1, "Tension")] * 2}, videos=("v1",)
    )
    result = run(voted, tmp_path / "voted_out", layout="emotions", aliases=aliases)
    assert (result.manifest.loc[0, "label"], result.manifest.loc[0, "agreement"]) == (
        "Relaxation",
        0.6,
    )


def test_csv_layout_checks_every_listed_path(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_clip(root / "clips/good.mp4", seed=1)
    make_clip(outside / "secret.mp4", seed=2)
    (root / "manifest.csv").write_text(
        "path,label,platform\n"
        "clips/good.mp4,Excitation,kuaishou\n"
        "./clips/../clips/good.mp4,excitation,\n"  # the same file again, spelt differently
        "../outside/secret.mp4,Fear,\n"
        f"{outside / 'secret.mp4'},Fear,\n"
        "clips/missing.mp4,Tension,\n"
        "clips/good.mp4,contempt,\n",
        encoding="utf-8",
    )
    result = run(root, tmp_path / "out", layout="csv")
    assert list(result.manifest["path"]) == ["clips/good.mp4"]
    assert result.manifest.loc[0, "platform"] == "kuaishou"
    reasons = sorted(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert reasons == [
        ("../outside/secret.mp4", "outside root ('..' leads out)"),
        ("./clips/../clips/good.mp4", "duplicate of clips/good.mp4"),
        (str(outside / "secret.mp4"), "outside root (absolute path)"),
        ("clips/good.mp4", "unknown label 'contempt'"),
        ("clips/missing.mp4", "missing file"),
    ]


def test_locate_resolves_links_and_normalises_paths(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a/clip.mp4").write_bytes(b"x")
    os.symlink(root / "a/clip.mp4", root / "a/inner_link.mp4")
    os.symlink(tmp_path, root / "a/up")
    assert locate(root, "a/./clip.mp4") == ("a/clip.mp4", (root / "a/clip.mp4").resolve())
    assert locate(root, "a/inner_link.mp4")[0] == "a/inner_link.mp4"
    assert locate(root, "a/up/root/a/clip.mp4")[0] == "a/up/root/a/clip.mp4"  # loops back in
    assert locate(root, "a/up/elsewhere.mp4").startswith("outside root (symlink to")
    assert locate(root, "a") == "not a video: not a regular file"


def test_no_usable_clip_is_an_error_but_still_writes_the_quarantine(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "Excitation").mkdir(parents=True)
    (root / "Excitation/empty.mp4").write_bytes(b"")
    (root / "Excitation/junk.mp4").write_bytes(os.urandom(5000))
    out.mkdir()
    (out / "manifest.parquet").write_bytes(b"stale output of an earlier run")
    with pytest.raises(NoUsableClipsError) as caught:
        run(root, out)
    message = str(caught.value)
    assert "\n" not in message and "2 file(s) quarantined" in message
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert sorted(quarantine["path"]) == ["Excitation/empty.mp4", "Excitation/junk.mp4"]
    assert not (out / "manifest.parquet").exists()
    with pytest.raises(NoUsableClipsError, match="not a directory"):
        run(tmp_path / "nowhere", out)
    with pytest.raises(NoUsableClipsError, match="found no candidate clip"):
        run(tmp_path / "out", tmp_path / "out2", layout="ekman6")


def test_a_probe_that_runs_too_long_becomes_a_quarantine_entry(tmp_path):
    """A sparse 8 GiB file takes seconds to hash: with a 1 s budget it must time out, alone."""
    root = tmp_path / "root"
    make_clip(root / "Excitation/fine.mp4", seed=3)
    with open(root / "Excitation/huge.mp4", "wb") as handle:
        handle.truncate(8 * 1024**3)
    config = IngestConfig(workers=2, timeout_s=1.0, max_file_mb=100_000)
    started = time.perf_counter()
    result = run(root, tmp_path / "out", config=config)
    assert time.perf_counter() - started < 20
    assert list(result.manifest["path"]) == ["Excitation/fine.mp4"]
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert reasons == {"Excitation/huge.mp4": "timeout: no result within 1 s"}


def test_output_inside_the_root_is_refused(tmp_path):
    make_clip(tmp_path / "Excitation/a.mp4", seed=4)
    before = tree_digest(tmp_path)
    with pytest.raises(ValueError, match="inside the dataset root"):
        run(tmp_path, tmp_path / "artifacts")
    assert tree_digest(tmp_path) == before


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "manifest.parquet"
    target.write_text("old", encoding="utf-8")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half a ne", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]
    atomic_write(target, lambda tmp: tmp.write_text("new", encoding="utf-8"))
    assert target.read_text(encoding="utf-8") == "new"
