"""Atomic file writes: readers see the old file or the new one, never half of one.

Every stage output goes through here, so a stage killed mid-write (or a full disk) leaves the
previous output intact and no temporary behind, and DVC never caches a truncated file. The
temporary is fsynced before the rename and the folder after it: without that, a power loss can
leave a renamed but empty file (the rename reaches the disk before the data).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temporary(path: Path, pid: int | None = None) -> Path:
    """The temporary a write of ``path`` by process ``pid`` (default: this one) goes through."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        write(tmp)
        fsync_path(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as error:
        # e.g. a writer's flush on a full disk: say which file (only on errors from the OS,
        # whose message str() rebuilds from errno and filename; others keep their text).
        if error.filename is None and error.errno is not None:
            error.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporaries in ``folder`` of writes whose process is gone (a SIGKILL skips
    the cleanup above), so DVC never commits one into an output; returns what went."""
    folder = Path(folder)
    removed = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else ():
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue  # a live writer's: not ours to delete
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_folder(folder: Path) -> None:
    """fsync a folder after a rename in it; some filesystems cannot, and the renamed files
    themselves are on disk by then, so a refusal is ignored."""
    with contextlib.suppress(OSError):
        fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def fsync_path(path: Path, flags: int) -> None:
    """fsync the file or folder at ``path``, opened with ``flags``."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Pretty, key-sorted JSON (stable diffs under DVC and git)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")
