"""The params overlay (params/paper.yaml): it validates, and every way of applying it agrees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from emotions.cli import main
from emotions.config import ConfigError, load_params
from emotions.params_overlay import apply_overlay, merge, read_yaml, set_args

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "params" / "paper.yaml"


def test_paper_preset_validates_with_the_authors_settings() -> None:
    params, _ = apply_overlay(REPO / "params.yaml", PAPER)
    m, loss, train = params.model, params.loss, params.train
    assert (m.fusion, m.windows, m.audio.arch, m.audio.segments) == ("pyramid", 16, "resnet34", 16)
    assert (m.video.arch, m.video.weights_layout) == ("swin3d_t", "swin2d")
    assert (params.preprocess.num_frames, params.preprocess.crop) == (16 * 8, 112)
    assert (loss.form, loss.lambda_.neutral, loss.aux_audio, loss.aux_video) == (
        "reweight",
        0.5,
        1.0,
        1.0,
    )
    assert (train.batch_size, train.accumulate, train.lr, train.weight_decay, train.epochs) == (
        8,
        4,
        1.5e-4,
        0.02,
        30,
    )
    base = load_params(REPO / "params.yaml")
    assert params.serve == base.serve and params.taxonomies == base.taxonomies  # untouched


def test_merge_is_by_key_and_a_bad_key_is_named(tmp_path: Path) -> None:
    assert merge({"a": {"b": 1, "c": [1, 2]}, "d": 0}, {"a": {"c": [3]}}) == {
        "a": {"b": 1, "c": [3]},
        "d": 0,
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  fusoin: pyramid\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.fusoin: unknown key"):
        apply_overlay(REPO / "params.yaml", bad)


def test_dvc_set_args_give_the_same_params_as_the_merge(tmp_path: Path) -> None:
    copy = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", copy)
    overrides = set_args(read_yaml(copy), read_yaml(PAPER))
    assert "++model.video.weights_layout=swin2d" in overrides  # absent from params.yaml
    apply_overrides(copy, [o for o in overrides if o != "-S"])  # what `dvc exp run -S` does
    via_dvc = load_params(copy)
    merged, _ = apply_overlay(REPO / "params.yaml", PAPER)
    assert via_dvc == merged


def test_cli_validates_writes_and_prints(tmp_path: Path, capsys) -> None:
    base = str(REPO / "params.yaml")
    assert main(["--params", base, "params", "--overlay", str(PAPER)]) == 0
    assert "is valid" in capsys.readouterr().out
    out = tmp_path / "merged.yaml"
    assert main(["--params", base, "params", "--overlay", str(PAPER), "--write", str(out)]) == 0
    assert load_params(out) == apply_overlay(base, PAPER)[0]
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["model"]["fusion"] == "pyramid"
    capsys.readouterr()
    assert main(["--params", base, "params", "--overlay", str(PAPER), "--set-args"]) == 0
    assert "-S model.fusion=pyramid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: -1}\n", encoding="utf-8")
    assert main(["--params", base, "params", "--overlay", str(bad)]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_write_keeps_every_comment_and_changes_only_the_overlay_values(tmp_path: Path) -> None:
    """`--write params.yaml` is an edit of the user's file, not a re-dump of it: every comment,
    the key order and flow-style lists survive, and only the overlay's values differ."""
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text(encoding="utf-8")
    comments = [line.split("#", 1)[1].strip() for line in before.splitlines() if "#" in line]
    assert (
        main(["--params", str(params), "params", "--overlay", str(PAPER), "--write", str(params)])
        == 0
    )
    after = params.read_text(encoding="utf-8")
    for comment in comments:
        assert comment in after, f"comment lost: {comment!r}"
    assert load_params(params) == apply_overlay(REPO / "params.yaml", PAPER)[0]
    # Only lines holding an overlay value changed (plus added keys): no re-indent, no re-style.
    old_lines, new_lines = before.splitlines(), after.splitlines()
    removed = [line for line in old_lines if line not in set(new_lines)]
    from emotions.params_overlay import changed

    assert len(removed) <= len(changed(read_yaml(REPO / "params.yaml"), read_yaml(PAPER)))
    keys_before = [line.split(":")[0] for line in old_lines if line and not line[0].isspace()]
    keys_after = [line.split(":")[0] for line in new_lines if line and not line[0].isspace()]
    assert keys_after == keys_before  # top-level order kept
