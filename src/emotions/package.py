"""`emotions package`: build the Bento of the service (the `package` stage of dvc.yaml).

The served model folder becomes a BentoML model, ``avcanet-<run>:<content hash>``, in the local
BentoML store (labels: run, dataset, variant; metadata: the test metrics), and the Bento
references it under ``models:``. That is BentoML 1.4's own way to ship weights: the model is a
versioned artefact of its own (``bentoml models list/get``), shared by every Bento built on it,
and ``bentoml containerize`` or a push carries it along. The content hash makes packaging
idempotent: the same weights never become a second model version.

The build context is staged in a temporary folder (see bentofile.yaml): the ``emotions``
package, and params.yaml with ``serve.model_tag`` pinned so the Bento serves exactly that model.
Requirements are pyproject.toml's runtime dependencies with ``lock_packages: false``, so the
build resolves and downloads nothing; it works offline from the installed environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import emotions
from emotions.atomic import atomic_write_text
from emotions.config import parse_params

# Files of a model folder that serving needs (last.pt holds optimiser state, dvclive the logs).
MODEL_FILES = ("model.json", "best.pt", "train_summary.json")
# The Bento's prediction log when EMOTIONS_PREDICTION_LOG is not set: outside the Bento store.
BENTO_LOG_PATH = "~/.local/state/emotions/predictions.jsonl"
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


def store_model(model_dir: Path, metrics_path: Path | None = None) -> str:
    """Put the serving files of ``model_dir`` into the BentoML store; returns the model tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    meta = read_model_meta(model_dir)
    files = {name: model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()}
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


def stage_build_context(
    ctx: Path,
    *,
    bentofile: Path,
    params_path: Path,
    model_tag: str,
    requirements: list[str],
) -> Path:
    """Write the build context into ``ctx``; returns its bentofile."""
    package_dir = Path(emotions.__file__).resolve().parent
    shutil.copytree(
        package_dir, ctx / "emotions", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    raw = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    raw.setdefault("serve", {})
    raw["serve"].update(model_tag=model_tag, log_path=BENTO_LOG_PATH)
    parse_params(raw, f"{params_path} (staged for the Bento)")  # fail here, not at serve time
    (ctx / "params.yaml").write_text(
        "# Staged by `emotions package`: serve.model_tag pins the model of this Bento.\n"
        + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    config = yaml.safe_load(bentofile.read_text(encoding="utf-8")) or {}
    config.setdefault("python", {})
    config["python"]["packages"] = requirements
    config["python"]["lock_packages"] = False
    config["models"] = [model_tag]
    config.setdefault("labels", {})["model"] = model_tag
    staged = ctx / "bentofile.yaml"
    staged.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return staged


def package(
    model_dir: Path,
    *,
    params_path: Path = Path("params.yaml"),
    bentofile: Path = Path("bentofile.yaml"),
    out: Path = Path("artifacts/bento.txt"),
    metrics_path: Path | None = None,
) -> PackageResult:
    """Store the model, build the Bento, write its tag to ``out`` (atomically)."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
    import bentoml

    if not bentofile.is_file():
        raise PackageError(f"{bentofile}: not found (run from the repository root)")
    if not params_path.is_file():
        raise PackageError(f"{params_path}: not found")
    requirements = runtime_requirements(bentofile.resolve().parent / "pyproject.toml")
    meta = read_model_meta(model_dir)
    if metrics_path is None and meta.get("dataset") and meta.get("variant"):
        # Where `emotions evaluate` writes the run's test metrics.
        metrics_path = Path("metrics") / meta["dataset"] / f"{meta['variant']}.json"
    model_tag = store_model(model_dir, metrics_path)
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="emotions-bento-") as tmp:
        ctx = Path(tmp)
        staged = stage_build_context(
            ctx,
            bentofile=bentofile,
            params_path=params_path,
            model_tag=model_tag,
            requirements=requirements,
        )
        try:
            bento = bentoml.bentos.build_bentofile(str(staged), build_ctx=str(ctx))
        finally:
            os.chdir(cwd)  # loading the service for the build may change directory
    tag = str(bento.tag)
    atomic_write_text(out, tag + "\n")
    return PackageResult(tag=tag, model_tag=model_tag, path=Path(bento.path))
