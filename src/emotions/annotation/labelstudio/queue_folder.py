"""Reading the queue folders that `emotions queue` writes (the contract between the two halves).

Each run of `emotions queue` writes one folder ``<queue.out>/<UTC time>/``::

    <folder>/videos/<clip_id>.<ext>
    <folder>/queue.csv   clip_id,path,sha256,reason,score,predicted_label,confidence,
                         request_id,served_at          (path relative to the folder)

and the labels that come back go to ``<folder>/annotations.csv``, which makes the folder an
``emotions``-layout corpus. ``queue_folders`` accepts one such folder or the folder holding
them. A row whose video is missing, or lies outside its folder, is a clear error rather than a
task annotators could not play.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from emotions.annotation.queue_format import COLUMNS, QUEUE_CSV
from emotions.corpus.confine import escape_reason

# The format is emotions.annotation.queue_format's (one definition of the columns); this reader
# is the lenient one the Label Studio side needs: only the ids and the path are required, so a
# hand-made queue (no scores, no reasons) can be pushed too, and every row is resolved to a file.
QUEUE_FILE = QUEUE_CSV
QUEUE_COLUMNS = COLUMNS
REQUIRED = ("clip_id", "path", "sha256")


class QueueError(ValueError):
    """The queue folder is missing or malformed; the message names the row or column."""


def queue_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a queue folder, else its queue sub-folders (oldest first;
    hidden ones, a queue still being assembled, are skipped)."""
    path = Path(path)
    if (path / QUEUE_FILE).is_file():
        return [path]
    found = (
        sorted(
            child
            for child in path.iterdir()
            if child.is_dir() and not child.name.startswith(".") and (child / QUEUE_FILE).is_file()
        )
        if path.is_dir()
        else []
    )
    if not found:
        raise QueueError(f"{path}: no queue folder (run `emotions queue` first)")
    return found


def read_queues(path: Path) -> pd.DataFrame:
    """Every queue below ``path`` (``queue_folders``) in one frame, with ``folder`` per row."""
    frames = [read_queue(folder).assign(folder=folder) for folder in queue_folders(path)]
    queue = pd.concat(frames, ignore_index=True)
    repeated = queue["sha256"].duplicated()
    if repeated.any():
        raise QueueError(
            f"{path}: clip(s) {', '.join(queue.loc[repeated, 'clip_id'])} are in two queues"
        )
    return queue


def read_queue(queue_dir: Path) -> pd.DataFrame:
    """queue.csv as strings (ids stay ids), with ``file``: the absolute path of each video."""
    path = Path(queue_dir) / QUEUE_FILE
    if not path.is_file():
        raise QueueError(f"{path}: no queue (run `emotions queue` first)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise QueueError(f"{path}: unreadable ({error})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise QueueError(f"{path}: lacks column(s) {', '.join(missing)}")
    for column in QUEUE_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    root = Path(os.path.abspath(queue_dir))
    files = []
    for number, row in enumerate(frame.itertuples(index=False), start=2):
        if not row.clip_id or not row.sha256 or not row.path:
            raise QueueError(f"{path}, line {number}: clip_id, path and sha256 are required")
        reason = escape_reason(root, row.path)
        if reason is not None:
            raise QueueError(
                f"{path}, line {number}: path {row.path!r} leads out of the queue ({reason})"
            )
        target = Path(os.path.normpath(root / row.path))
        if not target.is_file():
            raise QueueError(f"{path}, line {number}: {row.path} does not exist")
        files.append(target)
    duplicated = frame["sha256"].duplicated()
    if duplicated.any():
        raise QueueError(
            f"{path}: sha256 repeated for clip(s) {', '.join(frame.loc[duplicated, 'clip_id'])}"
        )
    return frame[list(QUEUE_COLUMNS)].assign(file=files)
