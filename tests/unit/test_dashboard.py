"""The monitor's Evidently dashboard as a user sees it: a real workspace, a real `evidently ui`.

Two drift reports (one with darker clips) of synthetic log tables go into a workspace that an
older version made (its retired panel and a panel a user added by hand); the UI's own API then
gives the dashboard and each panel's series. The legends are filled as the UI fills them
(``{{name}}`` from the series' labels), so what is checked is the text the legend shows.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from liveserver import start_evidently_ui

from emotions.monitor.dashboard import (
    INPUT_CHECKS,
    OUTPUT_CHECKS,
    PALETTE_SIZE,
    PROJECT,
    RETIRED_TITLES,
    VALUE_DRIFT_P,
    open_project,
    panels,
)
from emotions.monitor.drift import EMBEDDING_DRIFT_SHARE, drift_report
from emotions.monitor.traffic import LogWindow

CLASSES = ("anger", "fear", "joy", "sadness")
THRESHOLD = 0.3
ROWS = 40  # per side: enough for the embedding check's t-SNE plot


def log_table(rng: np.random.Generator, darker: float = 0.0) -> pd.DataFrame:
    """A log table as emotions.monitor.reference builds it (the columns the report reads)."""
    table = {
        "brightness": rng.normal(0.5 - darker, 0.1, ROWS),
        "motion": rng.normal(1.0, 0.2, ROWS),
        "loudness": rng.normal(-20.0, 3.0, ROWS),
        "duration_s": rng.uniform(2.0, 10.0, ROWS),
        "label": rng.choice(CLASSES, ROWS),
        "confidence": rng.uniform(0.3, 1.0, ROWS),
    }
    table |= {f"emb_{i}": rng.normal(0.0, 1.0, ROWS) for i in range(6)}
    return pd.DataFrame(table)


def legend(template: str, params: dict[str, str]) -> str:
    """The legend text the UI shows: ``{{name}}`` replaced by the series' label ``name``."""
    return re.sub(r"\{\{([a-zA-Z_0-9]+)?\}\}", lambda m: params.get(m[1], m[0]), template)


@pytest.fixture(scope="module")
def ui_view(tmp_path_factory) -> dict[str, Any]:
    """Each panel of the served dashboard: its definition and its series, with legends."""
    from evidently.sdk.panels import line_plot_panel

    where = tmp_path_factory.mktemp("dashboard")
    workspace = where / "workspace"
    _, project = open_project(workspace)
    # As an older version left it: a retired panel, and one the user added by hand.
    for title in (*RETIRED_TITLES, "Mine"):
        project.dashboard.add_panel(line_plot_panel(title, []), tab="Drift")

    rng = np.random.default_rng(0)
    reference = log_table(rng)
    for day, darker in ((1, 0.0), (2, 0.3)):
        window = LogWindow("log", datetime(2026, 1, day), datetime(2026, 1, day, 1), ROWS, 0, "m")
        drift_report(
            log_table(rng, darker),
            reference,
            where / f"run{day}",
            threshold=THRESHOLD,
            min_rows=10,
            workspace=workspace,
            window=window,
        )

    server = start_evidently_ui(workspace, where)
    try:
        api = f"{server.url}/api"
        (found,) = requests.get(f"{api}/projects/search/{PROJECT}", timeout=30).json()
        dashboard = requests.get(f"{api}/v2/dashboards/{found['id']}", timeout=30).json()
        view: dict[str, Any] = {}
        for panel in dashboard["panels"]:
            values = panel["values"]
            filters = [
                {key: value[key] for key in ("tags", "metadata", "metric", "metric_labels")}
                for value in values
            ]
            answer = requests.post(
                f"{api}/v2/snapshots/{found['id']}/data_series_batch",
                json={"series_filter": filters},
                timeout=30,
            )
            assert answer.status_code in (200, 201), answer.text
            series = answer.json()["series"]
            for item in series:
                item["legend"] = legend(values[item["filter_index"]]["legend"], item["params"])
            view[panel["title"]] = {"panel": panel, "series": series}
    finally:
        server.stop()
    return view


def test_the_ui_shows_the_declared_panels_and_keeps_a_users_own(ui_view):
    assert list(ui_view) == [*(p.title for p in panels()), "Mine"]
    assert not set(RETIRED_TITLES) & set(ui_view)


def test_the_predicted_labels_legend_names_the_classes(ui_view):
    series = ui_view["Predicted labels"]["series"]
    assert sorted(s["legend"] for s in series) == sorted(CLASSES)
    for day in range(2):
        assert sum(s["values"][day] for s in series) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("title", "checks"),
    [("Input drift (p-values)", INPUT_CHECKS), ("Prediction drift (p-values)", OUTPUT_CHECKS)],
)
def test_p_value_panels_hold_only_p_values_and_their_threshold(ui_view, title, checks):
    series = ui_view[title]["series"]
    scores = [s for s in series if s["metric_type"].endswith(":ValueDrift")]
    assert [s["params"]["column"] for s in scores] == list(checks)
    assert all(s["legend"] == s["params"]["column"] for s in scores)
    assert {s["params"]["method"] for s in scores} <= {"ks", "chisquare"}  # p-value tests
    assert all(0.0 <= v <= 1.0 for s in scores for v in s["values"])
    (line,) = [s for s in series if s not in scores]
    assert line["metric_type"].endswith(":DriftThreshold")
    assert line["values"] == [VALUE_DRIFT_P, VALUE_DRIFT_P]
    assert "threshold" in line["legend"]
    # The darker run's brightness p-value falls below the line it is drawn against.
    if "brightness" in checks:
        brightness = scores[checks.index("brightness")]["values"]
        assert brightness[1] < VALUE_DRIFT_P < brightness[0]


@pytest.mark.parametrize(
    ("title", "metric", "threshold"),
    [
        ("Drift share", ":DriftedColumnsCount", THRESHOLD),
        ("Embedding drift", ":EmbeddingsDrift", EMBEDDING_DRIFT_SHARE),
    ],
)
def test_share_panels_are_apart_from_p_values_with_their_threshold(
    ui_view, title, metric, threshold
):
    kinds = [s["metric_type"].rsplit(":", 1)[-1] for s in ui_view[title]["series"]]
    assert kinds == [metric[1:], "DriftThreshold"]
    share, line = ui_view[title]["series"]
    assert all(0.0 <= v <= 1.0 for v in share["values"])
    assert line["values"] == [threshold, threshold]


def test_every_series_of_a_panel_gets_its_own_colour_and_legend(ui_view):
    for title, shown in ui_view.items():
        legends = [s["legend"] for s in shown["series"]]
        assert len(legends) <= PALETTE_SIZE, title  # the UI's palette repeats after six
        assert len(set(legends)) == len(legends), title
        assert all(text and "{{" not in text for text in legends), title
