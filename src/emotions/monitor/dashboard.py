"""The Evidently UI dashboard of the drift monitor (``evidently ui --workspace DIR``).

Every monitor run adds its snapshots to the :data:`PROJECT` project of a local workspace: the
drift snapshot (tag ``drift``) and the traffic snapshot (tag ``traffic``), both stamped with the
log window they cover (see :mod:`emotions.monitor.traffic`). The project's page "Dashboard"
plots them over time; the panels are declared here once (:func:`panels`) and written into the
project on every run, so a workspace made by an older version gets the current ones, and a
panel a user added by hand (another title) stays.

Scores of different meaning sit on different panels, each with its threshold drawn: the value
checks are p-values (drift below :data:`VALUE_DRIFT_P`), the drift share and the embedding check
are shares (drift at or above their threshold). Evidently 0.7 panels cannot draw a constant line,
so each drift snapshot carries its thresholds as :class:`DriftThreshold` metrics, plotted as one
more series of the panel they belong to; the line then also shows when a threshold changed.
The UI colours a panel's series from a palette of six, so no panel has more than six series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric

from emotions.monitor.traffic import DRIFT_TAG, TRAFFIC_TAG

PROJECT = "emotions-drift"
# The value checks are p-value tests (K-S for numbers, chi-square for the label) at this level.
VALUE_DRIFT_P = 0.05
# The checks of each p-value panel, in the order of emotions.monitor.drift.
INPUT_CHECKS = ("brightness", "motion", "loudness", "duration_s")
OUTPUT_CHECKS = ("label", "confidence")
# DriftThreshold.check of each threshold line.
SHARE, VALUE, EMBEDDING = "drift_share", "value", "embedding"
# Most series a panel may have: the Evidently UI's palette has six colours, then repeats.
PALETTE_SIZE = 6
# Panels of earlier versions that the current ones replace.
RETIRED_TITLES = ("Per-check drift scores",)


class DriftThreshold(SingleValueMetric):
    """A drift check's threshold, recorded in the snapshot so a panel can draw it as a line."""

    check: str
    value: float


