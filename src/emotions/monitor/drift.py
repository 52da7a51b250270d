"""One drift check: the prediction log against the reference, as an Evidently 0.7 report.

Checks, each drifted or not by Evidently's own test:

- value drift of each input statistic (brightness, motion, loudness, duration) and of the
  predicted label and the confidence: Evidently's ``DataDriftPreset`` over these columns, whose
  ``DriftedColumnsCount`` gives the drifted count and share. The tests are fixed p-value tests
  (K-S for numbers, chi-square for the label, drifted below
  :data:`~emotions.monitor.dashboard.VALUE_DRIFT_P`): left to itself Evidently switches to
  distances (drifted above 0.1) once the reference passes 1,000 rows, and one score would then
  mean two things on the dashboard and in ``summary.json``;
- embedding drift (``EmbeddingsDrift``, the share of embedding components that drifted,
  Evidently's ``ratio`` method, drifted above 0.2), reported beside the value checks.

``drift_share`` is the preset's share of drifted value columns, and ``drifted`` says whether it
reached the threshold (the preset's own test, ``drift_share=threshold``): the one number the
monitor flow acts on. The embedding check is shown with the others but does not count towards
the share (one whole representation against single columns). A check that cannot run (a column
empty on one side, embeddings of different sizes, too few rows for the report's t-SNE plot of
the embeddings) is listed as skipped with the reason rather than counted either way.

Outputs in ``out_dir``: ``report.html`` (Evidently's single offline HTML file),
``snapshot.json`` (the snapshot in Evidently's own serialisation, ``Snapshot.load`` reads it
back), ``traffic.json`` (the traffic snapshot, :mod:`emotions.monitor.traffic`) and
``summary.json`` (:class:`DriftSummary`). Both snapshots carry the log window (``timestamp`` =
the newest request, metadata = log path and range, requests, refusals, model; tags = kind and
model). With ``workspace``, they are also added as runs of the dashboard project
(:mod:`emotions.monitor.dashboard`, ``evidently ui --workspace DIR``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from threadpoolctl import threadpool_limits

from emotions.atomic import atomic_write, atomic_write_json, atomic_write_text
from emotions.monitor.dashboard import (
    PROJECT,
    VALUE_DRIFT_P,
    add_to_workspace,
    threshold_metrics,
)
from emotions.monitor.reference import INPUT_COLUMNS, MonitorDataError, embedding_columns
from emotions.monitor.traffic import (
    DRIFT_TAG,
    LogWindow,
    request_row,
    requests_frame,
    traffic_report,
)

__all__ = ["PROJECT", "DriftSummary", "NotEnoughDataError", "check_log", "drift_report"]

VALUE_COLUMNS = (*INPUT_COLUMNS, "label", "confidence")
EMBEDDINGS = "embedding"
# The value checks' p-value tests (Evidently's names): numbers, the predicted label.
NUM_METHOD, CAT_METHOD = "ks", "chisquare"
# The embedding check: the share of components that drifted (per-component Wasserstein
# distance above 0.1) and the share above which the embeddings count as drifted.
EMBEDDING_DRIFT_SHARE = 0.2
# Evidently's embedding widget runs t-SNE with perplexity 30, which needs more samples.
TSNE_MIN_ROWS = 31
# Rows per side that widget's t-SNE plot is drawn from (monitor.embedding_plot_rows). Evidently
# samples 2,500 per side; t-SNE's 1,000 Barnes-Hut iterations then cost minutes on a small CPU
# (188 s for 1,000 + 1,000 rows on this 2-core machine) whatever the log's size, while the drift
# score itself is computed on every row. Only the picture is drawn from the sample.
EMBEDDING_PLOT_ROWS = 250


class NotEnoughDataError(MonitorDataError):
    """Too few logged predictions for a drift test to mean anything."""


@dataclass
class DriftSummary:
    """What summary.json holds."""

    drifted: bool
    drift_share: float
    threshold: float
    rows_current: int
    rows_reference: int
    # name -> {"kind", "method", "score", "stattest_threshold", "drifted"}
    checks: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why
    report_html: str = ""
    summary_json: str = ""
    window: dict[str, Any] = field(default_factory=dict)  # LogWindow.to_dict()

    @property
    def drifted_checks(self) -> list[str]:
        return [name for name, check in self.checks.items() if check["drifted"]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted_checks": self.drifted_checks}


def _usable(current: pd.DataFrame, reference: pd.DataFrame, column: str) -> str | None:
    """Why ``column`` cannot be compared, or None when it can."""
    for side, table in (("current", current), ("reference", reference)):
        if column not in table.columns or table[column].notna().sum() == 0:
            return f"no values in the {side} data"
    return None


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    out_dir: str | Path,
    *,
    threshold: float = 0.3,
    min_rows: int = 30,
    workspace: str | Path | None = None,
    window: LogWindow | None = None,
    traffic: Any = None,
    plot_rows: int = EMBEDDING_PLOT_ROWS,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "auto",
) -> DriftSummary:
    """Compare ``current`` (the log table) with ``reference``; write the report and summary.

    ``window`` stamps the snapshot (default: now, no log range); ``traffic`` (a snapshot of
    :func:`~emotions.monitor.traffic.traffic_report`) is saved and added to the workspace with it.
    ``plot_rows`` bounds the rows per side of the embedding widget's t-SNE plot; ``threads``
    caps the OpenMP/BLAS threads of the report's numeric code (scikit-learn's t-SNE): on a
    machine whose cores are busy elsewhere, threads wait on each other (measured here: t-SNE of
    500 rows 6 s with one thread, 51 s with two on the loaded 2-core machine).

    Raises :class:`NotEnoughDataError` when ``current`` has fewer than ``min_rows`` rows (or
    the reference fewer than 2), with a message that says how many there are.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import ratio
    from evidently.metrics import EmbeddingsDrift, UniqueValueCount
    from evidently.presets import DataDriftPreset

    if len(current) < min_rows:
        raise NotEnoughDataError(
            f"only {len(current)} answered predictions in the log; the drift check needs at "
            f"least {min_rows} (monitor.min_rows)"
        )
    if len(reference) < 2:
        raise NotEnoughDataError(f"the reference has {len(reference)} rows; it needs at least 2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    skipped: dict[str, str] = {}
    values: list[str] = []
    for column in VALUE_COLUMNS:
        reason = _usable(current, reference, column)
        if reason:
            skipped[column] = reason
        else:
            values.append(column)
    embeddings = embedding_columns(reference)
    if not embeddings or embeddings != embedding_columns(current):
        skipped[EMBEDDINGS] = (
            f"embedding sizes differ (current {len(embedding_columns(current))}, "
            f"reference {len(embeddings)}): was the log written by another model?"
        )
        embeddings = []
    elif len(current) + len(reference) < TSNE_MIN_ROWS:
        skipped[EMBEDDINGS] = f"fewer than {TSNE_MIN_ROWS} rows in both tables together"
        embeddings = []
    if not values and not embeddings:
        raise MonitorDataError(
            "nothing to compare: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )

    columns = [*values, *embeddings]
    numeric = [c for c in columns if c != "label"]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=["label"] if "label" in values else [],
        embeddings={EMBEDDINGS: embeddings} if embeddings else None,
    )
    # The preset's share test fails at share >= drift_share: the same verdict as `drifted`.
    preset = DataDriftPreset(
        columns=values,
        drift_share=threshold,
        num_method=NUM_METHOD,
        cat_method=CAT_METHOD,
        threshold=VALUE_DRIFT_P,
    )
    metrics: list[Any] = [preset] if values else []
    if "label" in values:
        metrics.append(UniqueValueCount(column="label"))  # the predicted-label distribution
    if embeddings:
        method = ratio(threshold=EMBEDDING_DRIFT_SHARE)
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDINGS, drift_method=method))
    # The thresholds ride in the snapshot: the dashboard draws them beside the scores.
    metrics += threshold_metrics(threshold, EMBEDDING_DRIFT_SHARE if embeddings else None)
    window = window or LogWindow("", None, None, len(current), 0, "")
    report = Report(metrics, include_tests=True)
    with _embedding_plot_sample(plot_rows), threadpool_limits(limits=threads):
        snapshot = report.run(
            Dataset.from_pandas(
                current[columns].reset_index(drop=True), data_definition=definition
            ),
            Dataset.from_pandas(
                reference[columns].reset_index(drop=True), data_definition=definition
            ),
            timestamp=window.timestamp,
            tags=window.tags(DRIFT_TAG),
            metadata=window.metadata(),
            name=f"drift {window.timestamp:%Y-%m-%d %H:%M:%S}",
        )
    result = snapshot.dict()
    checks = _checks(result)
    share = _drifted_share(result)
    summary = DriftSummary(
        drifted=share >= threshold,
        drift_share=round(share, 4),
        threshold=threshold,
        rows_current=len(current),
        rows_reference=len(reference),
        checks=checks,
        skipped=skipped,
        report_html=str(out / "report.html"),
        summary_json=str(out / "summary.json"),
        window=window.to_dict(),
    )
    atomic_write(out / "report.html", lambda tmp: snapshot.save_html(str(tmp)))
    atomic_write_text(out / "snapshot.json", snapshot.dumps() + "\n")
    if traffic is not None:
        atomic_write_text(out / "traffic.json", traffic.dumps() + "\n")
    atomic_write_json(summary.to_dict(), out / "summary.json")
    if workspace is not None:
        add_to_workspace([snapshot, *([traffic] if traffic is not None else [])], workspace)
    return summary


