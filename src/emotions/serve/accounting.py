"""Every request is one prediction-log record, wherever it is answered or refused.

The request's record is written by one owner: the ASGI gate around the whole app
(:mod:`emotions.serve.gate`) for everything that reaches the app, and the connection guard
(:mod:`emotions.serve.httpguard`) for heads refused before there is a request (431, 408). The
handler does not write: it leaves its richer record (the prediction, or its refusal with the
file name and size) on the request's :class:`RequestAccount`, which the gate writes once the
response is sent, or a plain refusal record when the handler never ran.

Answered requests are always logged. Refused ones cost an attacker nothing to send, so they
pass a token bucket (``serve.refused_log_per_s``, burst ``serve.refused_log_burst``): beyond
it they are counted, and the count is written as one ``"status": "dropped"`` record (with the
statuses it covers and its time span) as soon as the bucket allows, so a flood can neither fill
the disk nor vanish from the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from emotions.serve.limits import Rejection
from emotions.serve.prediction_log import (
    PredictionLog,
    error_record,
    new_request_id,
    utc_now,
)

logger = logging.getLogger("emotions.serve")

DROPPED = "dropped"  # the ``status`` of the record that counts refused records not written


@dataclass
class RequestAccount:
    """One request's bookkeeping: its id, its start, and the record the handler left."""

    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    record: dict[str, Any] | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


_CURRENT: ContextVar[RequestAccount | None] = ContextVar("emotions_request", default=None)


def current() -> RequestAccount | None:
    """The account of the request being handled (None outside the gate, e.g. in tests)."""
    return _CURRENT.get()


def begin() -> tuple[RequestAccount, Any]:
    """Open an account for a new request; the token resets the context afterwards."""
    account = RequestAccount()
    return account, _CURRENT.set(account)


def end(token: Any) -> None:
    _CURRENT.reset(token)


class Accountant:
    """Writes request records to the prediction log, refused ones through a token bucket."""

    def __init__(self, log: PredictionLog, *, per_s: float, burst: int) -> None:
        self.log = log
        self.per_s = per_s
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._dropped: Counter[int] = Counter()
        self._dropped_since: str | None = None
        self._dropped_until: str | None = None
        self._lock = threading.Lock()

    def answered(self, record: Mapping[str, Any]) -> None:
        self._flush_dropped()
        self.log.append(record)

    def refused(self, record: Mapping[str, Any]) -> bool:
        """Log a refused request's record if the bucket allows; False: counted as dropped."""
        with self._lock:
            if not self._take():
                self._dropped[int(record.get("http_status") or 0)] += 1
                self._dropped_since = self._dropped_since or str(record.get("time"))
                self._dropped_until = str(record.get("time"))
                return False
        self._flush_dropped()
        self.log.append(record)
        return True

    def refusal(
        self,
        rejection: Rejection,
        *,
        request_id: str | None = None,
        latency_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        """:meth:`refused` for a :class:`Rejection` with no handler record."""
        record = error_record(
            request_id=request_id or new_request_id(),
            rejection=rejection,
            latency_ms=latency_ms,
        )
        record.update({k: v for k, v in extra.items() if v is not None})
        return self.refused(record)

    def close(self) -> None:
        self._flush_dropped(force=True)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.per_s)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _flush_dropped(self, *, force: bool = False) -> None:
        """Write the count of dropped records (the summary costs a token unless forced)."""
        with self._lock:
            if not self._dropped or not (force or self._take()):
                return
            counts, since, until = self._dropped, self._dropped_since, self._dropped_until
            self._dropped, self._dropped_since, self._dropped_until = Counter(), None, None
        total = sum(counts.values())
        logger.warning(
            "%d refused request(s) not logged one by one (serve.refused_log_per_s)", total
        )
        self.log.append(
            {
                "id": new_request_id(),
                "time": utc_now(),
                "status": DROPPED,
                "dropped": total,
                "by_status": {str(status): n for status, n in sorted(counts.items())},
                "since": since,
                "until": until,
            }
        )
