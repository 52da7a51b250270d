"""Reading the queue folder that `emotions queue` writes (the contract between the two halves).

::

    queue_dir/videos/<file>
    queue_dir/queue.csv   clip_id,path,sha256,reason,score,predicted_label,confidence,
                          request_id,served_at          (path relative to queue_dir)

A row whose video is missing, or lies outside the queue folder, is a clear error rather than a
task annotators could not play.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

QUEUE_FILE = "queue.csv"
QUEUE_COLUMNS = (
    "clip_id",
    "path",
    "sha256",
    "reason",
    "score",
    "predicted_label",
    "confidence",
    "request_id",
    "served_at",
)
REQUIRED = ("clip_id", "path", "sha256")


class QueueError(ValueError):
    """The queue folder is missing or malformed; the message names the row or column."""


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
        target = Path(os.path.normpath(root / row.path))
        if not target.is_relative_to(root):
            raise QueueError(f"{path}, line {number}: path {row.path!r} leads out of the queue")
        if not target.is_file():
            raise QueueError(f"{path}, line {number}: {row.path} does not exist")
        files.append(target)
    duplicated = frame["sha256"].duplicated()
    if duplicated.any():
        raise QueueError(
            f"{path}: sha256 repeated for clip(s) {', '.join(frame.loc[duplicated, 'clip_id'])}"
        )
    return frame[list(QUEUE_COLUMNS)].assign(file=files)