class DriftThresholdCalculation(SingleValueCalculation[DriftThreshold]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        return self.result(self.metric.value)

    def display_name(self) -> str:
        return f"Threshold of the {self.metric.check} check"


DriftThreshold.__calculation_type__ = DriftThresholdCalculation


def threshold_metrics(drift_share: float, embedding: float | None) -> list[DriftThreshold]:
    """The thresholds a drift snapshot records: the share that triggers a retrain, the value
    checks' p-value and (when the embedding check runs) the embedding's drifted share."""
    metrics = [
        DriftThreshold(check=SHARE, value=drift_share),
        DriftThreshold(check=VALUE, value=VALUE_DRIFT_P),
    ]
    if embedding is not None:
        metrics.append(DriftThreshold(check=EMBEDDING, value=embedding))
    return metrics


def panels() -> list[Any]:
    """The dashboard's panels; each value names the Evidently metric (and labels) it plots.

    A legend's ``{{name}}`` is filled by the UI from the series' labels (``{{label}}``: the
    class)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    def metric(name: str, tag: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(metric=name, tags=[tag], legend=legend, metric_labels=labels)

    def threshold(check: str, legend: str) -> PanelMetric:
        return metric("DriftThreshold", DRIFT_TAG, legend, check=check)

    def p_values(columns: Sequence[str]) -> list[PanelMetric]:
        checks = [metric("ValueDrift", DRIFT_TAG, c, column=c) for c in columns]
        return [*checks, threshold(VALUE, "threshold (drift below)")]

    return [
        line_plot_panel(
            "Drift share",
            [
                metric("DriftedColumnsCount", DRIFT_TAG, "drifted share", value_type="share"),
                threshold(SHARE, "retrain at (monitor.threshold)"),
            ],
            description="Share of the six value checks that drifted; at or above the line "
            "the monitor retrains",
            size="half",
        ),
        line_plot_panel(
            "Embedding drift",
            [
                metric("EmbeddingsDrift", DRIFT_TAG, "drifted components"),
                threshold(EMBEDDING, "threshold (drift above)"),
            ],
            description="Share of the embedding's components that drifted (Wasserstein "
            "distance above 0.1); above the line the embedding drifted",
            size="half",
        ),
        line_plot_panel(
            "Input drift (p-values)",
            p_values(INPUT_CHECKS),
            description="K-S p-value of each input statistic against the reference; below "
            "the line it drifted",
            size="half",
        ),
        line_plot_panel(
            "Prediction drift (p-values)",
            p_values(OUTPUT_CHECKS),
            description="p-value of the predicted label (chi-square) and the confidence (K-S) "
            "against the reference; below the line it drifted",
            size="half",
        ),
        bar_plot_panel(
            "Predicted labels",
            [
                metric(
                    "UniqueValueCount", DRIFT_TAG, "{{label}}", column="label", value_type="share"
                )
            ],
            description="Share of each predicted class among the answered requests",
            size="half",
            stacked=True,
        ),
        line_plot_panel(
            "Requests",
            [metric("RowCount", TRAFFIC_TAG, "requests")],
            description="Requests in the monitored log (answered and refused)",
            size="half",
        ),
        line_plot_panel(
            "Refused share",
            [
                metric(
                    "CategoryCount",
                    TRAFFIC_TAG,
                    "refused",
                    column="status",
                    value_type="share",
                )
            ],
            description="Share of requests the service refused or failed (status error)",
            size="half",
        ),
    ]


def ensure_panels(workspace: Any, project: Any) -> list[str]:
    """Write :func:`panels` into the project's dashboard: each replaces the panel of its title
    (or is appended), retired titles go, a panel of any other title stays. Returns the titles
    that changed."""
    from evidently.sdk.models import DashboardModel

    current = project.dashboard.model()
    wanted = panels()
    titles = {panel.title for panel in wanted}
    present = {panel.title: panel for panel in current.panels}
    changed = [
        panel.title
        for panel in wanted
        if panel.title not in present or _definition(present[panel.title]) != _definition(panel)
    ]
    gone = [title for title in RETIRED_TITLES if title in present]
    if not changed and not gone:
        return []
    kept = [p for p in current.panels if p.title not in titles and p.title not in gone]
    # A panel that is current keeps its id; the UI shows the panels in this order.
    ordered = [p if p.title in changed else present[p.title] for p in wanted] + kept
    # The UI ignores dashboard tabs: the first one (if any) lists every panel.
    tab = current.tabs[0] if current.tabs else None
    tabs = [tab.copy(update={"panels": [p.id for p in ordered]})] if tab else []
    workspace.save_dashboard(project.id, DashboardModel(tabs=tabs, panels=ordered))
    return [*changed, *gone]


def _definition(panel: Any) -> dict[str, Any]:
    """What a panel shows (its id aside), to tell whether a stored panel is current."""
    return panel.dict(exclude={"id"})


def open_project(workspace: str | Path) -> tuple[Any, Any]:
    """The local workspace (created on first use) and its :data:`PROJECT` project, with the
    dashboard's panels in place."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    found = ws.search_project(PROJECT)
    project = found[0] if found else ws.create_project(PROJECT, description="eMotions drift")
    ensure_panels(ws, project)
    return ws, project


def add_to_workspace(snapshots: Sequence[Any] | Any, workspace: str | Path) -> str:
    """Add ``snapshots`` as runs of the :data:`PROJECT` project; returns the project id."""
    ws, project = open_project(workspace)
    items: Iterable[Any] = snapshots if isinstance(snapshots, list | tuple) else [snapshots]
    for snapshot in items:
        ws.add_run(project.id, snapshot, include_data=False)
    return str(project.id)
