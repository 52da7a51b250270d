"""The Bento builds by itself: a plain `bentoml build` of bentofile.yaml after training.

A scratch checkout (bentofile.yaml, pyproject.toml, src/emotions, params.yaml serving the
session's small model, and what train, calibrate and evaluate leave in artifacts/ and
metrics/) is built with the real `bentoml build` into a private BentoML home, so nothing
reaches ~/bentoml. The slow test serves the built Bento by its tag from another folder and
asks it for real clips, which proves the Bento carries its code, its params and its model with
the calibration: the answers equal evaluate's calibrated test probabilities.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml
from calibrated import CALIBRATION
from liveserver import bento_env, free_port, start_server
from smallcorpus import REPO, RUN, SmallCorpus

from emotions.layout import TEMPERATURE as TEMPERATURE_FILE
from emotions.serve.model_store import MODEL_FILES
from emotions.serve.predictor import Predictor
from emotions.stages.package import runtime_requirements


def run(args: list[str], cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        env=bento_env(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def bento_models(bento: dict) -> list[str]:
    """The model tags a Bento pinned: its services' model attributes (and bentofile models)."""
    entries = list(bento.get("models") or [])
    for service in bento.get("services") or []:
        entries += service.get("models") or []
    return list(dict.fromkeys(entry["tag"] for entry in entries))


