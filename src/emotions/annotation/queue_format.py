"""The re-annotation queue folder: the exact format `emotions queue` writes and its readers use.

A queue is a folder in the ``emotions`` layout (:mod:`emotions.corpus.sources.emotions`), so once
it has an ``annotations.csv`` it is an ingestible dataset root like ``data/``::

    <queue_dir>/videos/<clip_id>.<ext>    the served upload, byte for byte (hard link or copy of
                                           the upload store's <sha[:2]>/<sha>.<ext>)
    <queue_dir>/queue.csv                 one row per clip, the columns below, in this order
    <queue_dir>/queue.json                how the queue was made: params, drift checks, counts
    <queue_dir>/annotations.csv           (not written here) the labels that come back, long
                                           format clip_id,stage,annotator,label

``queue.csv`` (UTF-8, header row, comma separated, written atomically):

=================  ==========================================================================
column             meaning
=================  ==========================================================================
clip_id            ``sha256[:16]``: the id ingest gives the same content
                   (:func:`emotions.corpus.manifest.clip_id_for`), and the video's file stem
path               the video, relative to the queue folder: ``videos/<clip_id>.<ext>``
sha256             the content hash of the video (64 lower-case hex digits)
reason             the rule that picked the clip, one of :data:`REASONS`
score              that rule's score, higher = more in need of a label (see
                   :mod:`emotions.annotation.rules`); for ``random_control`` the random draw
predicted_label    the served label
confidence         the served (calibrated) probability of that label
request_id         the prediction log record's ``id``
served_at          the record's ``time`` (ISO 8601 UTC, ``Z``)
=================  ==========================================================================

Rows are in pick order (rules take turns; see :func:`emotions.annotation.rules.select`). Each
clip (sha256) appears once per queue and in at most one queue ever: a later run treats every
earlier queue's clips as already taken.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emotions.atomic import atomic_write
from emotions.corpus.confine import is_under

QUEUE_CSV = "queue.csv"
QUEUE_JSON = "queue.json"
VIDEOS = "videos"
COLUMNS = (
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
LOW_CONFIDENCE = "low_confidence"
MODALITY_DISAGREEMENT = "modality_disagreement"
WINDOW_DISAGREEMENT = "window_disagreement"
DRIFTED_SLICE = "drifted_slice"
RANDOM_CONTROL = "random_control"
REASONS = (
    LOW_CONFIDENCE,
    MODALITY_DISAGREEMENT,
    WINDOW_DISAGREEMENT,
    DRIFTED_SLICE,
    RANDOM_CONTROL,
)
_DTYPES = {name: "string" for name in COLUMNS} | {"score": "float64", "confidence": "float64"}


class QueueFormatError(ValueError):
    """A queue folder that does not follow this format."""


def write_queue_csv(rows: pd.DataFrame, queue_dir: str | Path) -> Path:
    """Write ``rows`` (exactly :data:`COLUMNS`) as ``<queue_dir>/queue.csv``, atomically."""
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise QueueFormatError(f"queue rows lack column(s) {', '.join(missing)}")
    table = rows[list(COLUMNS)]
    return atomic_write(
        Path(queue_dir) / QUEUE_CSV, lambda tmp: table.to_csv(tmp, index=False, encoding="utf-8")
    )


def read_queue(queue_dir: str | Path) -> pd.DataFrame:
    """``queue.csv`` of a queue folder, typed, checked: columns, reasons, videos present and
    inside the folder."""
    queue_dir = Path(queue_dir)
    path = queue_dir / QUEUE_CSV
    if not path.is_file():
        raise QueueFormatError(f"{queue_dir}: no {QUEUE_CSV} (not a queue folder)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise QueueFormatError(f"{path}: lacks column(s) {', '.join(missing)}")
    table = table[list(COLUMNS)].replace({"score": {"": None}, "confidence": {"": None}})
    table = table.astype(_DTYPES)
    unknown = sorted(set(table["reason"]) - set(REASONS))
    if unknown:
        raise QueueFormatError(f"{path}: unknown reason(s) {', '.join(unknown)}")
    escaping = [p for p in table["path"] if not is_under(queue_dir, p)]
    if escaping:
        raise QueueFormatError(f"{path}: path {escaping[0]!r} leads out of the queue folder")
    absent = [p for p in table["path"] if not (queue_dir / p).is_file()]
    if absent:
        raise QueueFormatError(f"{path}: {len(absent)} video(s) missing, e.g. {absent[0]}")
    return table
