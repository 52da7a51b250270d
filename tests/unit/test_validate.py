"""The manifest suite: passes clean data, stops on critical faults, only warns on soft ones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotions.config import IngestConfig, ValidateConfig
from emotions.stages.validate import SUITE_NAME, validate_manifest

TAXONOMY = {  # emotions6 of params.yaml
    "Excitation": "positive",
    "Fear": "negative",
    "Neutral": "neutral",
    "Relaxation": "positive",
    "Sadness": "negative",
    "Tension": "negative",
}
CONFIG = ValidateConfig(min_audio_share=0.5, min_clips_per_class=5, max_bad_audio_share=0.05)
# The clip bounds are ingest's (params.yaml ingest.duration_s, fps, min_frames, min_side, ...).
BOUNDS = IngestConfig(duration_s=(0.5, 600.0), fps=(5.0, 240.0), min_frames=4, min_side=32)


def good_manifest(per_class: int = 8, seed: int = 0) -> pd.DataFrame:
    """A manifest as ingest writes it, every value inside the suite's limits."""
    rng = np.random.default_rng(seed)
    labels = [label for label in TAXONOMY for _ in range(per_class)]
    n = len(labels)
    return pd.DataFrame(
        {
            "clip_id": [f"clip{i:04d}" for i in range(n)],
            "path": [f"videos/{label}/clip{i:04d}.mp4" for i, label in enumerate(labels)],
            "label": labels,
            "polarity": [TAXONOMY[label] for label in labels],
            "duration_s": rng.uniform(2.0, 4.0, n),
            "fps": np.full(n, 15.0),
            "n_frames": np.full(n, 45),
            "width": np.full(n, 96),
            "height": np.full(n, 160),
            "has_audio": np.arange(n) % 10 != 0,
            "audio_sample_rate": np.where(np.arange(n) % 10 != 0, 16000, 0),
            "audio_channels": np.where(np.arange(n) % 10 != 0, 1, 0),
            "sha256": [hashlib.sha256(f"clip{i}".encode()).hexdigest() for i in range(n)],
            "agreement": rng.uniform(0.4, 1.0, n),
            "platform": ["douyin", "tiktok", None] * (n // 3) + [None] * (n % 3),
            "visual_hash": [f"{int(value):016x}" for value in rng.integers(0, 2**63, n)],
        }
    )


def run(manifest: pd.DataFrame, out_dir: Path, config: ValidateConfig = CONFIG):
    return validate_manifest(manifest, out_dir, taxonomy=TAXONOMY, config=config, bounds=BOUNDS)


def test_good_manifest_passes_and_writes_result_and_data_docs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "validation"

    outcome = run(good_manifest(), out_dir)

    assert outcome.success, outcome.summary
    assert outcome.summary.splitlines()[0].startswith("manifest passed: 48 clips")
    assert len(outcome.summary.splitlines()) == 1  # no failure lines
    assert all(row["success"] for row in outcome.results)
    assert {row["severity"] for row in outcome.results} == {"critical", "warning"}

    document = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
    assert document["success"] is True
    assert document["summary"] == outcome.summary
    assert document["gx_result"]["suite_name"] == SUITE_NAME
    gx_rows = document["gx_result"]["results"]
    assert len(gx_rows) == len(outcome.results)
    assert {row["expectation_config"]["meta"]["severity"] for row in gx_rows} == {
        "critical",
        "warning",
    }

    index = out_dir / document["data_docs_index"]
    assert index == outcome.docs_index
    assert index.is_file()
    assert SUITE_NAME in index.read_text(encoding="utf-8")
    page = out_dir / document["data_docs_validation_page"]
    assert page.is_file()
    html = page.read_text("utf-8")
    # Our descriptions, not GX's generic prose, label the rows of the page.
    assert "[critical] label: clips of class" in html and "expected ≥ 5" in html

    # Nothing lands in the working directory, and no temporary folders stay behind.
    assert not (tmp_path / "gx").exists()
    assert sorted(path.name for path in out_dir.iterdir()) == ["data_docs", "result.json"]


def test_rerun_replaces_the_data_docs_site(tmp_path):
    out_dir = tmp_path / "validation"
    run(good_manifest(), out_dir)
    run(good_manifest(seed=1), out_dir)
    pages = list((out_dir / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1  # the site shows this run, not an accumulation of earlier ones
    assert sorted(path.name for path in out_dir.iterdir()) == ["data_docs", "result.json"]


def _unknown_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[0, 1, 2], "label"] = "angry"
    return frame


def _duplicate_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1, "clip_id"] = frame.loc[0, "clip_id"]
    frame.loc[3, "sha256"] = frame.loc[2, "sha256"]
    return frame


def _long_clip(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[4, "duration_s"] = 1234.5
    return frame


def _wrong_polarity(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame["label"] == "Excitation", "polarity"] = "negative"
    return frame


def _tiny_class(frame: pd.DataFrame) -> pd.DataFrame:
    fear = frame.index[frame["label"] == "Fear"]
    return frame.drop(fear[2:]).reset_index(drop=True)  # 2 clips of Fear < 5


def _text_duration(frame: pd.DataFrame) -> pd.DataFrame:
    frame["duration_s"] = frame["duration_s"].astype(object)
    frame.loc[0, "duration_s"] = "about three seconds"
    return frame


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["fps"])


@pytest.mark.parametrize(
    ("corrupt", "expected_lines"),
    [
        (
            _unknown_label,
            [
                "[critical] label: 3 values outside the taxonomy (e.g. 'angry')",
                # An unknown label has no polarity in the taxonomy, so the pair check fails too.
                "[critical] polarity: 3 (label, polarity) pairs not in the taxonomy",
            ],
        ),
        (
            _duplicate_ids,
            ["[critical] clip_id: 2 duplicated values", "[critical] sha256: 2 duplicated values"],
        ),
        (_long_clip, ["[critical] duration_s: 1 durations out of range (e.g. 1234.5)"]),
        (
            _wrong_polarity,
            [
                "[critical] polarity: 8 (label, polarity) pairs not in the taxonomy (e.g. ('Excitation'"
            ],
        ),
        (_tiny_class, ["[critical] label: clips of class 'Fear': observed 2, expected ≥ 5"]),
        (_text_duration, ["[critical] duration_s: could not be checked ("]),
        (_missing_column, ["[critical] table: required columns missing: fps"]),
    ],
    ids=[
        "unknown-label",
        "duplicates",
        "duration",
        "polarity",
        "tiny-class",
        "text-in-numbers",
        "missing-column",
    ],
)
def test_critical_failure_is_reported_readably(
    tmp_path, corrupt: Callable[[pd.DataFrame], pd.DataFrame], expected_lines: list[str]
):
    outcome = run(corrupt(good_manifest()), tmp_path / "validation")

    assert not outcome.success
    lines = outcome.summary.splitlines()
    assert lines[0].startswith("manifest FAILED")
    for expected in expected_lines:
        assert any(line.startswith(expected) for line in lines), (expected, outcome.summary)
    # Only the planted fault fails: every failure line is one we expected.
    assert len(lines) - 1 == len(expected_lines), outcome.summary
    document = json.loads((tmp_path / "validation" / "result.json").read_text("utf-8"))
    assert document["success"] is False
    assert (tmp_path / "validation" / "data_docs" / "index.html").is_file()


def test_tiny_class_reports_the_observed_count(tmp_path):
    outcome = run(_tiny_class(good_manifest()), tmp_path)
    row = next(row for row in outcome.results if "'Fear'" in row["what"])
    assert row == {**row, "success": False, "severity": "critical", "observed": 2}
    passing = [row for row in outcome.results if "clips of class" in row["what"] and row["success"]]
    assert sorted(row["observed"] for row in passing) == [8] * 5


def test_warnings_alone_keep_success(tmp_path):
    manifest = good_manifest()
    manifest["has_audio"] = np.arange(len(manifest)) % 5 == 0  # 20 % with audio < 50 %
    manifest["audio_sample_rate"] = 16000
    manifest = manifest[manifest["label"] != "Tension"].reset_index(drop=True)  # class absent

    outcome = run(manifest, tmp_path)

    assert outcome.success, outcome.summary
    lines = outcome.summary.splitlines()
    assert lines[0].startswith("manifest passed") and "2 warning failure(s)" in lines[0]
    assert "[warning] has_audio: share of clips with audio: observed 0.2, expected ≥ 0.5" in lines
    assert "[warning] label: taxonomy classes absent: Tension" in lines
    failed = [row for row in outcome.results if not row["success"]]
    assert {row["severity"] for row in failed} == {"warning"}


def test_bounds_are_ingests_and_mostly_tolerates_a_share_of_broken_audio(tmp_path):
    """Duration, frame count and size are checked against ingest's bounds (no outlier is
    tolerated: ingest quarantined them all); broken audio packets only warn above a share."""
    manifest = good_manifest()
    manifest["audio_bad_packets"] = 0
    manifest.loc[0, "audio_bad_packets"] = 2  # 1 of 48 clips ≈ 2 % < 5 %: tolerated
    assert run(manifest, tmp_path / "one").summary.count("\n") == 0

    manifest.loc[:9, "audio_bad_packets"] = 1  # 10 of 48 ≈ 21 %: a warning, not a stop
    outcome = run(manifest, tmp_path / "many")
    assert outcome.success
    assert "[warning] audio_bad_packets: 10 clips with a broken audio packet" in outcome.summary

    manifest = good_manifest()
    manifest.loc[0, "n_frames"] = 1  # a still image that slipped past ingest
    manifest.loc[1, "width"] = 8
    outcome = validate_manifest(
        manifest, tmp_path / "strict", taxonomy=TAXONOMY, config=CONFIG, bounds=BOUNDS
    )
    assert not outcome.success
    assert "[critical] n_frames: 1 frame counts below the minimum" in outcome.summary
    assert "expected ≥ 4 (ingest.min_frames)" in outcome.summary
    assert "[critical] width: 1 sizes out of range (e.g. 8)" in outcome.summary