def bentoml_json(args: list[str], cwd: Path, home: Path):
    result = run([sys.executable, "-m", "bentoml", *args, "-o", "json"], cwd, home)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def calibrated(corpus: SmallCorpus, model_dir: Path, tmp_path_factory):
    from calibrated import calibrate_and_evaluate

    return calibrate_and_evaluate(corpus, model_dir, tmp_path_factory.mktemp("calibrated"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, corpus: SmallCorpus, model_dir: Path, calibrated) -> Path:
    """A repository after `dvc repro` up to evaluate, serving run `small` (emotions/full)."""
    where = tmp_path_factory.mktemp("checkout")
    for name in ("bentofile.yaml", "pyproject.toml"):
        shutil.copyfile(REPO / name, where / name)
    shutil.copytree(
        REPO / "src" / "emotions",
        where / "src" / "emotions",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    raw = corpus.raw_with(CALIBRATION)
    raw["serve"]["run"] = RUN
    (where / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    folder = where / "artifacts" / "models" / "emotions" / "full"
    folder.mkdir(parents=True)
    for name in (*MODEL_FILES, "last.pt"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, folder / name)
    calibration = where / "artifacts" / "calibration" / "emotions" / "full" / TEMPERATURE_FILE
    calibration.parent.mkdir(parents=True)
    shutil.copyfile(calibrated.temperature_file, calibration)
    metrics = where / "metrics" / "emotions" / "full.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(calibrated.metrics), encoding="utf-8")
    return where


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home")


@pytest.fixture(scope="module")
def built(checkout: Path, home: Path) -> str:
    result = run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], checkout, home)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return re.search(r"__tag__:(\S+)", result.stdout).group(1)


def test_bentofile_lists_exactly_the_pyproject_dependencies():
    config = yaml.safe_load((REPO / "bentofile.yaml").read_text(encoding="utf-8"))
    assert config["python"]["packages"] == runtime_requirements(REPO / "pyproject.toml")
    assert config["python"]["lock_packages"] is False
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(d.startswith("torch==") for d in project["project"]["dependencies"])


def test_bentoml_build_alone_pins_the_model_code_params_and_dependencies(
    built: str, checkout: Path, home: Path, model_dir: Path, calibrated
):
    tag = built
    assert re.fullmatch(r"emotions:[a-z0-9]+", tag), tag
    bento = bentoml_json(["get", tag], checkout, home)
    model_tags = bento_models(bento)
    assert len(model_tags) == 1 and model_tags[0].startswith("avcanet-small:"), model_tags
    assert [route["route"] for route in bento["schema"]["routes"]] == ["/predict"]

    model = bentoml_json(["models", "get", model_tags[0]], checkout, home)
    assert model["labels"] == {"run": "small", "dataset": "emotions", "variant": "full"}
    assert model["metadata"]["accuracy"] == calibrated.metrics["accuracy"]
    stored = home / "models" / model["name"] / model["version"]
    for name in ("model.json", "best.pt", "train_summary.json"):
        assert (stored / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert (stored / TEMPERATURE_FILE).read_bytes() == calibrated.temperature_file.read_bytes()
    assert not (stored / "last.pt").exists()  # optimiser state is not shipped

    name, version = tag.split(":")
    root = home / "bentos" / name / version
    assert (root / "src" / "emotions" / "serve" / "service.py").is_file()  # src layout flattened
    assert not (root / "src" / "artifacts").exists()  # the weights travel as a model only
    shipped = sorted(p.relative_to(root / "src").as_posix() for p in (root / "src").rglob("*.yaml"))
    assert shipped == ["bentofile.yaml", "params.yaml"]
    assert (root / "src" / "params.yaml").read_bytes() == (checkout / "params.yaml").read_bytes()
    requirements = (root / "env" / "python" / "requirements.txt").read_text(encoding="utf-8")
    for requirement in runtime_requirements(REPO / "pyproject.toml"):
        assert requirement in requirements.splitlines(), requirement


def test_emotions_package_is_the_same_build_on_the_same_model(
    built: str, checkout: Path, home: Path
):
    result = run([sys.executable, "-m", "emotions", "package"], checkout, home)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = result.stdout.strip().splitlines()[-1]
    assert (checkout / "artifacts" / "bento.txt").read_text(encoding="utf-8") == tag + "\n"
    assert tag != built  # a new Bento ...
    (first,) = bento_models(bentoml_json(["get", built], checkout, home))
    (second,) = bento_models(bentoml_json(["get", tag], checkout, home))
    assert first == second  # ... on the same model version (content-addressed)
    assert [row["tag"] for row in bentoml_json(["models", "list"], checkout, home)] == [first]


def test_a_store_without_the_bento_gets_it_back_from_the_archive(
    checkout: Path, home: Path, tmp_path
):
    """`artifacts/bento.txt` can name a Bento the store lacks (another machine, `dvc checkout`
    of another experiment): the DVC-tracked archive beside it is that Bento, model included."""
    result = run([sys.executable, "-m", "emotions", "package"], checkout, home)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = (checkout / "artifacts" / "bento.txt").read_text(encoding="utf-8").strip()
    archive = checkout / "artifacts" / "bento.tar.gz"
    assert archive.is_file() and not list(archive.parent.glob(".*.tmp"))
    (model,) = bento_models(bentoml_json(["get", tag], checkout, home))
    fresh = tmp_path / "fresh-home"
    missing = run([sys.executable, "-m", "bentoml", "get", tag], checkout, fresh)
    assert missing.returncode != 0
    imported = run([sys.executable, "-m", "bentoml", "import", str(archive)], checkout, fresh)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert bento_models(bentoml_json(["get", tag], checkout, fresh)) == [model]


def test_package_refuses_a_folder_that_is_not_a_model(checkout: Path, home: Path, tmp_path):
    result = run(
        [sys.executable, "-m", "emotions", "package", "--model", str(tmp_path)], checkout, home
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("emotions package: ")
    assert "not a trained model folder" in result.stderr


@pytest.mark.slow
def test_the_built_bento_serves_calibrated_answers_from_the_store(
    built: str, home: Path, model_dir: Path, corpus: SmallCorpus, calibrated, tmp_path
):
    port = free_port()
    log = tmp_path / "bento-predictions.jsonl"
    argv = [sys.executable, "-m", "bentoml", "serve", built, "--host", "127.0.0.1"]
    server = start_server(
        [*argv, "--port", str(port)],
        port=port,
        cwd=tmp_path,  # not the checkout: everything comes from the store
        env=bento_env(home, EMOTIONS_PREDICTION_LOG=str(log)),
        output=tmp_path / "bento-server.out",
    )
    try:
        index = requests.get(f"{server.url}/", timeout=30)
        assert index.status_code == 200 and "swagger" in index.text.lower()  # the Swagger UI
        info = requests.get(f"{server.url}/model", timeout=30).json()
        (model_tag,) = bento_models(bentoml_json(["get", built], tmp_path, home))
        assert info["source"]["origin"] == "bentoml"
        assert info["source"]["tag"] == model_tag
        assert info["calibration"]["temperature"] == calibrated.record["temperature"] != 1.0
        assert info["metrics"]["accuracy"] == calibrated.metrics["accuracy"]

        evaluated = pd.read_parquet(calibrated.predictions)
        where = pd.read_parquet(corpus.paths(model_dir).cache / "index.parquet")
        where = where.set_index("clip_id")["path"]
        classes = calibrated.metrics["confusion_matrix"]["classes"]
        clip = corpus.root / where[evaluated["clip_id"].iloc[0]]
        with clip.open("rb") as handle:
            response = requests.post(f"{server.url}/predict", files={"video": handle}, timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["path"] == clip.name
        for name in classes:
            want = float(evaluated[f"p_{name}"].iloc[0])
            assert math.isclose(answer["probabilities"][name], want, abs_tol=1e-5), name
        expected = next(
            Predictor(model_dir, calibration=calibrated.temperature_file).predict_files([clip])
        )
        assert answer["label"] == expected["label"]
        assert json.loads(log.read_text(encoding="utf-8").splitlines()[-1])["model"] == model_tag
    finally:
        server.stop()
