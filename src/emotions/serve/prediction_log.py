"""The append-only prediction log: one JSON line per request, predictions and refusals alike.

The drift monitor reads it (labels, probabilities, input statistics, embeddings), so a line must
never be half-written or interleaved with another, even with several BentoML worker processes
and many request threads appending at once. Each record is therefore encoded to one complete
line first and handed to a single ``os.write`` on a descriptor opened with ``O_APPEND``: the
kernel positions and writes it in one step, and there is no user-space buffer to flush.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emotions.serve.limits import Rejection


def new_request_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (they are not JSON); numpy scalars become Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PredictionLog:
    """Appends records to ``path`` (JSON lines); safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _descriptor(self) -> int:
        # Opened lazily and per process: a descriptor inherited over fork would still append
        # correctly, but opening after the fork keeps each worker's file handling its own.
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, 0o644)
                self._pid = os.getpid()
            return self._fd

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(_json_safe(record), ensure_ascii=False, allow_nan=False)
        data = (line.replace("\n", " ") + "\n").encode("utf-8")
        written = os.write(self._descriptor(), data)
        if written != len(data):  # only a full disk does this to a regular file
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


def embedding_summary(vector: np.ndarray) -> dict[str, Any]:
    """Mean, spread and length of one clip embedding, plus the vector itself (4 decimals) so
    the monitor can run embedding drift, not only drift of the summary."""
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    return {
        "dim": int(vector.size),
        "mean": float(vector.mean()) if vector.size else 0.0,
        "std": float(vector.std()) if vector.size else 0.0,
        "norm": float(np.linalg.norm(vector)),
        "vector": [round(float(v), 4) for v in vector],
    }


def prediction_record(
    *,
    request_id: str,
    filename: str,
    result: Mapping[str, Any],
    stats: Mapping[str, float],
    embedding: np.ndarray,
    model: str,
    size_bytes: int,
    latency_ms: float,
    batch_size: int,
    views: Mapping[str, Mapping[str, float] | None] | None = None,
    stored: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """The log line of an answered request.

    Beyond the answer: ``window_probabilities`` (the timeline's, in window order) and
    ``modality_probabilities`` (the audio-only and video-only views,
    :meth:`~emotions.inference.Predictor.predict_clips_with_views`), which the re-annotation
    queue scores; ``stored`` / ``sha256``, the upload store's key of the kept upload (None when
    serve.keep_uploads is off or it was not kept).
    """
    return {
        "id": request_id,
        "time": utc_now(),
        "status": "ok",
        "filename": filename,
        "model": model,
        "label": result["label"],
        "polarity": result["polarity"],
        "probabilities": dict(result["probabilities"]),
        "modality_share": dict(result["modality_share"]),
        "input": dict(stats),
        "embedding": embedding_summary(embedding),
        "size_bytes": size_bytes,
        "latency_ms": round(latency_ms, 3),
        "batch_size": batch_size,
        "window_probabilities": [dict(w["probabilities"]) for w in result.get("timeline", [])],
        "modality_probabilities": {
            k: None if v is None else dict(v) for k, v in (views or {}).items()
        },
        "stored": stored,
        "sha256": sha256,
    }


def error_record(
    *,
    request_id: str,
    rejection: Rejection,
    filename: str | None = None,
    size_bytes: int | None = None,
    latency_ms: float | None = None,
) -> dict[str, Any]:
    """The log line of a refused or failed request."""
    return {
        "id": request_id,
        "time": utc_now(),
        "status": "error",
        "filename": filename,
        "http_status": rejection.status,
        "error": rejection.error,
        "detail": rejection.detail,
        "size_bytes": size_bytes,
        "latency_ms": None if latency_ms is None else round(latency_ms, 3),
    }


def read_prediction_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a log, oldest first (a line cut short by a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
