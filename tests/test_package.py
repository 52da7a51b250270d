"""`emotions package`: a real `bentoml build` into a private BentoML home.

The session's small model is packaged from a scratch working directory (its own params.yaml
and a metrics file where `emotions evaluate` would write it), with BENTOML_HOME pointing into
the test's temporary folder so nothing reaches ~/bentoml. The slow test serves the built Bento
and asks it for a prediction, which proves the Bento carries its code and its model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from liveserver import bento_env, free_port, start_server
from smallcorpus import REPO, SmallCorpus

from emotions.inference import Predictor

METRICS = {
    "accuracy": 0.75,
    "weighted_f1": 0.7,
    "macro_f1": 0.68,
    "polarity_accuracy": 0.9,
    "ece": 0.05,
    "n_test": 6,
}


def run(args: list[str], cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        env=bento_env(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def bentoml_json(args: list[str], cwd: Path, home: Path):
    result = run([sys.executable, "-m", "bentoml", *args, "-o", "json"], cwd, home)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model_dir: Path) -> Path:
    where = tmp_path_factory.mktemp("package")
    (where / "params.yaml").write_text(
        (REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    metrics = where / "metrics" / meta["dataset"] / f"{meta['variant']}.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(METRICS), encoding="utf-8")
    return where


@pytest.fixture(scope="module")
def home(workdir: Path) -> Path:
    return workdir / "bentoml-home"


def package(model_dir: Path, workdir: Path, home: Path) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "emotions", "package", "--model", str(model_dir),
        "--bentofile", str(REPO / "bentofile.yaml"), "--out", "artifacts/bento.txt",
    ]  # fmt: skip
    return run(argv, workdir, home)


@pytest.fixture(scope="module")
def built(model_dir: Path, workdir: Path, home: Path) -> str:
    result = package(model_dir, workdir, home)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_package_builds_a_bento_that_carries_the_model(
    built: str, model_dir: Path, workdir: Path, home: Path
):
    tag = built
    assert re.fullmatch(r"emotions:[a-z0-9]+", tag), tag
    assert (workdir / "artifacts" / "bento.txt").read_text(encoding="utf-8") == tag + "\n"
    assert tag in [row["tag"] for row in bentoml_json(["list"], workdir, home)]

    bento = bentoml_json(["get", tag], workdir, home)
    model_tags = [model["tag"] for model in bento["models"]]
    assert len(model_tags) == 1 and model_tags[0].startswith("avcanet-small:")
    assert bento["labels"]["model"] == model_tags[0]
    assert [route["route"] for route in bento["schema"]["routes"]] == ["/predict"]

    model = bentoml_json(["models", "get", model_tags[0]], workdir, home)
    assert model["labels"] == {"run": "small", "dataset": "emotions", "variant": "full"}
    assert {k: model["metadata"][k] for k in METRICS} == METRICS
    stored = home / "models" / model["name"] / model["version"]
    for name in ("model.json", "best.pt", "train_summary.json"):
        assert (stored / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert json.loads((stored / "metrics.json").read_text(encoding="utf-8")) == METRICS
    assert not (stored / "last.pt").exists()  # optimiser state is not shipped

    name, version = tag.split(":")
    root = home / "bentos" / name / version
    assert (root / "src" / "emotions" / "serve" / "service.py").is_file()
    assert (root / "src" / "emotions" / "inference.py").is_file()
    pinned = yaml.safe_load((root / "src" / "params.yaml").read_text(encoding="utf-8"))
    assert pinned["serve"]["model_tag"] == model_tags[0]
    requirements = (root / "env" / "python" / "requirements.txt").read_text(encoding="utf-8")
    project = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    torch_pin = re.search(r'"(torch==[^"]+)"', project).group(1)
    assert torch_pin in requirements.splitlines()


def test_packaging_the_same_weights_again_reuses_the_model(
    built: str, model_dir: Path, workdir: Path, home: Path
):
    again = package(model_dir, workdir, home)
    assert again.returncode == 0, again.stderr[-3000:]
    second = again.stdout.strip().splitlines()[-1]
    assert second != built  # a new Bento ...
    first_model = bentoml_json(["get", built], workdir, home)["models"][0]["tag"]
    second_model = bentoml_json(["get", second], workdir, home)["models"][0]["tag"]
    assert first_model == second_model  # ... on the same model version
    versions = [row["tag"] for row in bentoml_json(["models", "list"], workdir, home)]
    assert versions == [first_model]


def test_package_refuses_a_folder_that_is_not_a_model(workdir: Path, home: Path, tmp_path):
    result = package(tmp_path, workdir, home)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("emotions package: ")
    assert "not a trained model folder" in result.stderr


@pytest.mark.slow
def test_the_bento_serves_its_own_model(
    built: str, model_dir: Path, workdir: Path, home: Path, corpus: SmallCorpus
):
    port = free_port()
    env = bento_env(home, EMOTIONS_PREDICTION_LOG=str(workdir / "bento-predictions.jsonl"))
    argv = [sys.executable, "-m", "bentoml", "serve", built, "--host", "127.0.0.1"]
    server = start_server(
        [*argv, "--port", str(port)],
        port=port,
        cwd=workdir,
        env=env,
        output=workdir / "bento-server.out",
    )
    try:
        info = requests.get(f"{server.url}/model", timeout=30).json()
        model_tag = bentoml_json(["get", built], workdir, home)["models"][0]["tag"]
        assert info["source"]["origin"] == "bentoml"
        assert info["source"]["tag"] == model_tag
        assert info["metrics"] == METRICS
        clip = sorted((corpus.root / "videos").glob("*.mp4"))[0]
        with clip.open("rb") as handle:
            response = requests.post(f"{server.url}/predict", files={"video": handle}, timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = next(Predictor(model_dir).predict_files([clip]))
        assert answer["path"] == clip.name
        assert answer["label"] == expected["label"]
        for name, p in expected["probabilities"].items():
            assert abs(answer["probabilities"][name] - p) < 1e-5
        logged = (workdir / "bento-predictions.jsonl").read_text(encoding="utf-8").splitlines()
        assert json.loads(logged[-1])["model"] == model_tag
    finally:
        server.stop()
