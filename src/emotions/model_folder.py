"""The trained-model folder: what makes one, how to load it, which temperature goes with it.

A folder is a trained model when it holds ``model.json`` (classes, polarity, the model and
preprocess settings it was trained with) and ``best.pt`` (the weights). Train writes it;
evaluate, calibrate, the predictor, package and the service read it, all through here, so the
check and the rebuild are written once. The temperature that calibrates it lives beside it
(``layout.Layout.calibration``) or, in a BentoML model, inside it; either is applied only
when it carries the SHA-256 of these very weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emotions.errors import StageError

if TYPE_CHECKING:
    from emotions.models.avcanet import AVCANet

from emotions.layout import BEST, META, TEMPERATURE, Layout


class ModelFolderError(StageError, FileNotFoundError):
    """A folder that is not a trained model (missing model.json or best.pt)."""


def require(model_dir: str | Path) -> Path:
    """``model_dir`` if it is a trained model folder, else :class:`ModelFolderError`."""
    model_dir = Path(model_dir)
    if not (model_dir / META).is_file() or not (model_dir / BEST).is_file():
        raise ModelFolderError(
            f"{model_dir}: not a trained model folder (needs {META} and {BEST}; "
            "run `emotions train` or `dvc repro` first)"
        )
    return model_dir


def is_model_folder(model_dir: str | Path) -> bool:
    return (Path(model_dir) / META).is_file() and (Path(model_dir) / BEST).is_file()


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of a trained model folder."""
    model_dir = require(model_dir)
    return json.loads((model_dir / META).read_text(encoding="utf-8"))


def weights(model_dir: str | Path) -> Path:
    return Path(model_dir) / BEST


def load(model_dir: str | Path) -> tuple[AVCANet, dict[str, Any]]:
    """The trained AV-CANet (eval mode, on the CPU) and its ``model.json``."""
    from emotions.models.avcanet import AVCANet
    from emotions.models.settings import ModelSettings, without_weights
    from emotions.training.checkpoints import load_checkpoint

    meta = read_meta(model_dir)
    settings = without_weights(ModelSettings.model_validate(meta["model"]))
    model = AVCANet(settings, num_classes=len(meta["classes"]))
    model.load_state_dict(load_checkpoint(weights(model_dir))["model"])
    model.eval()
    return model, meta


def temperature_candidates(
    model_dir: Path, meta: dict[str, Any], root: Path = Path(".")
) -> list[Path]:
    """Where a folder's temperature may be: inside it (a BentoML model from `emotions
    package`), then where the `calibrate` stage writes the run's file under ``root``."""
    candidates = [Path(model_dir) / TEMPERATURE]
    if meta.get("dataset") and meta.get("variant"):
        candidates.append(Layout(root).calibration(str(meta["dataset"]), str(meta["variant"])))
    return candidates


def find_temperature(
    model_dir: Path, meta: dict[str, Any], calibration: str | Path | None = None
) -> tuple[float, str | None]:
    """The temperature to apply and the file it came from (None: T = 1, no file).

    ``calibration`` given: that file, which must match the checkpoint (CalibrationError
    otherwise). Not given: the first of :func:`temperature_candidates` fitted for these
    weights; a discovered file fitted for other weights is ignored, not applied.
    """
    checkpoint = weights(model_dir)
    if calibration is not None:
        record = read_calibration(Path(calibration), checkpoint)
        return float(record["temperature"]), str(calibration)
    for path in temperature_candidates(model_dir, meta):
        if path.is_file():
            try:
                return float(read_calibration(path, checkpoint)["temperature"]), str(path)
            except CalibrationError:
                continue
    return 1.0, None


class CalibrationError(StageError, ValueError):
    """A calibration file that cannot be used (unreadable, or for another checkpoint)."""


def checkpoint_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_calibration(path: Path, checkpoint: Path | None = None) -> dict[str, Any]:
    """A ``temperature.json``; with ``checkpoint``, CalibrationError unless it was fitted for
    exactly those weights."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        temperature = float(record["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CalibrationError(f"{path}: not a calibration file ({error})") from None
    if not np.isfinite(temperature) or temperature <= 0:
        raise CalibrationError(f"{path}: temperature {temperature} is not a positive number")
    if checkpoint is not None and record.get("checkpoint_sha256") != checkpoint_sha256(checkpoint):
        raise CalibrationError(
            f"{path}: fitted for another checkpoint than {checkpoint} "
            "(run `emotions calibrate` or `dvc repro` again)"
        )
    return record
