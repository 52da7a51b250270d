"""`emotions package`: put the served model into the BentoML store, then ``bentoml build``.

The Bento builds from ``bentofile.yaml`` alone (``bentoml build`` in the repository after
training gives the same Bento): the service definition references its model as a
``bentoml.models.BentoModel`` class attribute (:mod:`emotions.serve.service`), which BentoML
pins into the Bento's manifest; the dependencies are pyproject.toml's (listed in
bentofile.yaml, kept equal by a test) with ``lock_packages: false``; the Bento carries the
params.yaml it was built with.

The served model folder becomes a BentoML model (:mod:`emotions.serve.model_store`); this
command only does that step explicitly (for any ``--model`` folder), then the same build.

The Bento is also exported beside its tag (``artifacts/bento.tar.gz``, a DVC output; gzip
rather than BentoML's default xz, which compresses far slower): the BentoML store lives
outside the repository, so after ``dvc checkout`` or on another machine the tag may name a
Bento the store lacks; ``bentoml import`` of the archive (``make serve-bento`` does it)
restores exactly the workspace's Bento.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from emotions.atomic import atomic_write, atomic_write_text
from emotions.errors import StageError
from emotions.layout import Layout
from emotions.serve.model_store import ModelStoreError, read_model_meta, run_files, store_model


class PackageError(StageError):
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


def package(
    model_dir: Path,
    *,
    bentofile: Path = Path("bentofile.yaml"),
    out: Path | None = None,
    archive: Path | None = None,
    metrics_path: Path | None = None,
    calibration_path: Path | None = None,
) -> PackageResult:
    """Store the model, run the ``bentoml build`` of ``bentofile`` pinned to it, export the
    Bento to ``archive`` and write its tag to ``out`` (both atomically; defaults
    ``artifacts/bento.tar.gz`` and ``artifacts/bento.txt``)."""
    out = out or Layout().bento_tag
    archive = archive or Layout().bento_archive
    from emotions.serve.settings import MODEL_DIR_ENV, MODEL_TAG_ENV

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
    import bentoml

    if not bentofile.is_file():
        raise PackageError(f"{bentofile}: not found (run from the repository root)")
    try:
        metrics, calibration = run_files(model_dir, read_model_meta(model_dir))
        model_tag = store_model(model_dir, metrics_path or metrics, calibration_path or calibration)
    except ModelStoreError as error:
        raise PackageError(str(error)) from None
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
    # The archive first: a tag on disk always names a Bento whose archive is beside it.
    atomic_write(archive, lambda tmp: bentoml.bentos.export_bento(tag, str(tmp.absolute()), "gz"))
    atomic_write_text(out, tag + "\n")
    return PackageResult(tag=tag, model_tag=model_tag, path=Path(bento.path))


def main(model_dir: Path, *, bentofile: Path, out: Path | None = None) -> None:
    """`emotions package`: the Bento's tag on stdout (what `bentoml serve` takes)."""
    try:
        result = package(model_dir, bentofile=bentofile, out=out)
    except PackageError as error:
        raise StageError(str(error)) from None
    print(result.tag)
