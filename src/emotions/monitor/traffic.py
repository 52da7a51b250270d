"""What the prediction log says about the service itself, beside the data's drift.

The drift report compares answered requests only. The dashboard also needs the traffic: how
many requests came in, which share the service refused (too large, not a video, undecodable),
the time window the log covers and the model that answered. :class:`LogWindow` holds the window
(it becomes every snapshot's ``timestamp``, tags and metadata, so the dashboard's points sit at
the time the log reached, not at the time the monitor happened to run); :func:`traffic_report`
measures requests and refusals with Evidently's own ``RowCount`` and ``CategoryCount``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

REFUSED = "error"  # the ``status`` of a refused or failed request (serve.prediction_log)
# The ``status`` of the record in which the service counts refused requests it did not log one
# by one (serve.accounting: a flood is rate-limited); it stands for ``dropped`` refused rows.
DROPPED = "dropped"
TRAFFIC_TAG = "traffic"
DRIFT_TAG = "drift"


def _parse_time(value: Any) -> datetime | None:
    """A log line's ``time`` as naive UTC (Evidently compares snapshot timestamps naively)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def request_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One logged request as a row of :func:`request_table`."""
    return {
        "time": _parse_time(record.get("time")),
        "status": str(record.get("status") or "unknown"),
        "model": str(record.get("model") or ""),
        "count": int(record.get("dropped") or 0) if record.get("status") == DROPPED else 1,
    }


def request_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per logged request, answered or not: ``time``, ``status``, ``model``."""
    return requests_frame([request_row(record) for record in records])


def requests_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`request_table` of rows already made by :func:`request_row`; a count of dropped
    records becomes that many refused rows, so a flood weighs in the refused share as it came."""
    frame = pd.DataFrame(rows, columns=["time", "status", "model", "count"])
    frame = frame.loc[frame.index.repeat(frame["count"].fillna(1).astype(int))]
    frame = frame.drop(columns="count").reset_index(drop=True)
    frame.loc[frame["status"] == DROPPED, "status"] = REFUSED
    return frame


def read_requests(path: str | Path, torn: Any = None) -> pd.DataFrame:
    """:func:`request_table` of the log file at ``path`` (empty when there is no such file);
    lines that are not whole records are counted in ``torn`` (a ``TornLines``)."""
    from emotions.serve.prediction_log import read_prediction_log

    return request_table(read_prediction_log(path, torn))


@dataclass(frozen=True)
class LogWindow:
    """The stretch of the prediction log one monitor run looked at."""

    log: str
    start: datetime | None
    end: datetime | None
    requests: int
    refused: int
    model: str  # the model tag of the latest answered request ("" when none answered)
    torn: int = 0  # lines of the log that were not one whole record (skipped, not requests)

    @classmethod
    def of(cls, requests: pd.DataFrame, log: str | Path, torn: int = 0) -> LogWindow:
        times = requests["time"].dropna() if "time" in requests else pd.Series(dtype=object)
        answered = requests[(requests["status"] == "ok") & (requests["model"] != "")]
        return cls(
            log=str(log),
            start=None if times.empty else pd.Timestamp(times.min()).to_pydatetime(),
            end=None if times.empty else pd.Timestamp(times.max()).to_pydatetime(),
            requests=len(requests),
            refused=int((requests["status"] == REFUSED).sum()),
            model=str(answered["model"].iloc[-1]) if not answered.empty else "",
            torn=torn,
        )

    @property
    def timestamp(self) -> datetime:
        """Where the dashboard puts this run: the newest request (now, for an empty log)."""
        return self.end or datetime.now(UTC).replace(tzinfo=None)

    def metadata(self) -> dict[str, str]:
        """Snapshot metadata (strings: the UI filters series by exact metadata values)."""
        return {
            "log": self.log,
            "log_start": self.start.isoformat() if self.start else "",
            "log_end": self.end.isoformat() if self.end else "",
            "requests": str(self.requests),
            "refused": str(self.refused),
            "model": self.model,
            "torn_lines": str(self.torn),
        }

    def tags(self, kind: str) -> list[str]:
        """``kind`` (:data:`DRIFT_TAG` or :data:`TRAFFIC_TAG`) and the model tag."""
        return [kind, *([f"model={self.model}"] if self.model else [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metadata(),
            "requests": self.requests,
            "refused": self.refused,
            "torn_lines": self.torn,
        }


def traffic_report(requests: pd.DataFrame, window: LogWindow) -> Any:
    """An Evidently snapshot of the requests: their count and the refused count and share."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import CategoryCount, RowCount

    if requests.empty:
        raise ValueError("no requests in the log: nothing to count")
    table = requests[["status"]].reset_index(drop=True)
    definition = DataDefinition(categorical_columns=["status"])
    report = Report([RowCount(), CategoryCount(column="status", category=REFUSED)])
    return report.run(
        Dataset.from_pandas(table, data_definition=definition),
        None,
        timestamp=window.timestamp,
        tags=window.tags(TRAFFIC_TAG),
        metadata=window.metadata(),
        name=f"traffic {window.timestamp:%Y-%m-%d %H:%M:%S}",
    )
