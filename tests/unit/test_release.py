"""The eMotions release as its authors publish it: class folders plus UCF101-style split lists.

A generated tree with the six released classes (one folder spelled ``Sad``), list entries with
and without extensions and class indices, two listed clips whose files are missing and one
file no list names, through the real ingest, validation and ``official`` variant.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from realworld import make_clip
from releasetree import RELEASED, build_release_tree

from emotions.cli import main
from emotions.config import (
    ConfigError,
    IngestConfig,
    OfficialVariantConfig,
    ValidateConfig,
    VariantsConfig,
    parse_params,
)
from emotions.corpus.sources import Candidate, Reject, SourceOptions, get_source
from emotions.corpus.sources.splitlists import read_split_lists, video_id_of
from emotions.stages.ingest import ingest, listed_missing_line
from emotions.stages.validate import validate_manifest
from emotions.stages.variants import OfficialLeakWarning, SplitError, make_variants

CONFIG = IngestConfig(workers=2, timeout_s=60.0)
VARIANTS = VariantsConfig(official=OfficialVariantConfig(val=0.34))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    tree = build_release_tree(base / "eMotions")
    handler = _Lines()
    logger = logging.getLogger("emotions.stages.ingest")
    logger.addHandler(handler)
    try:
        result = ingest(
            tree.root,
            base / "out",
            layout="release",
            taxonomy=RELEASED,
            config=CONFIG,
            progress=False,
        )
    finally:
        logger.removeHandler(handler)
    return tree, result, handler.lines


def test_labels_polarities_and_official_split(release):
    tree, result, _ = release
    manifest = result.manifest.set_index("path")
    assert set(manifest.index) == set(tree.clips)
    for path, (name, split, _seed) in tree.clips.items():
        row = manifest.loc[path]
        assert row["label"] == name, path  # "Sad/…" resolves to the released "Sadness"
        assert row["polarity"] == RELEASED[name]
        if split is None:
            assert pd.isna(row["official_split"]), path
        else:
            assert row["official_split"] == split, path
    assert manifest.loc[tree.unlisted, "official_split"] is pd.NA
    assert (manifest["label"] == "Sadness").sum() == 4
    assert manifest["official_split"].value_counts().to_dict() == {"train": 18, "test": 6}


def test_split_folder_is_no_class(release):
    _, result, _ = release
    every = list(result.manifest["path"]) + list(result.quarantine["path"])
    assert not [path for path in every if path.startswith("splits")]


def test_missing_listed_clips_are_counted_and_named(release):
    tree, result, log_lines = release
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert set(reasons) == set(tree.missing)
    assert reasons["Fear/fea_lost.mp4"].startswith("missing file (listed in trainlist01.txt:")
    section = result.stats["official_split"]
    assert section["n_listed_missing"] == 2
    assert {(m["path"], m["split"]) for m in section["listed_missing"]} == set(tree.missing.items())
    assert section["listed"] == {"train": 19, "test": 7}
    assert section["kept"] == {"train": 18, "test": 6, "unlisted": 1}
    assert section["classes"]["5"] == "Sadness"
    # What annotation_stats.json holds on disk, and the log line a user reads.
    assert '"n_listed_missing": 2' in result.stats_path.read_text(encoding="utf-8")
    line = listed_missing_line(result.stats)
    assert line.startswith("2 listed clips missing, e.g. Fear/fea_lost.mp4")
    assert "Tension/ten_lost" in line
    assert any(
        "2 listed clips missing, e.g. Fear/fea_lost.mp4, Tension/ten_lost" in text
        for text in log_lines
    )


def test_official_variant_reproduces_the_lists(release):
    tree, result, _ = release
    split = make_variants(result.manifest, ["official"], config=VARIANTS, seed=3)["official"]
    by_path = dict(zip(split["path"], split["split"], strict=True))
    listed_train = {p for p, (_, s, _) in tree.clips.items() if s == "train"}
    listed_test = {p for p, (_, s, _) in tree.clips.items() if s == "test"}
    assert {p for p, s in by_path.items() if s == "test"} == listed_test
    assert {p for p, s in by_path.items() if s in ("train", "val")} == listed_train
    assert tree.unlisted not in by_path  # no list names it: not part of the official split
    val = split[split["split"] == "val"]
    # Stratified: round(0.34 × 3) = 1 val clip per class, carved from its listed train clips.
    assert val["label"].value_counts().to_dict() == dict.fromkeys(RELEASED, 1)
    again = make_variants(
        result.manifest.sample(frac=1.0, random_state=1), ["official"], config=VARIANTS, seed=3
    )["official"]
    pd.testing.assert_frame_equal(split, again)
    other = make_variants(result.manifest, ["official"], config=VARIANTS, seed=4)["official"]
    assert set(other.loc[other["split"] == "test", "path"]) == listed_test
    no_val = make_variants(
        result.manifest, ["official"], config=VariantsConfig(official={"val": 0.0}), seed=3
    )["official"]
    assert set(no_val.loc[no_val["split"] == "train", "path"]) == listed_train


def test_validation_accepts_the_official_split_column(release, tmp_path):
    _, result, _ = release
    outcome = validate_manifest(
        result.manifest, tmp_path, taxonomy=RELEASED, config=ValidateConfig(min_clips_per_class=3)
    )
    assert outcome.success, outcome.summary
    checked = [row for row in outcome.results if row["column"] == "official_split"]
    assert checked and all(row["success"] for row in checked)
    broken = result.manifest.astype({"official_split": object})
    broken.loc[0, "official_split"] = "dev"
    outcome = validate_manifest(
        broken, tmp_path / "bad", taxonomy=RELEASED, config=ValidateConfig(min_clips_per_class=3)
    )
    assert not outcome.success
    assert "official_split: 1 values that are not an official split" in outcome.summary


def manifest_with_lists(rows: list[tuple[str, str, str | None, str]]) -> pd.DataFrame:
    """(path, label, official_split, visual_hash) rows as a manifest."""
    return pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(len(rows))],
            "path": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "polarity": [RELEASED[r[1]] for r in rows],
            "agreement": 1.0,
            "sha256": [f"{i:064x}" for i in range(len(rows))],
            "visual_hash": [r[3] for r in rows],
            "official_split": pd.array([r[2] for r in rows], dtype="string"),
        }
    )


def test_official_duplicate_across_train_and_test_is_a_warning_with_the_pair():
    rng = np.random.default_rng(0)
    hashes = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 8)]
    near = f"{int(hashes[0], 16) ^ 0b101:016x}"  # 2 bits from the first clip: a re-upload
    rows = [
        ("Fear/a.mp4", "Fear", "train", hashes[0]),
        ("Fear/b.mp4", "Fear", "train", hashes[1]),
        ("Fear/c.mp4", "Fear", "train", hashes[2]),
        ("Fear/copy_of_a.mp4", "Fear", "test", near),
        ("Tension/d.mp4", "Tension", "train", hashes[3]),
        ("Tension/e.mp4", "Tension", "train", hashes[4]),
        ("Tension/f.mp4", "Tension", "test", hashes[5]),
    ]
    with pytest.warns(OfficialLeakWarning, match=r"1 clip pair.*Fear/a\.mp4 ~ Fear/copy_of_a"):
        split = make_variants(manifest_with_lists(rows), ["official"], config=VARIANTS, seed=1)
    by_path = dict(zip(split["official"]["path"], split["official"]["split"], strict=True))
    assert by_path["Fear/copy_of_a.mp4"] == "test"  # the lists are not rewritten
    assert by_path["Fear/a.mp4"] in ("train", "val")
    clean = [r for r in rows if r[0] != "Fear/copy_of_a.mp4"] + [
        ("Fear/g.mp4", "Fear", "test", hashes[6])
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OfficialLeakWarning)
        make_variants(manifest_with_lists(clean), ["official"], config=VARIANTS, seed=1)


def test_official_without_lists_is_a_clear_error():
    rows = [(f"Fear/{i}.mp4", "Fear", None, f"{i:016x}") for i in range(4)]
    with pytest.raises(SplitError, match=r"variant 'official' needs the dataset's split lists"):
        make_variants(manifest_with_lists(rows), ["official"], config=VARIANTS, seed=1)
    without_column = manifest_with_lists(rows).drop(columns="official_split")
    with pytest.raises(SplitError, match="split lists"):
        make_variants(without_column, ["official"], config=VARIANTS, seed=1)
    raw = {
        "taxonomies": {"released": RELEASED},
        "datasets": {
            "mine": {
                "layout": "folder",
                "root": "x",
                "taxonomy": "released",
                "variants": ["official"],
            }
        },
        "ablate": {"dataset": "mine", "variant": "official"},
    }
    with pytest.raises(ConfigError, match="variant 'official' needs split lists"):
        parse_params(raw)
    raw["datasets"]["mine"].update(layout="release", splits="lists", split_index=2)
    dataset = parse_params(raw).dataset("mine")
    assert (dataset.splits, dataset.split_index, dataset.fps) == ("lists", 2, 30.0)


def test_split_list_lines(tmp_path):
    folder = tmp_path / "splits"
    folder.mkdir()
    (folder / "classInd.txt").write_text("1 Fear\n2 Sadness\nthree Tension\n", encoding="utf-8")
    (folder / "trainlist02.txt").write_text(
        "Fear/v.1.mp4 1\nSad/s_01 2\nFear\\win_path.avi\nFear/bad_index 2\nnot-a-path\n"
        "Fear/v.1 1\n",
        encoding="utf-8",
    )
    (folder / "testlist02.txt").write_text("Sadness/s_02.MP4\n", encoding="utf-8")
    source = get_source("release", classes=RELEASED)
    lists = read_split_lists(folder, 2, source.class_key, "splits")
    assert [(e.split, e.class_name, e.video_id) for e in lists.entries] == [
        ("train", "Fear", "v.1"),
        ("train", "Sad", "s_01"),
        ("train", "Fear", "win_path"),
        ("test", "Sadness", "s_02"),
    ]
    problems = {p.path: p.reason for p in lists.problems}
    assert set(problems) == {
        "splits/classInd.txt:3",
        "splits/trainlist02.txt:4",
        "splits/trainlist02.txt:5",
        "splits/trainlist02.txt:6",
    }
    assert (
        "index 2 is 'Sadness' in classInd.txt, not 'Fear'" in problems["splits/trainlist02.txt:4"]
    )
    assert "already listed at trainlist02.txt:1" in problems["splits/trainlist02.txt:6"]
    assert read_split_lists(folder, 1, source.class_key, "splits") is None
    assert video_id_of("Fear/clip.v2") == "clip.v2" and video_id_of("a/b.webm") == "b"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seed=1, audio_channels=1)


def test_videoemotion8_and_ekman6_read_lists_when_present(clip, tmp_path):
    for name in ("Anger/a1.mp4", "Anger/a2.mp4", "Joy/j1.mp4", "lists/trainlist03.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".mp4"):
            shutil.copyfile(clip, tmp_path / name)
    (tmp_path / "lists/trainlist03.txt").write_text("Anger/a1\nJoy/j1.mp4\n", encoding="utf-8")
    (tmp_path / "lists/testlist03.txt").write_text("Anger/a2.mp4\nJoy/gone\n", encoding="utf-8")
    for layout in ("videoemotion8", "ekman6"):
        source = get_source(layout, SourceOptions(splits="lists", split_index=3))
        records = list(source.scan(tmp_path))
        splits = {r.path: r.official_split for r in records if isinstance(r, Candidate)}
        assert splits == {"Anger/a1.mp4": "train", "Anger/a2.mp4": "test", "Joy/j1.mp4": "train"}
        rejects = [r for r in records if isinstance(r, Reject)]
        assert [(r.path, r.official_split) for r in rejects] == [("Joy/gone", "test")]
    # Without lists, the adapters list the class folders as before.
    plain = list(get_source("videoemotion8").scan(tmp_path))
    assert {r.path for r in plain} >= {"Anger/a1.mp4", "Joy/j1.mp4"}
    assert all(r.official_split is None for r in plain)
    named = list(get_source("release", SourceOptions(splits="nowhere")).scan(tmp_path))
    assert any(r.path == "nowhere" and r.reason.startswith("missing file") for r in named)


def test_listed_clip_whose_file_is_quarantined_counts_as_missing(tmp_path):
    root = tmp_path / "root"
    make_clip(root / "Fear/good.mp4", seed=21, audio_channels=1)
    make_clip(root / "Tension/t.mp4", seed=22, audio_channels=1)
    (root / "Fear/empty.mp4").write_bytes(b"")
    (root / "splits").mkdir()
    (root / "splits/trainlist01.txt").write_text("Fear/good\nFear/empty\n", encoding="utf-8")
    (root / "splits/testlist01.txt").write_text("Tension/t.mp4\n", encoding="utf-8")
    result = ingest(
        root,
        tmp_path / "out",
        layout="release",
        taxonomy=RELEASED,
        config=CONFIG,
        progress=False,
    )
    section = result.stats["official_split"]
    assert section["listed_missing"] == [
        {"path": "Fear/empty.mp4", "split": "train", "reason": "empty file"}
    ]
    assert listed_missing_line(result.stats) == (
        "1 listed clips missing, e.g. Fear/empty.mp4 (empty file)"
    )


def test_cli_reads_splits_and_split_index_from_the_dataset_params(
    release, tmp_path, monkeypatch, capsys
):
    tree, _, _ = release
    root = tmp_path / "download"
    shutil.copytree(tree.root, root)
    (root / "splits").rename(root / "lists")
    for split in ("train", "test"):
        (root / f"lists/{split}list01.txt").rename(root / f"lists/{split}list02.txt")
    params = {
        "taxonomies": {"released": RELEASED},
        "datasets": {
            "rel": {
                "layout": "release",
                "root": str(root),
                "taxonomy": "released",
                "splits": "lists",
                "split_index": 2,
                "variants": ["official"],
            }
        },
        "ablate": {"dataset": "rel", "variant": "official"},
        "variants": {"official": {"val": 0.34}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = [
        "ingest",
        "--dataset",
        "rel",
        "--layout",
        "release",
        "--root",
        str(root),
        "--out",
        "artifacts/rel",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ingest: official split 18 train, 6 test clips" in printed
    assert "ingest: 2 listed clips missing, e.g. Fear/fea_lost.mp4" in printed
    assert main(["variants", "--dataset", "rel"]) == 0
    split = pd.read_parquet(tmp_path / "artifacts/rel/variants/official/split.parquet")
    assert split["split"].value_counts().to_dict() == {"train": 12, "test": 6, "val": 6}
