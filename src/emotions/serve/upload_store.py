"""Keep answered uploads for the re-annotation queue (``serve.keep_uploads``), bounded.

Uploads are stored content-addressed, ``<store>/<sha[:2]>/<sha>.<ext>``: the same video sent
again costs no bytes (its file only has its time refreshed, so a clip people keep sending stays),
and the prediction log line names the key (``stored``), which is all the queue needs to find it.

The store is bounded two ways, both params: files older than ``serve.upload_retention_days`` go,
and when the total exceeds ``serve.upload_quota_mb`` the oldest go first until it fits. Keeping
an upload is a side job: any failure (a full disk, a vanished file) is logged and the request is
answered as if the store were off, never failed.

Several BentoML workers may share one store. Each keeps its own running total and rescans the
folder (the truth) when its total says the quota is exceeded or ``RESCAN_S`` has passed, so
another worker's additions are counted before anything is evicted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from emotions.atomic import atomic_write

logger = logging.getLogger("emotions.serve.uploads")

RESCAN_S = 60.0
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def store_key(sha256: str, filename: str) -> str:
    """``<sha>.<ext>`` (ext: the upload's lower-case suffix, ``bin`` when it has none)."""
    suffix = Path(filename).suffix.lower().lstrip(".")
    return f"{sha256}.{suffix or 'bin'}"


def key_path(store: Path, key: str) -> Path:
    """Where a key lives: ``<store>/<key[:2]>/<key>`` (256 folders, none of them huge)."""
    return store / key[:2] / key


def store_root(configured: str, log_path: Path, cwd: Path | None = None) -> Path:
    """The store folder: ``serve.upload_store`` (``~`` expanded, relative to the working
    directory), except inside a Bento, where a relative path would land in the Bento store:
    there it is ``uploads/`` beside the prediction log."""
    from emotions.serve.settings import bento_root

    path = Path(configured).expanduser()
    if not path.is_absolute() and bento_root(cwd) is not None:
        return log_path.parent / "uploads"
    return path


@dataclass(frozen=True)
class Kept:
    """One kept upload: what the prediction log records about it."""

    key: str
    sha256: str
    new: bool  # False: the content was already stored


class UploadStore:
    """A bounded, content-addressed folder of uploads; safe across threads and processes."""

    def __init__(self, root: str | Path, *, quota_mb: float, retention_days: float) -> None:
        self.root = Path(root)
        self.quota_bytes = int(quota_mb * 1024 * 1024)
        self.retention_s = retention_days * 86400.0
        self._lock = threading.Lock()
        self._total: int | None = None  # unknown until the first scan
        self._scanned_at = 0.0

    def put(self, path: str | Path, filename: str) -> Kept | None:
        """Store the file at ``path`` (the upload's name ``filename`` gives the extension);
        None, with the reason logged, when it cannot be kept."""
        try:
            return self._put(Path(path), filename)
        except OSError as error:
            logger.warning("upload %s not kept: %s", filename, error)
            return None

    def _put(self, path: Path, filename: str) -> Kept | None:
        size = path.stat().st_size
        if size > self.quota_bytes:
            logger.warning(
                "upload %s not kept: %d bytes exceed serve.upload_quota_mb", filename, size
            )
            return None
        sha = file_sha256(path)
        key = store_key(sha, filename)
        target = key_path(self.root, key)
        with self._lock:
            if target.is_file():
                os.utime(target)  # a repeat: no bytes, but it counts as recent
                return Kept(key, sha, new=False)
            atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
            if self._total is not None:
                self._total += size
            self._enforce(keep=target)
        return Kept(key, sha, new=True)

    def _files(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every stored file, oldest first."""
        found = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file() and not entry.name.startswith("."):
                    stat = entry.stat()
                    found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        return sorted(found)

    def _enforce(self, keep: Path) -> None:
        """Drop expired files, then the oldest until under quota (never ``keep``)."""
        now = time.time()
        due = now - self._scanned_at >= RESCAN_S
        if not due and self._total is not None and self._total <= self.quota_bytes:
            return
        files = self._files()
        self._scanned_at = now
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            expired = now - mtime > self.retention_s
            if not expired and total <= self.quota_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)  # another worker may have evicted it first
            total -= size
            why = "older than serve.upload_retention_days" if expired else "store over quota"
            logger.info("evicted upload %s (%d bytes): %s", path.name, size, why)
        self._total = total

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._files())
