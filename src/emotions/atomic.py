"""Atomic file writes: readers see the old file or the new one, never half of one.

Every stage output goes through here, so a stage killed mid-write (or a full disk) leaves the
previous output intact and no temporary behind, and DVC never caches a truncated file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Pretty, key-sorted JSON (stable diffs under DVC and git)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")
