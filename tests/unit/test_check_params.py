"""`emotions check_params`, dvc.yaml's first stage: a bad key is one line naming it, no output; a valid
file always gives the same bytes (so a valid edit invalidates no stage after it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from emotions.layout import Layout

REPO = Path(__file__).resolve().parents[2]


def _check(where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["emotions", "check_params"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_typo_is_one_line_naming_the_key_and_writes_nothing(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["lrr"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = _check(tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("emotions check_params: "), lines
    (named,) = [line for line in lines if "train.lrr" in line]
    assert "unknown key" in named and "Traceback" not in result.stderr
    assert not Layout(tmp_path).params_check.exists()


def test_valid_params_always_give_the_same_output(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    outputs = []
    for edit in ("", "\n# a comment\n"):
        (tmp_path / "params.yaml").write_text(text + edit, encoding="utf-8")
        assert _check(tmp_path).returncode == 0
        outputs.append(Layout(tmp_path).params_check.read_bytes())
    assert outputs[0] == outputs[1] != b""
