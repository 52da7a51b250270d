"""params.yaml is one schema: the shipped file loads, and mistakes name the offending key."""

from pathlib import Path

import pytest
import torch
import yaml

from emotions.config import ConfigError, load_params, parse_params
from emotions.training.runtime import resolve_compile

REPO = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_shipped_params_load():
    params = load_params(REPO / "params.yaml")
    # The released eMotions classes, in the release's (alphabetical) class order.
    assert list(params.taxonomy_for("emotions").items()) == [
        ("Excitation", "positive"),
        ("Fear", "negative"),
        ("Neutral", "neutral"),
        ("Relaxation", "positive"),
        ("Sadness", "negative"),
        ("Tension", "negative"),
    ]
    assert params.label_aliases_for("emotions") == {"Sad": "Sadness"}
    assert params.datasets["emotions"].variants == ["full", "balanced", "test"]
    assert params.preprocess.crop <= params.preprocess.resize


def test_unknown_key_is_named():
    raw = _raw()
    raw["preprocess"]["num_frame"] = 8
    with pytest.raises(ConfigError, match=r"preprocess\.num_frame: unknown key"):
        parse_params(raw)


def test_wrong_type_is_named():
    raw = _raw()
    raw["ingest"]["workers"] = "many"
    with pytest.raises(ConfigError, match=r"ingest\.workers"):
        parse_params(raw)


def test_unknown_taxonomy_and_layout():
    raw = _raw()
    raw["datasets"]["emotions"]["taxonomy"] = "plutchik"
    with pytest.raises(ConfigError, match="plutchik"):
        parse_params(raw)
    raw = _raw()
    raw["datasets"]["emotions"]["layout"] = "zip"
    with pytest.raises(ConfigError, match=r"datasets\.emotions\.layout"):
        parse_params(raw)


def test_crop_larger_than_resize_is_rejected():
    raw = _raw()
    raw["preprocess"]["crop"] = 200
    with pytest.raises(ConfigError, match="crop"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_unknown_dataset_lookup():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        params.dataset("nope")


def test_shipped_presets_and_their_polarities():
    taxonomies = load_params(REPO / "params.yaml").taxonomies
    ve8 = taxonomies["videoemotion8"]
    assert sorted(name for name, pol in ve8.items() if pol == "positive") == [
        "Anticipation",
        "Joy",
        "Surprise",
        "Trust",
    ]
    assert sorted(name for name, pol in ve8.items() if pol == "negative") == [
        "Anger",
        "Disgust",
        "Fear",
        "Sadness",
    ]
    assert list(taxonomies["ekman6"]) == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert {taxonomies["ekman6"][name] for name in ("joy", "surprise")} == {"positive"}


def test_alias_targets_are_matched_like_labels_and_spelled_as_the_taxonomy():
    raw = _raw()
    raw["label_aliases"] = {"emotions6": {"sad": " sadness", "Calm": "RELAXATION"}}
    assert parse_params(raw).aliases_of("emotions6") == {"sad": "Sadness", "Calm": "Relaxation"}
    assert parse_params(raw).aliases_of("ekman6") == {}


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        (
            {"emotions6": {"Sad": "Sorrow"}},
            r"label_aliases\.emotions6\.Sad: 'Sorrow' is not a class",
        ),
        ({"plutchik": {"Sad": "Sadness"}}, r"label_aliases\.plutchik: not one of taxonomies"),
        # An alias spelled like another class would make one label mean two classes.
        ({"emotions6": {"fear": "Tension"}}, r"'fear' is already the class 'Fear'"),
    ],
)
def test_bad_alias_is_a_clear_error(aliases, message):
    raw = _raw()
    raw["label_aliases"] = aliases
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_compile_is_auto_by_default_and_accepts_true_false():
    assert load_params(REPO / "params.yaml").train.compile == "auto"
    for value in ("auto", True, False):
        raw = _raw()
        raw["train"]["compile"] = value
        assert parse_params(raw).train.compile == value
    raw = _raw()
    raw["train"]["compile"] = "sometimes"
    with pytest.raises(ConfigError, match=r"train\.compile"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("setting", "device", "steps", "compiled"),
    [
        ("auto", "cpu", 10**6, False),
        ("auto", "cuda", None, True),
        ("auto", "cuda", 1500, True),
        ("auto", "cuda", 1499, False),  # the warm-up would not be repaid
        ("auto", "meta", None, False),
        (True, "cpu", 1, True),
        (False, "cuda", 10**6, False),
    ],
)
def test_compile_resolution(setting, device: str, steps: int | None, compiled: bool):
    # torch.device("cuda") is only a name: no GPU is needed to resolve the setting.
    choice = resolve_compile(setting, torch.device(device), steps, min_steps=1500)
    assert bool(choice) is compiled
    if setting == "auto" and device == "cuda" and not compiled:
        assert "train.compile_auto_min_steps" in choice.reason and "1499" in choice.reason


def test_the_paper_run_compiles_on_cuda_and_the_sample_does_not():
    """auto by run length at the presets' own sizes: the paper's 30 epochs of 27,996 clips
    (about 19,600 training clips a split) at batch 32 are long; the sample corpus is short."""
    minimum = parse_params(_raw()).train.compile_auto_min_steps
    paper_steps = 30 * (19_600 // 32)
    sample_steps = 4 * (60 // 8)
    cuda = torch.device("cuda")
    assert resolve_compile("auto", cuda, paper_steps, minimum)
    assert not resolve_compile("auto", cuda, sample_steps, minimum)


def test_compile_mode_is_validated():
    raw = _raw()
    raw["train"]["compile_mode"] = "max-autotune"
    assert parse_params(raw).train.compile_mode == "max-autotune"
    raw["train"]["compile_mode"] = "fastest"
    with pytest.raises(ConfigError, match=r"train\.compile_mode"):
        parse_params(raw)
    raw["train"].update(compile_mode="reduce-overhead", compile_backend="aot_eager")
    with pytest.raises(ConfigError, match=r"needs train\.compile_backend 'inductor'"):
        parse_params(raw)


def test_the_pending_body_budget_must_hold_one_upload():
    """A budget below one upload would refuse every largest upload with 503, forever."""
    raw = _raw()
    raw["serve"].update(max_upload_mb=64, max_pending_body_mb=32)
    with pytest.raises(ConfigError, match=r"serve\.max_pending_body_mb"):
        parse_params(raw)
    raw["serve"]["max_pending_body_mb"] = 64
    assert parse_params(raw).serve.max_pending_body_mb == 64
