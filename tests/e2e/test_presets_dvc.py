"""The three presets in params/ as a researcher runs them: `dvc exp run` with the overrides that
`emotions params --overlay … --set-args` prints, then `dvc exp show` side by side (issue 18).

A scratch git + DVC repository (tests/support/flowrepo.py: our dvc.yaml, code and a small
generated corpus) gets the presets in params/. Each preset then runs as an experiment of the
sample corpus's run at a reduced size: the sizes alone are overridden after the preset's own
arguments (frames, widths, one epoch, no weight files, CPU), so every option the preset turns
on runs for real. The preset's eMotions run is part of the experiment's params
but not of the target, so its missing corpus is never read.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from flowrepo import REPO, commit, real_repo, run

TARGET = "evaluate@emotions-full"
PRESETS = ("authors-published", "authors-intended", "ours-closest")


def reduced(base: dict[str, Any]) -> list[str]:
    """`-S` overrides of the sizes only: the baseline's cache (so preprocess is not rerun),
    small widths, one epoch, CPU. `++` adds a key the base params.yaml lacks."""
    pre = base["preprocess"]
    sizes = {
        **{
            f"preprocess.{key}": pre[key]
            for key in ("num_frames", "snippet_frames", "positions", "resize", "crop")
        },
        "preprocess.audio.target_frames": pre["audio"]["target_frames"],
        "model.windows": pre["num_frames"] // pre["snippet_frames"],
        "model.dim": 32,
        "model.heads": 4,
        "model.pyramid_levels": 2,
        "model.mpam_ffn": 64,
        "model.video.arch": "tiny",
        "model.video.weights": "null",
        "model.audio.segments": 8,
        "model.audio.embed": 32,
        "model.audio.weights": "null",
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.accumulate": 2,
        "train.device": "cpu",
        "train.precision": "fp32",
        "train.threads": 1,
    }
    return [arg for key, value in sizes.items() for arg in ("-S", f"++{key}={value}")]


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested metrics as `dvc exp show` names its columns (dotted keys)."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flat(value, f"{prefix}{key}.")
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = real_repo(tmp_path_factory.mktemp("presets") / "repo")
    shutil.copytree(REPO / "params", repo / "params")
    commit(repo, "the presets")  # the baseline; the first experiment builds the cache it shares
    base = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for name in PRESETS:
        # `dvc exp run` leaves its params in the workspace: each preset starts from the baseline
        # (else keys one preset sets and the next does not would carry over).
        run(["git", "checkout", "--", "params.yaml"], repo)
        printed = run(
            ["emotions", "params", "--overlay", f"params/{name}.yaml", "--set-args"], repo
        ).stdout.split()  # what the shell's $(…) gives `dvc exp run`
        assert printed[:2] == ["-S", "seed=1"]
        run(["dvc", "exp", "run", "-n", name, *printed, *reduced(base), TARGET], repo, timeout=900)
    return repo


def _find(tree: Any, name: str) -> dict[str, Any]:
    """The experiment `name`'s row in `dvc exp show --json` (nested lists and dicts)."""
    if isinstance(tree, dict):
        if tree.get("name") == name and "data" in tree:
            return tree["data"]
        tree = list(tree.values())
    for value in tree if isinstance(tree, list) else []:
        if found := _find(value, name):
            return found
    return {}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three experiments of three stages each, and the shared cache
def test_exp_show_lists_the_three_presets_with_both_scores(repo: Path) -> None:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    for name in PRESETS:
        data = _find(shown, name)
        params = data["params"]["params.yaml"]["data"]
        preset = yaml.safe_load((repo / "params" / f"{name}.yaml").read_text(encoding="utf-8"))
        # The preset's options ran (the sizes alone were reduced) and its eMotions run is declared.
        assert params["model"]["fusion"] == preset["model"]["fusion"]
        assert params["loss"]["form"] == preset["loss"]["form"]
        assert params["evaluate"]["protocol"] == preset.get("evaluate", {}).get(
            "protocol", "val_selected"
        )
        assert params["runs"]["emotions-release-official"]["variant"] == "official"
        assert params["datasets"]["emotions-release"]["layout"] == "release"
        scores = {
            key: value
            for metrics in data["metrics"].values()
            if "data" in metrics  # the eMotions run's and the ablation's files are not built
            for key, value in flat(metrics["data"]).items()
        }
        assert 0.0 <= scores["accuracy"] <= 1.0, (name, sorted(scores))
        # The headline: `accuracy` is the val-selected test score (ours, unbiased) and
        # `authors_protocol_accuracy` the best epoch on test, where a preset asks for it.
        if name.startswith("authors"):
            assert 0.0 <= scores["authors_protocol_accuracy"] <= 1.0, (name, sorted(scores))
        else:  # ours: the val-selected score alone
            assert "authors_protocol_accuracy" not in scores

    # The table a user reads: one row per preset, both scores as columns.
    table = run(["dvc", "exp", "show", "--csv"], repo).stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(table))}
    assert set(PRESETS) <= set(rows), table
    theirs = next(c for c in rows[PRESETS[0]] if c.endswith("authors_protocol_accuracy"))
    ours = next(c for c in rows[PRESETS[0]] if c.rsplit(":", 1)[-1] == "accuracy")
    for name in PRESETS:
        assert (rows[name][theirs] != "") == name.startswith("authors"), (name, rows[name])
        assert rows[name][ours] != "", (name, rows[name])
