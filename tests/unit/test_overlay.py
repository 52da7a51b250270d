"""The params overlays (params/*.yaml): each validates, and every way of applying one agrees."""

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
OURS = REPO / "params" / "ours-closest.yaml"
PRESETS = sorted((REPO / "params").glob("*.yaml"))


def test_the_three_presets_are_shipped() -> None:
    assert [p.name for p in PRESETS] == [
        "authors-intended.yaml",
        "authors-published.yaml",
        "ours-closest.yaml",
    ]


def test_ours_closest_validates_with_the_authors_sizes() -> None:
    params, _ = apply_overlay(REPO / "params.yaml", OURS)
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


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_dvc_set_args_give_the_same_params_as_the_merge(tmp_path: Path, preset: Path) -> None:
    copy = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", copy)
    overrides = set_args(read_yaml(copy), read_yaml(preset))
    assert "++model.video.weights_layout=swin2d" in overrides  # absent from params.yaml
    apply_overrides(copy, [o for o in overrides if o != "-S"])  # what `dvc exp run -S` does
    via_dvc = load_params(copy)
    merged, _ = apply_overlay(REPO / "params.yaml", preset)
    assert via_dvc == merged


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_each_preset_validates_through_the_cli(preset: Path, capsys) -> None:
    base = str(REPO / "params.yaml")
    assert main(["--params", base, "params", "--overlay", str(preset)]) == 0
    assert "is valid" in capsys.readouterr().out
    assert main(["--params", base, "params", "--overlay", str(preset), "--set-args"]) == 0
    assert "-S train.epochs=30" in capsys.readouterr().out


def test_every_preset_key_says_where_it_comes_from() -> None:
    """A value line without a comment must continue a comment block (the line above has one);
    section headers (``model:``) carry none."""
    for preset in PRESETS:
        lines = preset.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if not line.strip() or line.lstrip().startswith("#") or line.rstrip().endswith(":"):
                continue
            if "#" not in line:
                assert "#" in lines[number - 1], f"{preset.name}:{number + 1}: {line.strip()}"


def test_the_authors_presets_differ_in_schedule_and_loss_only() -> None:
    published, _ = apply_overlay(REPO / "params.yaml", REPO / "params" / "authors-published.yaml")
    intended, _ = apply_overlay(REPO / "params.yaml", REPO / "params" / "authors-intended.yaml")
    assert (published.train.lr, published.train.schedule.form) == (1.5e-6, "constant")
    assert (published.loss.form, published.loss.w_pol, published.loss.w_opp) == ("soft", 0, 0)
    assert (intended.train.lr, intended.train.schedule.step) == (1.5e-4, "epoch")
    assert intended.loss.form == "reweight"
    assert published.model == intended.model and published.preprocess == intended.preprocess
    same = {"lr", "warmup_epochs", "schedule"}
    assert published.train.model_dump(exclude=same) == intended.train.model_dump(exclude=same)
    m = published.model
    assert (m.fusion, m.head, m.video.per_snippet, m.audio.arch) == (
        "mpam",
        "shared",
        True,
        "authors_resnet34",
    )
    assert (published.train.grad_clip, published.train.precision) == (None, "fp32")
    assert published.train.spatial == "authors"
    assert published.evaluate.protocol == intended.evaluate.protocol == "authors"
    ours, _ = apply_overlay(REPO / "params.yaml", OURS)
    assert ours.evaluate.protocol == "val_selected"


def test_cli_validates_writes_and_prints(tmp_path: Path, capsys) -> None:
    base = str(REPO / "params.yaml")
    assert main(["--params", base, "params", "--overlay", str(OURS)]) == 0
    assert "is valid" in capsys.readouterr().out
    out = tmp_path / "merged.yaml"
    assert main(["--params", base, "params", "--overlay", str(OURS), "--write", str(out)]) == 0
    assert load_params(out) == apply_overlay(base, OURS)[0]
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["model"]["fusion"] == "pyramid"
    capsys.readouterr()
    assert main(["--params", base, "params", "--overlay", str(OURS), "--set-args"]) == 0
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
        main(["--params", str(params), "params", "--overlay", str(OURS), "--write", str(params)])
        == 0
    )
    after = params.read_text(encoding="utf-8")
    for comment in comments:
        assert comment in after, f"comment lost: {comment!r}"
    assert load_params(params) == apply_overlay(REPO / "params.yaml", OURS)[0]
    # Only lines holding an overlay value changed (plus added keys): no re-indent, no re-style.
    old_lines, new_lines = before.splitlines(), after.splitlines()
    removed = [line for line in old_lines if line not in set(new_lines)]
    from emotions.params_overlay import changed

    assert len(removed) <= len(changed(read_yaml(REPO / "params.yaml"), read_yaml(OURS)))
    keys_before = [line.split(":")[0] for line in old_lines if line and not line[0].isspace()]
    keys_after = [line.split(":")[0] for line in new_lines if line and not line[0].isspace()]
    assert keys_after == keys_before  # top-level order kept


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_each_preset_declares_an_emotions_run_on_the_official_lists(preset: Path) -> None:
    """Part 4: the release layout at a root a user fills, the official lists, one run; its
    stages exist beside the sample corpus's (which the preset leaves as they are)."""
    params, _ = apply_overlay(REPO / "params.yaml", preset)
    release = params.datasets["emotions-release"]
    assert (release.layout, release.taxonomy, release.variants) == (
        "release",
        "emotions6",
        ["official"],
    )
    assert Path(release.root).is_absolute() and release.split_index == 1
    assert params.runs["emotions-release-official"].model_dump() == {
        "dataset": "emotions-release",
        "variant": "official",
    }
    base = load_params(REPO / "params.yaml")
    assert (
        set(base.runs) < set(params.runs)
        and base.datasets["emotions"] == params.datasets["emotions"]
    )
    # The command the preset's header prints names this run's stage as dvc.yaml spells it.
    assert "evaluate@emotions-release-official" in preset.read_text(encoding="utf-8")
