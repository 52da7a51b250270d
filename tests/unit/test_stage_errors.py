"""Every stage run before its input exists (or on a broken one) says so in one line, exit 2.

Exit 2 is what the flows read as "deterministic, do not retry" (flows/dvc_run.py): a traceback
with exit 1 made them retry a missing manifest three times. Each case runs the real command
line in an empty project folder (params.yaml alone); one runs as its own process, to see the
real exit status and that no traceback reaches stderr.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from smallcorpus import run_python

from emotions.cache.format import COMPLETE
from emotions.cli import main
from emotions.config import load_params
from emotions.layout import BEST, META, Layout, RunPaths
from emotions.training.trainer import model_metadata

REPO = Path(__file__).resolve().parents[2]
RUN = "emotions-full"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _incomplete_cache(project: Path) -> None:
    Layout(project).cache("emotions").mkdir(parents=True)


def _bentofile(project: Path) -> None:
    shutil.copy(REPO / "bentofile.yaml", project / "bentofile.yaml")


def _data_folder(project: Path) -> None:
    (project / "data").mkdir()


MISSING = {
    "ingest": (["ingest", "--layout", "emotions", "--root", "data", "--out", "out"], None, "data"),
    "ingest-out-in-root": (
        ["ingest", "--layout", "emotions", "--root", "data", "--out", "data/out"],
        _data_folder,
        "inside the dataset root",
    ),
    "validate": (["validate", "--dataset", "emotions"], None, "no manifest"),
    "variants": (["variants", "--dataset", "emotions"], None, "manifest.parquet: not found"),
    "preprocess": (["preprocess", "--dataset", "emotions"], None, "run the variants stage"),
    "train": (["train", "--run", RUN], None, "no cache here"),
    "train-incomplete-cache": (["train", "--run", RUN], _incomplete_cache, COMPLETE),
    "calibrate": (["calibrate", "--run", RUN], None, "not a trained model folder"),
    "evaluate": (["evaluate", "--run", RUN], None, "not a trained model folder"),
    "ablate": (["ablate"], None, "no cache here"),
    "package": (["package", "--model", "nowhere"], _bentofile, "nowhere"),
    "predict": (["predict", "--model", "nowhere", "x.mp4"], None, "not a trained model folder"),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_a_stage_without_its_input_fails_in_one_line_with_exit_2(
    case: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, prepare, said = MISSING[case]
    if prepare is not None:
        prepare(project)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"emotions {argv[0]}: "), err
    assert said in err
    if (project / "data").is_dir():
        assert list((project / "data").iterdir()) == [], "nothing may be written into the root"


def test_a_truncated_checkpoint_is_one_line_in_predict(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = load_params(project / "params.yaml")
    cache = project / "cache"
    cache.mkdir()
    (cache / "stats.json").write_text(json.dumps({"fbank_mean": 0.0, "fbank_std": 1.0}))
    model_dir = project / "model"
    model_dir.mkdir()
    paths = RunPaths(cache=cache, split=project / "split.parquet", model_dir=model_dir)
    (model_dir / META).write_text(json.dumps(model_metadata(params, RUN, paths)))
    (model_dir / BEST).write_bytes(b"PK\x03\x04 cut short by a full disk")
    assert main(["predict", "--model", str(model_dir), "x.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a loadable checkpoint" in err, err


def test_a_params_error_spanning_keys_is_one_short_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    raw["ingest"]["min_side"] = raw["ingest"]["max_side"] + 1
    raw["preprocess"]["nonsense"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["validate", "--dataset", "emotions"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "min_side" in err and "nonsense" in err, err
    assert len(err) < 400, err  # the keys, not the whole params.yaml


def test_the_process_exits_2_without_a_traceback(project: Path) -> None:
    result = run_python(["-m", "emotions", "variants", "--dataset", "emotions"], project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