@contextlib.contextmanager
def _embedding_plot_sample(rows: int) -> Iterator[None]:
    """Draw the embedding widget's t-SNE from at most ``rows`` rows per side.

    Evidently 0.7 samples that plot with its module constant ``SAMPLE_CONSTANT`` (2,500) and
    offers no option for it; it is set for the report's run and put back afterwards."""
    from evidently.legacy.metrics.data_drift import embeddings_drift

    saved = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = max(rows, TSNE_MIN_ROWS)
    try:
        yield
    finally:
        embeddings_drift.SAMPLE_CONSTANT = saved


def _drifted_share(snapshot: dict[str, Any]) -> float:
    """The ``DriftedColumnsCount`` share of the preset (0 when no value column could run)."""
    for metric in snapshot["metrics"]:
        if metric["config"]["type"].endswith(":DriftedColumnsCount"):
            return float(metric["value"]["share"])
    return 0.0


def _checks(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per check: Evidently's score, method and threshold, and whether it drifted (the value
    drift test's verdict; for embeddings, the drifted-component share above its threshold)."""
    from evidently.legacy.calculations.stattests import chi_stat_test, ks_stat_test

    names = {test.name: test.display_name for test in (ks_stat_test, chi_stat_test)}
    verdicts = {
        test["metric_config"]["metric_id"]: test["status"] != "SUCCESS"
        for test in snapshot.get("tests", [])
    }
    checks: dict[str, dict[str, Any]] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config["type"].endswith((":EmbeddingsDrift", ":ValueDrift")):
            continue
        score = metric["value"]
        score = float(score) if isinstance(score, int | float) else float("nan")
        if config["type"].endswith(":EmbeddingsDrift"):
            checks[EMBEDDINGS] = {
                "kind": "embeddings",
                "method": "ratio (share of components with Wasserstein distance > 0.1)",
                "score": score,
                "stattest_threshold": EMBEDDING_DRIFT_SHARE,
                "drifted": bool(score > EMBEDDING_DRIFT_SHARE),
            }
            continue
        checks[config["column"]] = {
            "kind": "value",
            "method": names.get(config.get("method"), config.get("method")),
            "score": None if math.isnan(score) else score,
            "stattest_threshold": config.get("threshold"),
            "drifted": bool(verdicts.get(metric["id"], False)),
        }
    return checks


def _tap(records: Iterable[dict[str, Any]], rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pass ``records`` on, keeping each one's request row in ``rows`` on the way."""
    for record in records:
        rows.append(request_row(record))
        yield record


def check_log(
    log: str | Path,
    out_dir: str | Path,
    *,
    model_dir: str | Path,
    cache_dir: str | Path,
    split_file: str | Path,
    split: str = "val",
    threshold: float = 0.3,
    min_rows: int = 30,
    workspace: str | Path | None = None,
    plot_rows: int = EMBEDDING_PLOT_ROWS,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "auto",
) -> DriftSummary:
    """The whole check for the CLI and the flow: read the log, load (or build) the reference
    of ``split`` into ``out_dir``, run :func:`drift_report` into ``out_dir``.

    The traffic snapshot is recorded even when there are too few answered requests to test
    (a service that refuses everything is exactly when the dashboard should show it)."""
    from emotions.monitor.reference import load_or_build_reference, records_table
    from emotions.serve.prediction_log import TornLines, read_prediction_log

    # One pass over the log builds both tables (a large log is read, and parsed, once).
    torn, rows = TornLines(), []
    current = records_table(_tap(read_prediction_log(log, torn), rows))
    requests = requests_frame(rows)
    window = LogWindow.of(requests, log, torn=torn.count)
    traffic = traffic_report(requests, window) if len(requests) else None
    if len(current) < min_rows:  # before the reference costs a pass of the model
        if traffic is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out_dir) / "traffic.json", traffic.dumps() + "\n")
            if workspace is not None:
                add_to_workspace(traffic, workspace)
        raise NotEnoughDataError(
            f"{log}: {len(current)} answered predictions; the drift check needs at least "
            f"{min_rows} (monitor.min_rows)"
        )
    reference = load_or_build_reference(
        out_dir, model_dir, cache_dir, split_file, split, device=device, precision=precision
    )
    return drift_report(
        current,
        reference,
        out_dir,
        threshold=threshold,
        min_rows=min_rows,
        workspace=workspace,
        window=window,
        traffic=traffic,
        plot_rows=plot_rows,
        threads=threads,
    )
