"""The Evidently UI dashboard of the drift monitor (``evidently ui --workspace DIR``).

Every monitor run adds its snapshots to the :data:`PROJECT` project of a local workspace: the
drift snapshot (tag ``drift``) and the traffic snapshot (tag ``traffic``), both stamped with the
log window they cover (see :mod:`emotions.monitor.traffic`). The project's dashboard plots them
over time; the panels are declared here once (:func:`panels`) and added to the project when
missing, so a workspace made by an older version gets them on its next run and a panel a user
added by hand stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from emotions.monitor.traffic import DRIFT_TAG, TRAFFIC_TAG

PROJECT = "emotions-drift"
TAB = "Drift"
# The value drift checks the per-check panel shows, in the order of emotions.monitor.drift.
DRIFT_SCORE_COLUMNS = ("brightness", "motion", "loudness", "duration_s", "label", "confidence")


def panels() -> list[Any]:
    """The dashboard's panels; each value names the Evidently metric (and labels) it plots."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    def metric(name: str, tag: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(metric=name, tags=[tag], legend=legend, metric_labels=labels)

    scores = [
        metric("ValueDrift", DRIFT_TAG, column, column=column) for column in DRIFT_SCORE_COLUMNS
    ]
    scores.append(metric("EmbeddingsDrift", DRIFT_TAG, "embedding"))
    return [
        line_plot_panel(
            "Drift share",
            [metric("DriftedColumnsCount", DRIFT_TAG, "drifted share", value_type="share")],
            description="Share of the value checks that drifted (DataDriftPreset); the monitor "
            "retrains at monitor.threshold",
            size="half",
        ),
        line_plot_panel(
            "Per-check drift scores",
            scores,
            description="p-value of each value check (drift below its threshold, usually 0.05); "
            "embedding: share of drifted components (drift above 0.2)",
            size="half",
        ),
        bar_plot_panel(
            "Predicted labels",
            [metric("UniqueValueCount", DRIFT_TAG, "share", column="label", value_type="share")],
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


def ensure_panels(project: Any) -> list[str]:
    """Add the :func:`panels` the project's dashboard lacks (matched by title); returns the
    titles added."""
    present = {panel.title for panel in project.dashboard.model().panels}
    added = []
    for panel in panels():
        if panel.title not in present:
            project.dashboard.add_panel(panel, tab=TAB)
            added.append(panel.title)
    return added


def open_project(workspace: str | Path) -> tuple[Any, Any]:
    """The local workspace (created on first use) and its :data:`PROJECT` project, with the
    dashboard's panels in place."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    found = ws.search_project(PROJECT)
    project = found[0] if found else ws.create_project(PROJECT, description="eMotions drift")
    ensure_panels(project)
    return ws, project


def add_to_workspace(snapshots: Sequence[Any] | Any, workspace: str | Path) -> str:
    """Add ``snapshots`` as runs of the :data:`PROJECT` project; returns the project id."""
    ws, project = open_project(workspace)
    items: Iterable[Any] = snapshots if isinstance(snapshots, list | tuple) else [snapshots]
    for snapshot in items:
        ws.add_run(project.id, snapshot, include_data=False)
    return str(project.id)
