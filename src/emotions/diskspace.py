"""Free disk space: checked before a write of known size, and a full disk said in one line.

Why: a full disk surfaced as a bus error (the cache's memory maps: exit 135, no message), as
PyTorch's ``unexpected pos`` from inside its zip writer, or as a traceback ending in Errno 28.
Writers whose size is known ask :func:`require_space` first; every writer runs under
:func:`disk_full_errors`, which turns ENOSPC (and a torch save that failed on a full disk)
into :class:`NoSpaceError`: "No space left on <device>: need ≈ N GB, have M GB".
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from emotions.errors import StageError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What torch.save's zip writer says when a write came up short.
TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "No space left")


class NoSpaceError(StageError):
    """The disk cannot hold what a stage writes."""


def existing(path: str | Path) -> Path:
    """``path`` or its nearest existing ancestor (what the free-space question is about)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(existing(path)).free


def device(path: str | Path) -> str:
    """The filesystem holding ``path``, as ``<source> at <mount point>`` (the mount point
    alone where /proc/mounts is not readable)."""
    here = existing(path)
    dev = here.stat().st_dev
    mount = here
    while mount != mount.parent and mount.parent.stat().st_dev == dev:
        mount = mount.parent
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text(encoding="utf-8").splitlines():
            source, point, *_ = line.split()
            if point == str(mount):
                return f"{source} at {mount}"
    return str(mount)


def _gb(size: float) -> str:
    return f"{size / 1e9:.3g} GB"


def no_space(path: str | Path, need: int | None = None) -> NoSpaceError:
    """The one-line error for ``path``'s filesystem (``need``: bytes the write needed)."""
    wanted = f"need ≈ {_gb(need)}, " if need else ""
    return NoSpaceError(
        f"No space left on {device(path)}: {wanted}have {_gb(free_bytes(path))} "
        f"(writing {path}); free some space and run again",
    )


def require_space(path: str | Path, need: int, *, free: int | None = None) -> None:
    """NoSpaceError unless ``path``'s filesystem has ``need`` bytes free (``free``: the free
    space to judge against, else the filesystem's)."""
    have = free_bytes(path) if free is None else free
    if need > have:
        raise NoSpaceError(
            f"No space left on {device(path)}: need ≈ {_gb(need)}, have {_gb(have)} "
            f"(writing {path}); free some space and run again",
        )


def is_disk_full(error: BaseException, path: str | Path, need: int | None = None) -> bool:
    """Whether ``error`` means the disk is full: ENOSPC/EDQUOT, or torch's short write while
    less than ``need`` bytes (or nothing) are free."""
    if isinstance(error, NoSpaceError):
        return False  # already said
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return True
    if isinstance(error, OSError) and "No space left on device" in str(error):
        return True  # pyarrow's write errors carry the text, not the errno
    if isinstance(error, RuntimeError) and any(text in str(error) for text in TORCH_SHORT_WRITE):
        return free_bytes(path) < max(need or 0, 1 << 20)
    return False


@contextlib.contextmanager
def disk_full_errors(path: str | Path, need: int | None = None) -> Iterator[None]:
    """Turn a full disk met while writing under ``path`` into :class:`NoSpaceError`."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if is_disk_full(error, path, need):
            raise no_space(path, need) from error
        raise
