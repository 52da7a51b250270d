"""One flow run at a time per repository.

DVC guards a single `dvc repro` well (a repository lock for its bookkeeping, per-path read/write
locks while a stage command runs), but two *flow runs* interleave many such processes: the
second run would fail on whichever stage the first is running ("'...' is busy"), or judge stages
up to date against half-written outputs, and `dvc exp run` (retrain) rewrites the whole
workspace. So a flow holds this lock for its whole run; a second flow run on the same repository
waits up to `flow.lock_wait_s` and then fails with a message naming the holder.

The lock is an OS file lock (`flock`, via zc.lockfile, which DVC already depends on): the kernel
drops it when the holding process dies, so a killed flow run never leaves the repository
locked. It lives in `.dvc/tmp/`, which DVC and git already ignore.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import zc.lockfile

LOCK_NAME = "flows.lock"


class RepoBusyError(RuntimeError):
    """Another flow run holds the repository."""


class _InfoLockFile(zc.lockfile.SimpleLockFile):
    """A lock file whose content says who holds it (read by the waiter for its message)."""

    def __init__(self, path: str, info: dict[str, object]) -> None:
        self._info = info
        super().__init__(path)

    def _on_lock(self) -> None:
        self._fp.seek(0)
        self._fp.write(json.dumps(self._info) + "\n")
        self._fp.truncate()


def lock_path(repo: Path) -> Path:
    return repo / ".dvc" / "tmp" / LOCK_NAME


def holder(repo: Path) -> str:
    """Who holds the lock, as one readable phrase (best effort: the file may be mid-write)."""
    try:
        info = json.loads(lock_path(repo).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    return (
        f"{info.get('owner', 'a flow run')} (pid {info.get('pid')} on {info.get('host')}, "
        f"since {info.get('since')})"
    )


@contextmanager
def repo_lock(
    repo: Path,
    *,
    owner: str,
    wait_s: float,
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
) -> Iterator[None]:
    """Hold the repository's flow lock; wait up to `wait_s` seconds for it, then fail."""
    path = lock_path(repo)
    if not path.parent.parent.is_dir():
        raise FileNotFoundError(f"{repo}: not a DVC repository (no .dvc/ directory)")
    path.parent.mkdir(exist_ok=True)
    info = {
        "owner": owner,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            lock = _InfoLockFile(str(path), info)
            break
        except zc.lockfile.LockError:
            if time.monotonic() >= deadline:
                raise RepoBusyError(
                    f"{repo} is busy: {holder(repo)} is running a flow on it; gave up after "
                    f"waiting {wait_s:.0f} s (flow.lock_wait_s in params.yaml). Nothing was "
                    "changed; run again when it has finished."
                ) from None
            if not told and on_wait is not None:
                on_wait(f"waiting up to {wait_s:.0f} s for {holder(repo)} to finish on {repo}")
                told = True
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.01)))
    try:
        _repair_rwlock(repo, on_wait)
        yield
    finally:
        lock.close()


def _repair_rwlock(repo: Path, warn: Callable[[str], None] | None) -> None:
    """Move aside a DVC rwlock file that is not JSON (``.dvc/tmp/rwlock``).

    DVC rewrites that file in place (truncate, then write); a `dvc` killed in between leaves it
    empty or cut, and every later `dvc repro` fails with "Unable to read RWLock-file". Under
    the flow lock no other flow's `dvc` runs, and a live `dvc` never leaves it unreadable for
    longer than a write, so such a file is a leftover: its entries (stale by then) are lost.
    """
    path = Path(repo) / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return
    except FileNotFoundError:
        return
    except ValueError:  # empty or cut: what DVC itself refuses to read
        pass
    aside = path.with_name(f"rwlock.unreadable-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    path.replace(aside)
    message = f"DVC's lock table {path} was left unreadable by a killed `dvc`; moved it to {aside}"
    (warn or print)(message)


SLOT_MIN_WAIT_S = 10.0


def limit_name(repo: Path) -> str:
    """The Prefect global concurrency limit of one repository (by its resolved path)."""
    import hashlib

    digest = hashlib.sha256(str(Path(repo).resolve()).encode()).hexdigest()[:12]
    return f"emotions-repo-{digest}"


def ensure_limit(repo: Path) -> str:
    """Create the repository's global concurrency limit (one slot) on the Prefect API if it is
    missing; returns its name. Called when the deployments are served and again by each
    deployment run, so a deployment made another way (`prefect deploy`) is guarded too."""
    from prefect.client.orchestration import get_client

    name = limit_name(repo)
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, 1)
        except Exception:  # two runs creating it at once: the other one's creation stands
            client.read_global_concurrency_limit_by_name(name)
    return name


@contextmanager
def repo_slot(repo: Path, wait_s: float) -> Iterator[str | None]:
    """For a deployment run: hold the repository's slot of its Prefect global concurrency limit,
    so a second deployment run on the same repository (a scheduled pipeline, a retrain started
    by a drift event) waits in Prefect, visibly, instead of on the file lock; it gives up after
    ``wait_s`` with a TimeoutError. A plain CLI run (no deployment) gets nothing here: the file
    lock (:func:`repo_lock`) guards it, and it is held inside this slot for every run."""
    from prefect.runtime import deployment

    if not deployment.id:
        yield None
        return
    from prefect.concurrency.sync import concurrency

    name = ensure_limit(repo)
    # Asking for a free slot is itself an API call: a wait of 0 still gets the time for it.
    with concurrency(name, occupy=1, timeout_seconds=max(wait_s, SLOT_MIN_WAIT_S), strict=True):
        yield name
