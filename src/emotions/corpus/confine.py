"""Paths that come from data stay under their root: the one check every reader uses.

A path written in data (a task's local-files URL, its clip id or queue folder, a queue row, a
layout's file or frame folder, a picture or sound inside one) is joined to the folder it must
stay in and resolved with every symlink at any depth; what it finally names must lie under
that folder's own resolved place. ``..``, absolute paths and links out are all the same
escape, and the caller opens the resolved path it was given back, so what was checked is what
is read (no second lookup a swapped link could redirect).
"""

from __future__ import annotations

import os
from pathlib import Path

from emotions.errors import StageError

OUTSIDE = "outside root"


class OutsideRootError(StageError):
    """A path from data leads out of the folder it must stay in; the message names both."""


def escape_reason(root: str | Path, path: str | Path, *, what: str = "") -> str | None:
    """None when ``path`` (relative to ``root``, or absolute) stays under ``root`` once
    resolved, else the quarantine reason: ``outside root (<what>: <how>)``."""
    said = f"{what}: " if what else ""
    try:
        root_abs = Path(os.path.abspath(root))
        listed = Path(path)
        joined = Path(os.path.normpath(listed if listed.is_absolute() else root_abs / listed))
        resolved = joined.resolve()
        inside = resolved.is_relative_to(root_abs.resolve())
    except ValueError as error:  # an embedded NUL byte
        return f"{OUTSIDE} ({said}not a path: {error})"
    except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before 3.13)
        return f"{OUTSIDE} ({said}unresolvable: {error})"
    if inside:
        return None
    if not joined.is_relative_to(root_abs):
        how = "absolute path" if listed.is_absolute() else "'..' leads out"
        return f"{OUTSIDE} ({said}{how})"
    return f"{OUTSIDE} ({said}symlink to {resolved})"


def under(root: str | Path, path: str | Path, *, what: str = "path") -> Path:
    """``path`` resolved, when it stays under ``root``; else OutsideRootError naming ``what``."""
    reason = escape_reason(root, path)
    if reason is not None:
        raise OutsideRootError(f"{what} {str(path)!r} leads out of {root}: {reason}")
    listed = Path(path)
    return Path(os.path.normpath(Path(os.path.abspath(root)) / listed)).resolve()


def is_under(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` stays under ``root`` once resolved (the same test as :func:`under`)."""
    return escape_reason(root, path) is None


def child(folder: str | Path, name: str, *, what: str = "name") -> Path:
    """``folder / name`` for a ``name`` from data that must be one plain entry of ``folder``
    (no separator, not ``.`` or ``..``, not empty, not hidden), resolved and confined."""
    text = str(name)
    if (
        not text
        or text in (".", "..")
        or text.startswith(".")
        or "/" in text
        or "\\" in text
        or "\x00" in text
    ):
        raise OutsideRootError(f"{what} {text!r} is not a plain file name inside {folder}")
    return under(folder, text, what=what)
