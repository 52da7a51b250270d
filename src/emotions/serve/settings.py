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

from emotions import model_folder
from emotions.config import ConfigError, IngestConfig, Params, ServeConfig, load_params
from emotions.layout import Layout
from emotions.media.clipcheck import ClipBounds

PARAMS_ENV = "EMOTIONS_PARAMS"
MODEL_DIR_ENV = "EMOTIONS_MODEL_DIR"
LOG_ENV = "EMOTIONS_PREDICTION_LOG"
MAX_UPLOAD_ENV = "EMOTIONS_MAX_UPLOAD_MB"
# A temperature.json to apply (default: the model folder's, else the run's calibrate output).
CALIBRATION_ENV = "EMOTIONS_CALIBRATION"
# A BentoML model tag to serve (overrides serve.model_tag; `emotions package` builds with it).
MODEL_TAG_ENV = "EMOTIONS_MODEL_TAG"
# The prediction log of a Bento whose params name a relative path (which would land in the
# Bento store) and no EMOTIONS_PREDICTION_LOG is set.
BENTO_LOG_PATH = "~/.local/state/emotions/predictions.jsonl"
BENTO_YAML = "bento.yaml"


def bento_root(cwd: Path | None = None) -> Path | None:
    """The Bento this process serves from, or None in a checkout.

    BentoML imports a Bento's service with the working directory set to the Bento's ``src/``,
    beside its ``bento.yaml`` manifest (in the store and in a container alike).
    """
    cwd = Path.cwd() if cwd is None else cwd
    return cwd.parent if (cwd.parent / BENTO_YAML).is_file() else None


def pinned_model_tag(root: Path, name: str | None = None) -> str | None:
    """The model version a built Bento pinned (``models:`` of its bento.yaml): the one named
    ``name`` if given and present, else the only one."""
    import yaml

    manifest = yaml.safe_load((root / BENTO_YAML).read_text(encoding="utf-8")) or {}
    # A service's model attributes are listed under services[].models, bentofile ones on top.
    entries = list(manifest.get("models") or [])
    for service in manifest.get("services") or []:
        entries += service.get("models") or []
    tags = list(dict.fromkeys(str(m["tag"]) for m in entries if isinstance(m, dict)))
    named = [tag for tag in tags if name and tag.split(":")[0] == name]
    if named:
        return named[0]
    return tags[0] if len(tags) == 1 else None


@dataclass(frozen=True)
class ServeSettings:
    """Everything the service needs before it loads a model."""

    config: ServeConfig
    params: Params | None  # None when no params file exists (a bare deployment)
    log_path: Path

    @property
    def max_upload_bytes(self) -> int:
        return int(self.config.max_upload_mb * 1024 * 1024)

    @property
    def clip_bounds(self) -> ClipBounds:
        """Ingest's clip bounds (params.yaml ``ingest``): the service takes what training
        would have taken, judged by the same function."""
        return ClipBounds.of(self.params.ingest if self.params is not None else IngestConfig())


def default_model_dir(params: Params, run: str) -> Path:
    """The folder `emotions train --run RUN` writes."""
    spec = params.run(run)
    return Layout().model_dir(spec.dataset, spec.variant)


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
    if LOG_ENV not in environ and not log_path.is_absolute() and bento_root() is not None:
        log_path = Path(BENTO_LOG_PATH).expanduser()
    if environ.get(MODEL_TAG_ENV):
        config = ServeConfig.model_validate(
            {**config.model_dump(), "model_tag": environ[MODEL_TAG_ENV]}
        )
    return ServeSettings(config=config, params=params, log_path=log_path)


def served_model_tag(
    settings: ServeSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The BentoML model the service references (its ``bentoml.models.BentoModel``), or None
    when it serves a plain folder (``EMOTIONS_MODEL_DIR``, or no trained model here).

    In order: ``EMOTIONS_MODEL_TAG`` / ``serve.model_tag``; inside a Bento, the version its
    bento.yaml pinned at build time; in a checkout, the served run's model folder, put into
    the local model store (idempotent: the version is the content hash of the weights, the
    calibration and the metrics), so a plain ``bentoml build`` after training pins exactly
    the weights in ``artifacts/models/``.
    """
    environ = os.environ if environ is None else environ
    if environ.get(MODEL_DIR_ENV):
        return None
    if settings.config.model_tag:
        return settings.config.model_tag
    from emotions.serve.model_store import model_name, store_run_model

    name = model_name(settings.config.run)
    root = bento_root()
    if root is not None:
        return pinned_model_tag(root, name)
    if settings.params is None:
        return None
    model_dir = default_model_dir(settings.params, settings.config.run)
    if not model_folder.is_model_folder(model_dir):
        return None
    return store_run_model(model_dir)


@dataclass(frozen=True)
class ModelSource:
    """The model folder to load and how it was chosen (reported by ``GET /model``)."""

    path: Path
    origin: str  # "env", "bentoml", "params"
    tag: str | None = None


def resolve_model(
    settings: ServeSettings,
    environ: Mapping[str, str] | None = None,
    *,
    model_tag: str | None = None,
) -> ModelSource:
    """``EMOTIONS_MODEL_DIR``, else the BentoML model (``model_tag``, default
    ``serve.model_tag``), else the run's model folder."""
    environ = os.environ if environ is None else environ
    if environ.get(MODEL_DIR_ENV):
        return ModelSource(Path(environ[MODEL_DIR_ENV]), "env")
    model_tag = model_tag or settings.config.model_tag
    if model_tag:
        import bentoml

        # Inside a Bento the model store is the Bento's own, so this never leaves the machine.
        model = bentoml.models.get(model_tag)
        return ModelSource(Path(model.path), "bentoml", str(model.tag))
    if settings.params is None:
        raise ConfigError(
            f"no model to serve: set {MODEL_DIR_ENV} or run from a folder with params.yaml "
            f"(or point {PARAMS_ENV} at one)"
        )
    return ModelSource(default_model_dir(settings.params, settings.config.run), "params")
