"""`emotions package`: put the served model into the BentoML store, then ``bentoml build``.

The Bento builds from ``bentofile.yaml`` alone (``bentoml build`` in the repository after
training gives the same Bento): the service definition references its model as a
``bentoml.models.BentoModel`` class attribute (:mod:`emotions.serve.service`), which BentoML
pins into the Bento's manifest; the dependencies are pyproject.toml's (listed in
bentofile.yaml, kept equal by a test) with ``lock_packages: false``; the Bento carries the
params.yaml it was built with.

The served model folder becomes a BentoML model, ``avcanet-<run>:<content hash>`` (labels:
run, dataset, variant; metadata: the test metrics), with the run's calibration
(``temperature.json``) and metrics beside the weights. The content hash makes storing
idempotent: the same weights and calibration never become a second model version, which is
why the service can store the checkout's model itself when ``bentoml build`` imports it.
This command only does that step explicitly (for any ``--model`` folder), then the same build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotions.atomic import atomic_write_text

# Files of a model folder that serving needs (last.pt holds optimiser state, dvclive the logs).
MODEL_FILES = ("model.json", "best.pt", "train_summary.json")
METRIC_KEYS = ("accuracy", "weighted_f1", "macro_f1", "polarity_accuracy", "ece", "n_test")


class PackageError(RuntimeError):
    """The Bento cannot be built; the message says why."""


@dataclass(frozen=True)
class PackageResult:
    tag: str  # the Bento, e.g. emotions:abcd1234
    model_tag: str  # the BentoML model inside it, e.g. avcanet-emotions-full:0123abcd...
    path: Path  # the Bento's folder in the BentoML store


def runtime_requirements(pyproject: Path) -> list[str]:
    """``[project].dependencies`` of pyproject.toml, as pip requirement lines."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise PackageError(f"{pyproject}: cannot read [project].dependencies ({error})") from None
    return [str(requirement) for requirement in project.get("dependencies", [])]


def model_name(run: str) -> str:
    """A valid BentoML model name for a run (lower-case, [a-z0-9._-])."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", run.lower()).strip("-._")
    return f"avcanet-{cleaned or 'model'}"


def _content_version(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0")
        with files[name].open("rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def read_model_meta(model_dir: Path) -> dict[str, Any]:
    """model.json of a trained model folder; PackageError when it is not one."""
    meta_path = model_dir / "model.json"
    if not meta_path.is_file() or not (model_dir / "best.pt").is_file():
        raise PackageError(
            f"{model_dir}: not a trained model folder (needs model.json and best.pt; "
            "run `emotions train` or `dvc repro` first)"
        )
    return json.loads(meta_path.read_text(encoding="utf-8"))


def store_model(
    model_dir: Path, metrics_path: Path | None = None, calibration_path: Path | None = None
) -> str:
    """Put the serving files of ``model_dir`` (with the run's metrics and its calibration,
    which must be for these weights) into the BentoML store; returns the model tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    from emotions.calibrate import TEMPERATURE_FILE, CalibrationError, read_calibration

    meta = read_model_meta(model_dir)
    files = {name: model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()}
    if calibration_path is not None:
        try:
            read_calibration(calibration_path, model_dir / "best.pt")
        except CalibrationError as error:
            raise PackageError(str(error)) from None
        files[TEMPERATURE_FILE] = calibration_path
    metrics: dict[str, Any] = {}
    if metrics_path is not None and metrics_path.is_file():
        files["metrics.json"] = metrics_path
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    tag = f"{model_name(str(meta.get('run', model_dir.name)))}:{_content_version(files)}"
    try:
        return str(bentoml.models.get(tag).tag)  # the same weights are packaged already
    except NotFound:
        pass
    labels = {key: str(meta[key]) for key in ("run", "dataset", "variant") if meta.get(key)}
    metadata: dict[str, Any] = {
        "classes": list(meta.get("classes", [])),
        "source": str(model_dir.resolve()),
        **{key: metrics[key] for key in METRIC_KEYS if isinstance(metrics.get(key), int | float)},
    }
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
        for name, path in files.items():
            shutil.copyfile(path, Path(model.path) / name)
    return tag


def run_files(model_dir: Path, meta: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """The run's metrics and calibration where `evaluate` and `calibrate` write them (relative
    to the repository), each None when absent; a calibration for other weights is left out."""
    from emotions.calibrate import CalibrationError, calibration_path, read_calibration

    if not (meta.get("dataset") and meta.get("variant")):
        return None, None
    dataset, variant = str(meta["dataset"]), str(meta["variant"])
    metrics = Path("metrics") / dataset / f"{variant}.json"
    calibration = calibration_path(dataset, variant)
    if calibration.is_file():
        try:
            read_calibration(calibration, model_dir / "best.pt")
        except CalibrationError:
            calibration = None
    return (metrics if metrics.is_file() else None), (
        calibration if calibration and calibration.is_file() else None
    )


def store_run_model(model_dir: Path) -> str:
    """:func:`store_model` with the run's own metrics and calibration files."""
    metrics, calibration = run_files(model_dir, read_model_meta(model_dir))
    return store_model(model_dir, metrics, calibration)


def package(
    model_dir: Path,
    *,
    bentofile: Path = Path("bentofile.yaml"),
    out: Path = Path("artifacts/bento.txt"),
    metrics_path: Path | None = None,
    calibration_path: Path | None = None,
) -> PackageResult:
    """Store the model, run the ``bentoml build`` of ``bentofile`` pinned to it, write the
    Bento's tag to ``out`` (atomically)."""
    from emotions.serve.settings import MODEL_DIR_ENV, MODEL_TAG_ENV

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
    import bentoml

    if not bentofile.is_file():
        raise PackageError(f"{bentofile}: not found (run from the repository root)")
    meta = read_model_meta(model_dir)
    metrics, calibration = run_files(model_dir, meta)
    model_tag = store_model(model_dir, metrics_path or metrics, calibration_path or calibration)
    saved = {key: os.environ.get(key) for key in (MODEL_TAG_ENV, MODEL_DIR_ENV)}
    os.environ[MODEL_TAG_ENV] = model_tag  # what the service's BentoModel attribute references
    os.environ.pop(MODEL_DIR_ENV, None)
    cwd = Path.cwd()
    try:
        bento = bentoml.bentos.build_bentofile(
            str(bentofile.resolve()), build_ctx=str(bentofile.resolve().parent)
        )
    finally:
        os.chdir(cwd)  # loading the service for the build changes directory
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    tag = str(bento.tag)
    atomic_write_text(out, tag + "\n")
    return PackageResult(tag=tag, model_tag=model_tag, path=Path(bento.path))
