"""benchmarks/train.py runs on a CPU as the issue's reader will run it, its jpeg inputs included.

The benchmark is a script, so it runs as one (a subprocess with the repository's interpreter):
what is checked is its JSON record and its refusal, not its figures.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from smallcorpus import run_python

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "train.py"


def bench(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_python([str(SCRIPT), "--cpu", *args], tmp_path)


def test_each_input_is_a_row_of_the_real_train_step(tmp_path: Path) -> None:
    """pool, a jpeg cache decoded in the loader, and one decoded in the step: one row each,
    the loader's frames named, every row a real step (clips/s, a data-wait share)."""
    record = tmp_path / "rows.json"
    done = bench(
        "--attention",
        "sdpa",
        "--presets",
        "tiny",
        "--modes",
        "eager",
        "--precisions",
        "fp32",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--workers",
        "0",
        "--input",
        "pool,jpeg,jpeg-device",
        "--json",
        str(record),
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(record.read_text())["rows"]
    assert [r["frames_from"] for r in rows] == ["pool", "jpeg", "jpeg-device"]
    for row in rows:
        assert row["input"] == "loader" and row["steps"] == 2
        assert row["clips_per_s"] > 0 and 0 <= row["data_wait_share"] < 1
    assert "loader, jpeg-device (0 w)" in done.stdout


def test_an_overlay_preset_on_a_cpu_needs_allow_slow(tmp_path: Path) -> None:
    done = bench("--overlay", str(REPO / "params" / "ours-closest.yaml"), tmp_path=tmp_path)
    assert done.returncode == 2
    assert "--allow-slow" in done.stderr
