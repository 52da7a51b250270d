"""The served model in BentoML's model store: ``avcanet-<run>:<content hash>``.

A model folder becomes a BentoML model (labels: run, dataset, variant; metadata: the test
metrics) with the run's calibration and metrics beside the weights. The content hash makes
storing idempotent: the same weights and calibration never become a second model version,
which is why the service can store the checkout's model itself when ``bentoml build`` imports
it, and why the `package` stage can call it again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from emotions import model_folder
from emotions.errors import StageError
from emotions.layout import BEST, META, TEMPERATURE, TRAIN_SUMMARY, Layout

# Files of a model folder that serving needs (last.pt holds optimiser state, dvclive the logs).
MODEL_FILES = (META, BEST, TRAIN_SUMMARY)
METRIC_KEYS = ("accuracy", "weighted_f1", "macro_f1", "polarity_accuracy", "ece", "n_test")
METRICS_FILE = "metrics.json"


class ModelStoreError(StageError):
    """The model cannot be stored; the message says why."""


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
    """model.json of a trained model folder; ModelStoreError when it is not one."""
    try:
        return model_folder.read_meta(model_dir)
    except model_folder.ModelFolderError as error:
        raise ModelStoreError(str(error)) from None


def store_model(
    model_dir: Path, metrics_path: Path | None = None, calibration_path: Path | None = None
) -> str:
    """Put the serving files of ``model_dir`` (with the run's metrics and its calibration,
    which must be for these weights) into the BentoML store; returns the model tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    meta = read_model_meta(model_dir)
    files = {name: model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()}
    if calibration_path is not None:
        try:
            model_folder.read_calibration(calibration_path, model_folder.weights(model_dir))
        except model_folder.CalibrationError as error:
            raise ModelStoreError(str(error)) from None
        files[TEMPERATURE] = calibration_path
    metrics: dict[str, Any] = {}
    if metrics_path is not None and metrics_path.is_file():
        files[METRICS_FILE] = metrics_path
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
    if not (meta.get("dataset") and meta.get("variant")):
        return None, None
    dataset, variant = str(meta["dataset"]), str(meta["variant"])
    # The full record where evaluate wrote one, else the headline scores.
    metrics = Layout().metrics_detail(dataset, variant)
    if not metrics.is_file():
        metrics = Layout().metrics(dataset, variant)
    calibration: Path | None = Layout().calibration(dataset, variant)
    if calibration.is_file():
        try:
            model_folder.read_calibration(calibration, model_folder.weights(model_dir))
        except model_folder.CalibrationError:
            calibration = None
    return (metrics if metrics.is_file() else None), (
        calibration if calibration and calibration.is_file() else None
    )


def store_run_model(model_dir: Path) -> str:
    """:func:`store_model` with the run's own metrics and calibration files."""
    metrics, calibration = run_files(model_dir, read_model_meta(model_dir))
    return store_model(model_dir, metrics, calibration)
