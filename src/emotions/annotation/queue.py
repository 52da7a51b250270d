"""Build one re-annotation queue from the prediction log and the upload store.

`emotions queue` and the monitor flow call :func:`build_queue`: the answered requests whose
upload was kept (``stored`` in their log line, :mod:`emotions.serve.upload_store`) become
candidates; clips already labelled (their sha256 in a dataset's ``manifest.parquet``, so in
``data/`` annotations) or already queued (in any earlier ``queue.csv``) are dropped, and so are
kept uploads evicted since; the rules (:mod:`emotions.annotation.rules`) pick at most
``queue.max_clips``; the picks are written as a queue folder (:mod:`.queue_format`).

The folder is assembled under a hidden temporary name and renamed into place, so a reader never
sees half a queue; videos are hard links into the store where the file system allows (no copy),
else copies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from emotions.annotation.queue_format import (
    COLUMNS,
    QUEUE_CSV,
    QUEUE_JSON,
    REASONS,
    VIDEOS,
    write_queue_csv,
)
from emotions.annotation.rules import DriftSlice, candidate_table, select
from emotions.atomic import atomic_write_json
from emotions.config import Params, QueueConfig
from emotions.corpus.confine import is_under
from emotions.corpus.manifest import clip_id_for
from emotions.layout import Layout

logger = logging.getLogger("emotions.annotation")


@dataclass
class QueueResult:
    """What one run did (also ``queue.json``, less ``queue_dir`` when nothing was queued)."""

    queue_dir: str | None
    clips: int
    reasons: dict[str, int]
    candidates: int
    already_labelled: int
    missing_files: int
    drifted_features: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_hashes(manifests: Iterable[str | Path], queue_root: str | Path) -> set[str]:
    """sha256 of every clip already labelled (in a manifest) or already queued (queue.csv)."""
    seen: set[str] = set()
    for manifest in manifests:
        if Path(manifest).is_file():
            seen.update(pd.read_parquet(manifest, columns=["sha256"])["sha256"].dropna())
    root = Path(queue_root)
    if root.is_dir():
        for path in root.glob(f"*/{QUEUE_CSV}"):
            table = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["sha256"])
            seen.update(table["sha256"])
    return {str(s) for s in seen if s}


def load_drift(monitor_out: str | Path, log_table: pd.DataFrame) -> DriftSlice | None:
    """The last drift check in ``monitor_out`` (summary.json + reference.parquet), if any."""
    out = Path(monitor_out)
    summary_path, reference_path = out / "summary.json", out / "reference.parquet"
    if not summary_path.is_file() or not reference_path.is_file():
        return None
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    drifted = list(summary.get("drifted_checks") or [])
    if not drifted:
        return None
    return DriftSlice(drifted, pd.read_parquet(reference_path), log_table)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def _queue_name(now: datetime, root: Path) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def build_queue(
    records: Iterable[dict[str, Any]],
    store: str | Path,
    config: QueueConfig,
    *,
    labelled: set[str],
    drift: DriftSlice | None = None,
    out_root: str | Path | None = None,
    now: datetime | None = None,
) -> QueueResult:
    """Pick clips from ``records`` (prediction log lines) and write them as a queue folder
    under ``out_root`` (default ``queue.out``); no folder when nothing qualifies."""
    from emotions.serve.upload_store import key_path

    store = Path(store)
    root = Path(out_root or config.out)
    candidates = candidate_table(records)
    total = len(candidates)
    known = candidates["sha256"].isin(labelled).astype(bool)
    candidates = candidates.loc[~known]
    # The key comes from a log line: a path it names outside the store is no kept upload.
    present = [
        is_under(store, key_path(store, str(key))) and key_path(store, str(key)).is_file()
        for key in candidates["stored"]
    ]
    missing = present.count(False)
    if missing:
        logger.info("%d kept upload(s) no longer in %s (evicted): not queued", missing, store)
    candidates = candidates.loc[present].reset_index(drop=True)
    picked = select(candidates, config, drift)
    result = QueueResult(
        queue_dir=None,
        clips=len(picked),
        reasons={reason: int((picked["reason"] == reason).sum()) for reason in REASONS},
        candidates=total,
        already_labelled=int(known.sum()),
        missing_files=missing,
        drifted_features=[] if drift is None else drift.features,
    )
    if picked.empty:
        logger.info("queue: no clip to queue (%d kept, %d labelled)", total, int(known.sum()))
        return result

    now = now or datetime.now(UTC)
    root.mkdir(parents=True, exist_ok=True)
    name = _queue_name(now, root)
    staging = root / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # The clip id ingest will give this content, so labels and manifest rows line up.
        ids = [clip_id_for(str(sha)) for sha in picked["sha256"]]
        rows = picked.assign(
            clip_id=ids,
            path=[
                f"{VIDEOS}/{clip_id}{Path(str(key)).suffix}"
                for clip_id, key in zip(ids, picked["stored"], strict=True)
            ],
        )
        for key, rel in zip(rows["stored"], rows["path"], strict=True):
            _link_or_copy(key_path(store, str(key)), staging / rel)
        write_queue_csv(rows[list(COLUMNS)], staging)
        result.queue_dir = str(root / name)
        meta = {
            **result.to_dict(),
            "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "params": config.model_dump(),
            "store": str(store),
        }
        atomic_write_json(meta, staging / QUEUE_JSON)
        os.rename(staging, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("queue: %d clip(s) -> %s (%s)", result.clips, result.queue_dir, result.reasons)
    return result


def manifest_paths(params: Params, root: Path) -> list[Path]:
    """Every dataset's manifest (the labelled clips) under the repository ``root``."""
    return [Layout(root).manifest(name) for name in params.datasets]


def queue_from_params(
    params: Params,
    config: QueueConfig | None = None,
    *,
    root: str | Path = ".",
    log: Path | None = None,
    monitor_out: Path | None = None,
    read_drift: bool = True,
    out_root: Path | None = None,
) -> QueueResult:
    """:func:`build_queue` with everything from params, relative to the checkout ``root``:
    the log ``serve.log_path``, the store ``serve.upload_store``, the last drift check in
    ``monitor.out`` (none with ``read_drift=False``), queue folders in ``queue.out``."""
    from emotions.monitor.reference import records_table
    from emotions.serve.prediction_log import read_prediction_log

    root = Path(root)
    config = config or params.queue
    records = list(read_prediction_log(root / (log or params.serve.log_path)))
    drift = None
    if read_drift:
        drift = load_drift(root / (monitor_out or params.monitor.out), records_table(records))
    queue_root = root / (out_root or config.out)
    return build_queue(
        records,
        root / Path(params.serve.upload_store).expanduser(),
        config,
        labelled=labelled_hashes(manifest_paths(params, root), queue_root),
        drift=drift,
        out_root=queue_root,
    )
