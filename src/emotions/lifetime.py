"""A stage process's lifetime: it dies with its parent, and it alone writes its output folder.

Why: `dvc repro` runs a stage as its child. Killed, DVC used to leave the child running (it
was re-parented and trained on), and the rerun then resumed in the same folder while the
orphan still wrote into it. So a stage asks the kernel for a signal when its parent dies
(Linux ``PR_SET_PDEATHSIG``), turns SIGTERM/SIGHUP into KeyboardInterrupt so its cleanup runs,
and holds an exclusive ``flock`` on a lock file beside its output folder while it writes: a
second writer refuses at once with a message naming the holder. The kernel drops the lock when
the holder dies, so a killed stage never leaves its folder locked.

The lock file (``.<folder>.lock``) sits beside the folder, not in it, so DVC never caches it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from emotions.errors import StageError

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class OutputBusyError(StageError):
    """Another live process writes the same output folder."""


# How long the main thread has to unwind after a stop signal before the process ends anyway.
UNWIND_GRACE_S = 30.0


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def stop_on_signals(grace_s: float = UNWIND_GRACE_S) -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, like Ctrl-C: ``finally``
    blocks run (temporaries removed) and the exit is clean. If the process still lives
    ``grace_s`` after a stop signal (its main thread waits on a lock, see
    :func:`watch_signals`), it ends with its children: what a killed write leaves is removed at
    the next start. Call from the main thread.
    """

    def end_after_grace(signum: int) -> None:
        time.sleep(grace_s)
        end_descendants()
        os._exit(128 + signum)

    watch_signals(STOP_SIGNALS, _stop, end_after_grace)


def watch_signals(
    signals: Sequence[int],
    handler: Callable[[int, FrameType | None], None],
    in_thread: Callable[[int], None],
) -> None:
    """Install ``handler`` for ``signals`` and call ``in_thread(signum)`` from a watcher thread
    as soon as one arrives.

    A Python handler runs only when the main thread executes bytecode; one waiting on a lock
    (a worker pool's result, a flow's task) never notices a signal another thread received.
    The watcher reads the interpreter's wakeup fd, where every signal number is written
    whichever thread received it (also while another library's handler is installed).
    Call from the main thread.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in signals:
        signal.signal(signum, handler)

    def watch() -> None:
        while True:
            for byte in os.read(read_end, 64):
                if byte in signals:
                    in_thread(byte)

    threading.Thread(target=watch, name="stop-on-signal", daemon=True).start()


def end_descendants_on_signals(grace_s: float = 10.0) -> None:
    """For a process that only supervises a command (the flows' `dvc repro`): on SIGTERM or
    SIGHUP, terminate every descendant and give them ``grace_s`` to unwind, then give this
    process's own main thread ``grace_s`` to finish before it exits with 128 + the signal.

    Why: DVC runs a stage under ``$SHELL -c`` (``/bin/sh`` when SHELL is unset). dash does not
    exec a lone command, so the stage's parent is the shell, which has no parent-death signal:
    when DVC died with the flow, the shell and the stage under it ran on. And DVC itself is not
    cut short: once its stage has ended it fails the stage and releases its locks; an exit in
    the middle of that left its rwlock file truncated, which the next `dvc` refuses to read.
    Call from the main thread.
    """

    def end(signum: int) -> None:
        end_descendants(grace_s)
        time.sleep(grace_s)  # the main thread normally exits first, ending this thread too
        os._exit(128 + signum)

    watch_signals(STOP_SIGNALS, lambda _signum, _frame: None, end)


def end_descendants(grace_s: float = 0.0) -> None:
    """End every process this one started, and theirs: SIGTERM first so they unwind (a stage
    removes its temporaries), SIGKILL for those alive after ``grace_s`` (at once with 0). The
    list is taken first, so a child re-parented by its parent's death is still reached."""
    import psutil

    below = psutil.Process().children(recursive=True)
    if grace_s > 0:
        for child in below:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, below = psutil.wait_procs(below, timeout=grace_s)
    for child in below:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(below, timeout=max(grace_s, 1.0))


def die_with_parent() -> bool:
    """Ask Linux to send SIGTERM when the parent process dies; returns whether it could.

    Elsewhere (no prctl) this is a no-op. A parent that died before the call already left us
    re-parented: that is a kill too.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def lock_file(folder: Path) -> Path:
    """The lock of ``folder``: beside it, so it never becomes part of a DVC output."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid')} ({info.get('command')}, since {info.get('since')})"


@contextlib.contextmanager
def hold_output(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive write lock of ``folder`` for the block; OutputBusyError if taken."""
    path = lock_file(Path(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"{folder} is being written by {_describe_holder(path)}; wait for it to "
                "finish or stop it, then run again"
            ) from None
        info = {
            "pid": os.getpid(),
            "command": command or " ".join(sys.argv),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):  # who holds it is a courtesy (a full disk: unsaid)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiter)
