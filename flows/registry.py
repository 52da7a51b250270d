"""The model registry of the retrain flow: two small files meant to be committed with git.

- `registry/champion.json`: the model in production — its experiment (name and git rev), the run
  and test split it was measured on, its metrics, when and by which flow run it was promoted.
- `registry/decisions.jsonl`: one JSON line per retrain decision, promoted or not, with both
  metric sets and the reason. Append-only: history is never rewritten.

The champion file is replaced atomically (temp file in the same folder, then os.replace), so a
crash leaves the old champion or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REGISTRY = "registry"
CHAMPION = "champion.json"
DECISIONS = "decisions.jsonl"


class RegistryError(ValueError):
    """A registry file exists but cannot be read."""


def champion_path(repo: Path) -> Path:
    return repo / REGISTRY / CHAMPION


def decisions_path(repo: Path) -> Path:
    return repo / REGISTRY / DECISIONS


def read_champion(repo: Path) -> dict[str, Any] | None:
    """The current champion, or None before the first promotion."""
    path = champion_path(repo)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise RegistryError(f"{path}: not valid JSON ({error}); fix or delete it") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise RegistryError(f"{path}: expected an object with a 'metrics' object")
    return record


def write_champion(repo: Path, record: dict[str, Any]) -> Path:
    path = champion_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
