"""The model registry of the retrain flow: GTO's git tags for the champion, a log of every round.

- **The champion** is the version of the model artifact in GTO's stage `prod`. The artifact is
  declared in dvc.yaml (`artifacts:`, type `model`, path: the model folder of
  `flow.promote_run`), so `gto show`, `gto history` and `dvc artifacts get . <name> --stage prod`
  see it. Promoting a challenger registers a new version on its experiment commit (the annotated
  tag `<name>@vX.Y.Z`; its message: a summary line, then the challenger's measurement as JSON:
  experiment, run, test metrics, test-split fingerprint) and assigns it `prod` (the tag
  `<name>#prod#N`; its message: why it won). Tags are git's own objects: `git push --tags`
  publishes the registry, and they keep the experiment commit alive after `dvc exp remove`.
  A version registered by hand (`gto register` + `gto assign --stage prod` on any commit) has no
  measurement in its message; the flow then re-scores its model on the current split.
- **`registry/decisions.jsonl`**: one JSON line per round, promoted, kept or failed, with both
  metric sets and the reason. GTO records promotions only: a kept challenger is not worth a
  version (its experiment stays in `dvc exp show`), and a failed round has no commit to tag.
  Append-only: history is never rewritten.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REGISTRY = "registry"
DECISIONS = "decisions.jsonl"
PROD = "prod"
# The tagger of GTO's annotated tags where git has no identity configured (a fresh CI runner).
FALLBACK_AUTHOR = ("emotions-retrain", "retrain@localhost")


class RegistryError(ValueError):
    """The registry cannot be read, or dvc.yaml does not declare the model artifact."""


def decisions_path(repo: Path) -> Path:
    return repo / REGISTRY / DECISIONS


def model_artifact(repo: Path, model_dir: str) -> str:
    """The name of the dvc.yaml artifact whose path is `model_dir` (the promote run's folder)."""
    from dvc.repo import Repo

    wanted = Path(model_dir).as_posix().rstrip("/")
    with Repo(str(repo)) as dvc_repo:
        declared = dvc_repo.artifacts.read()
    names = [
        name
        for artifacts in declared.values()
        for name, artifact in artifacts.items()
        if Path(artifact.path).as_posix().rstrip("/") == wanted
    ]
    if len(names) != 1:
        found = "no artifact" if not names else f"several artifacts ({', '.join(names)})"
        raise RegistryError(
            f"dvc.yaml declares {found} with path {wanted}, the model folder of flow.promote_run; "
            f"declare exactly one under `artifacts:` (type: model, path: {wanted})"
        )
    return names[0]


def _author(repo: Path) -> tuple[str | None, str | None]:
    """(None, None) where git has an identity (GTO uses it), else the fallback tagger."""
    ident = subprocess.run(
        ["git", "var", "GIT_COMMITTER_IDENT"], cwd=repo, capture_output=True, text=True
    )
    return (None, None) if ident.returncode == 0 else FALLBACK_AUTHOR


def _measurement(message: str) -> dict[str, Any] | None:
    """The JSON after the summary line of a registration message (None for hand-made ones)."""
    _, _, body = message.partition("\n\n")
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None


def read_champion(repo: Path, artifact: str) -> dict[str, Any] | None:
    """The version in stage `prod` with its measurement, or None before the first promotion.

    `rev` is always the version's commit (what GTO says), whatever the message claims; a
    version without a measurement comes back with no metrics and no test split, so the flow
    re-scores it.
    """
    import gto.api
    from gto.exceptions import ArtifactNotFound, GTOException

    try:
        in_prod = gto.api.find_versions_in_stage(str(repo), artifact, PROD)
        versions = gto.api.show(str(repo), artifact) if in_prod else []
    except ArtifactNotFound:
        return None
    except GTOException as error:
        raise RegistryError(f"GTO cannot read the registry of {artifact}: {error}") from None
    if not in_prod:
        return None
    current = in_prod[0] if isinstance(in_prod, list) else in_prod
    shown = next((v for v in versions if v["version"] == current.version), {})
    assignment = current.assignments[0] if current.assignments else None
    measured = _measurement(shown.get("message") or "") or {"metrics": {}, "test_split": None}
    return {
        **measured,
        "rev": current.commit_hexsha,
        "version": current.version,
        "tag": shown.get("ref"),
        "assigned": assignment.message if assignment else None,
    }


def promote(
    repo: Path, artifact: str, rev: str, measurement: dict[str, Any], reason: str
) -> dict[str, str]:
    """Register `rev` as the artifact's next version, carrying `measurement`, and assign it
    `prod` with `reason`: the two tags GTO reads back as the champion."""
    import gto.api
    from gto.exceptions import GTOException

    author, email = _author(repo)
    metric = measurement.get("metric")
    score = measurement["metrics"].get(metric) if metric else None
    summary = f"{measurement.get('experiment') or rev[:10]}: run {measurement.get('run')}" + (
        f", {metric} {score:.4f}" if isinstance(score, float) else ""
    )
    message = summary + "\n\n" + json.dumps(measurement, indent=2, sort_keys=True)
    try:
        registration = gto.api.register(
            str(repo), artifact, rev, message=message, author=author, author_email=email
        )
        assignment = gto.api.assign(
            str(repo),
            artifact,
            PROD,
            version=registration.version,
            message=reason,
            author=author,
            author_email=email,
        )
    except GTOException as error:
        raise RegistryError(f"GTO could not promote {rev[:10]} as {artifact}: {error}") from None
    return {
        "artifact": artifact,
        "version": registration.version,
        "version_tag": registration.tag,
        "stage_tag": assignment.tag,
    }


def append_decision(repo: Path, record: dict[str, Any]) -> Path:
    """Append one decision as a single write of one line, flushed to disk."""
    path = decisions_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_decisions(repo: Path) -> list[dict[str, Any]]:
    path = decisions_path(repo)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
