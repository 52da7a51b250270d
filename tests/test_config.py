"""params.yaml is one schema: the shipped file loads, and mistakes name the offending key."""

from pathlib import Path

import pytest
import yaml

from emotions.config import ConfigError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_shipped_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.taxonomy_for("emotions") == {
        "anger": "negative",
        "disgust": "negative",
        "fear": "negative",
        "sadness": "negative",
        "joy": "positive",
        "surprise": "neutral",
    }
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
