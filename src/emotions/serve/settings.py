"""Where the service gets its knobs: params.yaml's ``serve:`` section, then the environment.

The same code runs in three places: `emotions serve` in a checkout, the test suite, and a Bento
(whose working directory is the Bento's own ``src/``, holding a pinned copy of params.yaml).
Deployment-specific values therefore come from environment variables first, so one Bento runs
anywhere without editing files; everything else comes from the validated params.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emotions.config import ConfigError, Params, ServeConfig, load_params

PARAMS_ENV = "EMOTIONS_PARAMS"
MODEL_DIR_ENV = "EMOTIONS_MODEL_DIR"
LOG_ENV = "EMOTIONS_PREDICTION_LOG"
MAX_UPLOAD_ENV = "EMOTIONS_MAX_UPLOAD_MB"
# A temperature.json to apply (default: the model folder's, else the run's calibrate output).
CALIBRATION_ENV = "EMOTIONS_CALIBRATION"


@dataclass(frozen=True)
class ServeSettings:
    """Everything the service needs before it loads a model."""

    config: ServeConfig
    params: Params | None  # None when no params file exists (a bare deployment)
    log_path: Path

    @property
    def max_upload_bytes(self) -> int:
        return int(self.config.max_upload_mb * 1024 * 1024)


def default_model_dir(params: Params, run: str) -> Path:
    """The folder `emotions train --run RUN` writes: artifacts/models/<dataset>/<variant>."""
    spec = params.run(run)
    return Path("artifacts") / "models" / spec.dataset / spec.variant


def load_settings(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Read params (``EMOTIONS_PARAMS``, default ``params.yaml``) and apply env overrides.

    A missing params file is not an error (the defaults of :class:`ServeConfig` apply, and the
    model must then come from ``EMOTIONS_MODEL_DIR``); a params file that exists but is invalid
    is, because serving with half-read settings would hide the typo.
    """
    environ = os.environ if environ is None else environ
    path = Path(environ.get(PARAMS_ENV, "params.yaml"))
    params = load_params(path) if path.is_file() else None
    config = params.serve if params is not None else ServeConfig()
    if MAX_UPLOAD_ENV in environ:
        try:
            limit = float(environ[MAX_UPLOAD_ENV])
        except ValueError:
            raise ConfigError(
                f"{MAX_UPLOAD_ENV}={environ[MAX_UPLOAD_ENV]!r} is not a number"
            ) from None
        config = ServeConfig.model_validate({**config.model_dump(), "max_upload_mb": limit})
    log_path = Path(environ.get(LOG_ENV) or config.log_path).expanduser()
    return ServeSettings(config=config, params=params, log_path=log_path)


@dataclass(frozen=True)
class ModelSource:
    """The model folder to load and how it was chosen (reported by ``GET /model``)."""

    path: Path
    origin: str  # "env", "bentoml", "params"
    tag: str | None = None


def resolve_model(settings: ServeSettings, environ: Mapping[str, str] | None = None) -> ModelSource:
    """``EMOTIONS_MODEL_DIR``, else the pinned BentoML model, else the run's model folder."""
    environ = os.environ if environ is None else environ
    if environ.get(MODEL_DIR_ENV):
        return ModelSource(Path(environ[MODEL_DIR_ENV]), "env")
    if settings.config.model_tag:
        import bentoml

        # Inside a Bento the model store is the Bento's own, so this never leaves the machine.
        model = bentoml.models.get(settings.config.model_tag)
        return ModelSource(Path(model.path), "bentoml", str(model.tag))
    if settings.params is None:
        raise ConfigError(
            f"no model to serve: set {MODEL_DIR_ENV} or run from a folder with params.yaml "
            f"(or point {PARAMS_ENV} at one)"
        )
    return ModelSource(default_model_dir(settings.params, settings.config.run), "params")
