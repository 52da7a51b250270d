"""The monitor's request count reads the service's rate-limited refusals at their weight."""

from __future__ import annotations

from emotions.monitor.traffic import REFUSED, LogWindow, request_table
from emotions.serve.accounting import DROPPED
from emotions.serve.prediction_log import PredictionLog, read_prediction_log


def test_a_count_of_dropped_records_weighs_as_that_many_refused_requests(tmp_path):
    log = PredictionLog(tmp_path / "predictions.jsonl")
    log.append({"id": "a", "time": "2026-12-04T10:00:00", "status": "ok", "model": "m:1"})
    log.append({"id": "b", "time": "2026-12-04T10:00:01", "status": REFUSED, "http_status": 404})
    log.append(
        {
            "id": "c",
            "time": "2026-12-04T10:00:05",
            "status": DROPPED,
            "dropped": 498,
            "by_status": {"404": 498},
        }
    )
    table = request_table(read_prediction_log(log.path))
    window = LogWindow.of(table, log.path)
    assert (window.requests, window.refused, window.model) == (500, 499, "m:1")
    assert set(table["status"]) == {"ok", REFUSED}
