"""The DAG end to end through real DVC: `dvc repro` on a generated corpus, then a no-op rerun.

This is what `make demo` promises on a fresh clone, run on a smaller corpus in a scratch git
repository so the test never touches the developer's own artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    # The package stage's Bento goes to a store beside the scratch repo, not ~/bentoml.
    env["BENTOML_HOME"] = str(cwd.parent / "bentoml-home")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> Path:
    """A git + DVC repository holding our dvc.yaml and code, with a small corpus in data/."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "bentofile.yaml", "pyproject.toml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["synth"]["clips_per_class"] = 6
    params["variants"]["test"]["min_agreement"] = 0.6
    params["validate"]["min_clips_per_class"] = 3
    params["train"].update(epochs=2, batch_size=8)
    params["ablate"].update(epochs=1, cells=[{"modality": "video"}, {"loss": "ce"}])
    (repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["emotions", "synth", "data", "--seed", "3"], repo)
    _run(["dvc", "add", "-q", "data"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "corpus"], repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_dag_then_is_a_no_op(scratch_repo: Path):
    first = _run(["dvc", "repro"], scratch_repo)
    stages = ["check_params", "ingest@emotions", "validate@emotions", "variants@emotions"]
    stages += ["preprocess@emotions"]
    for step in ("train", "evaluate"):
        stages += [f"{step}@emotions-{variant}" for variant in ("full", "balanced", "test")]
    for stage in [*stages, "ablate", "report", "package"]:
        assert f"Running stage '{stage}'" in first.stdout, first.stdout

    artifacts = scratch_repo / "artifacts" / "emotions"
    manifest = pd.read_parquet(artifacts / "manifest.parquet")
    assert len(manifest) == 36
    assert manifest["clip_id"].is_unique
    assert set(manifest["label"]) == {
        "Excitation",
        "Fear",
        "Neutral",
        "Relaxation",
        "Sadness",
        "Tension",
    }
    assert manifest["has_audio"].all()
    result = json.loads((artifacts / "validation" / "result.json").read_text(encoding="utf-8"))
    assert result["success"] is True
    for variant in ("full", "balanced", "test"):
        split = pd.read_parquet(artifacts / "variants" / variant / "split.parquet")
        assert set(split["split"]) == {"train", "val", "test"}
    index = pd.read_parquet(artifacts / "cache" / "index.parquet")
    frames = np.load(artifacts / "cache" / "frames.npy", mmap_mode="r")
    assert len(index) == len(manifest) == frames.shape[0]
    assert (artifacts / "cache" / "_COMPLETE").exists()

    for variant in ("full", "balanced", "test"):
        metrics = json.loads(
            (scratch_repo / "metrics" / "emotions" / f"{variant}.json").read_text()
        )
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["n_test"] > 0
        assert (scratch_repo / "plots" / "emotions" / variant / "confusion.png").stat().st_size > 0
    ablation = json.loads((scratch_repo / "metrics" / "emotions" / "ablation.json").read_text())
    assert [(r["modality"], r["loss"]) for r in ablation] == [("video", "soft"), ("both", "ce")]
    results = (scratch_repo / "reports" / "results.md").read_text(encoding="utf-8")
    assert "| emotions | full | AV-CANet" in results
    assert "| UAR | WAR |" in results and "## Annotations: emotions" in results
    assert (scratch_repo / "artifacts" / "bento.txt").read_text().strip().startswith("emotions")
    shown = _run(["dvc", "metrics", "show"], scratch_repo)
    assert "metrics/emotions/full.json" in shown.stdout
    assert "uar" in shown.stdout and "by_agreement" not in shown.stdout  # the headline only

    second = _run(["dvc", "repro"], scratch_repo)
    assert "Running stage" not in second.stdout, second.stdout
    status = _run(["dvc", "status"], scratch_repo)
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_validate_failure_stops_the_dag_with_a_readable_reason(scratch_repo: Path, tmp_path):
    """A failed critical expectation is a non-zero exit naming what failed, not a traceback."""
    manifest = pd.read_parquet(scratch_repo / "artifacts" / "emotions" / "manifest.parquet")
    manifest.loc[0, "label"] = "bored"
    bad = tmp_path / "manifest.parquet"
    manifest.to_parquet(bad)
    result = _run(
        [
            "emotions",
            "validate",
            "--dataset",
            "emotions",
            "--manifest",
            str(bad),
            "--out",
            str(tmp_path / "validation"),
        ],
        scratch_repo,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "bored" in result.stdout + result.stderr
    assert "failed" in result.stderr


def test_ingest_with_no_usable_clip_exits_non_zero_with_one_line(tmp_path):
    root = tmp_path / "corpus" / "Tension"
    root.mkdir(parents=True)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    result = _run(
        [
            "emotions",
            "--params",
            str(REPO / "params.yaml"),
            "ingest",
            "--layout",
            "folder",
            "--root",
            str(tmp_path / "corpus"),
            "--out",
            str(tmp_path / "out"),
        ],
        tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("emotions ingest: no usable clip"), result.stderr
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert quarantine["path"].tolist() == ["Tension/broken.mp4"]
