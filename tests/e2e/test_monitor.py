"""The drift monitor: reference table, Evidently report, and the monitor flow's decision.

Real clips, the shared tiny trained model and real Evidently. The "current" logs are written
the way the service writes them (`Predictor` + `prediction_record` + `PredictionLog`): one from
the corpus files themselves (no drift), one from the same clips made much darker and quieter
(drift on brightness, motion and loudness).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from smallcorpus import DATASET, RUN

from emotions.media.decode import DecodedClip
from emotions.monitor.drift import NotEnoughDataError, check_log, drift_report
from emotions.monitor.reference import (
    INPUT_COLUMNS,
    build_reference,
    embedding_columns,
    load_or_build_reference,
    log_table,
)
from emotions.serve.limits import Rejection
from emotions.serve.prediction_log import PredictionLog, error_record, prediction_record
from emotions.serve.predictor import Predictor, summarise_input

SPLIT = "train"  # the tiny corpus's largest split (18 clips); params default to "val"


@pytest.fixture(scope="module")
def paths(corpus):
    base = corpus.artifacts / DATASET
    return base / "cache", base / "variants" / "full" / "split.parquet"


@pytest.fixture(scope="module")
def decoded(corpus, model_dir, paths) -> list[DecodedClip]:
    """The reference split's files decoded as an upload would be."""
    split = pd.read_parquet(paths[1])
    manifest = pd.read_parquet(corpus.artifacts / DATASET / "manifest.parquet")
    chosen = manifest[manifest["clip_id"].isin(split.loc[split["split"] == SPLIT, "clip_id"])]
    predictor = Predictor(model_dir)
    return [predictor.decode(corpus.root / p) for p in chosen["path"]]


def darker_and_quieter(clip: DecodedClip) -> DecodedClip:
    fbank = clip.fbank.copy()
    fbank[: clip.audio_frames] -= 4.0  # log-mel: about e^-4 of the energy
    frames = (clip.frames.astype(np.float32) * 0.2).astype(np.uint8)
    return dataclasses.replace(clip, frames=frames, fbank=fbank)


def write_log(path: Path, model_dir: Path, clips: list[DecodedClip]) -> Path:
    predictor = Predictor(model_dir)
    log = PredictionLog(path)
    results, embeddings = predictor.predict_clips_with_embeddings(clips)
    for i, (clip, result, vector) in enumerate(zip(clips, results, embeddings, strict=True)):
        log.append(
            prediction_record(
                request_id=f"r{i}",
                filename=f"clip{i}.mp4",
                result=result,
                stats=summarise_input(clip),
                embedding=vector,
                model="tiny",
                size_bytes=1000,
                latency_ms=1.0,
                batch_size=len(clips),
            )
        )
    log.close()
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory, model_dir, decoded) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("logs")
    clean = write_log(where / "clean.jsonl", model_dir, decoded)
    shifted = write_log(
        where / "shifted.jsonl", model_dir, [darker_and_quieter(c) for c in decoded]
    )
    short = write_log(where / "short.jsonl", model_dir, decoded[:3])
    # A refusal line and a line cut short by a crash are not rows.
    with short.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "x", "status": "error", "error": "too large"}) + "\n")
        handle.write('{"id": "cut", "status": "o')
    return {"clean": clean, "shifted": shifted, "short": short}


@pytest.fixture(scope="module")
def reference(model_dir, paths) -> pd.DataFrame:
    return build_reference(model_dir, *paths, split=SPLIT)


def test_the_reference_measures_cached_clips_as_the_service_measures_uploads(
    reference, logs, decoded
):
    live = log_table(logs["clean"])
    assert len(reference) == len(live) == len(decoded) == 18
    assert set(reference.columns) - {"clip_id"} == set(live.columns)
    assert len(embedding_columns(reference)) > 8
    # Same clips both ways: the sorted statistics and embeddings agree (cache fbank is float16).
    for column in (*INPUT_COLUMNS, "confidence", *embedding_columns(reference)[:4]):
        np.testing.assert_allclose(
            np.sort(reference[column]), np.sort(live[column]), atol=2e-3, err_msg=column
        )
    assert sorted(reference["label"]) == sorted(live["label"])
    assert reference["brightness"].between(0, 1).all() and (reference["motion"] > 0).all()


def test_reference_is_reused_until_its_inputs_change(tmp_path, model_dir, paths, reference):
    first = load_or_build_reference(tmp_path, model_dir, *paths, split=SPLIT)
    stamp = (tmp_path / "reference.parquet").stat().st_mtime_ns
    again = load_or_build_reference(tmp_path, model_dir, *paths, split=SPLIT)
    assert (tmp_path / "reference.parquet").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first, again)
    assert json.loads((tmp_path / "reference.json").read_text())["rows"] == len(reference)


def test_same_distribution_does_not_drift(tmp_path, reference, logs):
    summary = drift_report(
        log_table(logs["clean"]), reference, tmp_path, threshold=0.3, min_rows=10
    )
    assert not summary.drifted, summary.checks
    assert summary.drift_share < 0.3
    assert not summary.checks["brightness"]["drifted"]
    assert "embedding" in summary.checks and not summary.checks["embedding"]["drifted"]


def test_darker_quieter_clips_drift_and_the_report_is_one_offline_file(tmp_path, reference, logs):
    summary = drift_report(
        log_table(logs["shifted"]), reference, tmp_path, threshold=0.3, min_rows=10
    )
    assert summary.drifted
    assert {"brightness", "motion", "loudness"} <= set(summary.drifted_checks)
    assert summary.drift_share >= 0.3
    assert summary.checks["brightness"]["method"] == "K-S p_value"
    assert (
        summary.checks["brightness"]["score"] < summary.checks["brightness"]["stattest_threshold"]
    )

    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["drifted"] is True and stored["drift_share"] == summary.drift_share
    assert stored["rows_current"] == stored["rows_reference"] == 18
    assert set(stored["checks"]) == {*INPUT_COLUMNS, "label", "confidence", "embedding"}
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert 'src="http' not in html and "brightness" in html  # self-contained, has our columns
    assert json.loads((tmp_path / "snapshot.json").read_text())["metric_results"]


def test_too_few_rows_is_a_clear_error(tmp_path, reference, logs):
    with pytest.raises(NotEnoughDataError, match=r"3 answered predictions.*at least 10"):
        drift_report(log_table(logs["short"]), reference, tmp_path, min_rows=10)
    assert not (tmp_path / "report.html").exists()


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


def test_the_monitor_flow_decides_to_retrain_only_on_drift(
    harness, tmp_path, corpus, model_dir, logs
):
    from flows.monitor import INSUFFICIENT, NO_DRIFT, REQUESTED, WOULD_RETRAIN, monitor

    repo = corpus.workdir(tmp_path / "repo")
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["monitor"].update(reference_split=SPLIT, min_rows=10, threshold=0.3)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def check(log: str, on_drift: str = "report") -> dict:
        result = monitor(
            repo=str(repo),
            log=str(logs[log]),
            model=str(model_dir),
            run=RUN,
            on_drift=on_drift,
        )
        assert json.loads((repo / "artifacts/monitor/summary.json").read_text()) == json.loads(
            json.dumps(result)
        )
        return result

    assert check("clean")["decision"] == NO_DRIFT
    drifted = check("shifted")
    assert drifted["decision"] == WOULD_RETRAIN and drifted["drifted"] is True
    assert "retrain" not in drifted
    # As the monitor deployment runs it: the drift becomes a Prefect event, not a retrain here.
    requested = check("shifted", on_drift="event")
    assert requested["decision"] == REQUESTED and requested["event"]
    assert "retrain" not in requested
    short = check("short")
    assert short["decision"] == INSUFFICIENT and "at least 10" in short["reason"]
    assert (repo / "artifacts/monitor/reference.parquet").is_file()

    # Both reports became runs of one project in the Evidently UI workspace (the dashboard).
    from evidently.ui.workspace import Workspace

    from emotions.monitor.drift import PROJECT

    workspace = Workspace.create(str(repo / "artifacts/monitor/workspace"))
    (project,) = workspace.search_project(PROJECT)
    runs = [workspace.get_run(project.id, run) for run in workspace.list_runs(project.id)]
    kinds = sorted(tag for run in runs for tag in run.tags if tag in ("drift", "traffic"))
    # Three drift reports; four traffic counts (the short log is counted, too few to test).
    assert kinds == ["drift"] * 3 + ["traffic"] * 4


def test_the_cli_reports_drift_and_refuses_a_short_log(
    tmp_path, monkeypatch, capsys, corpus, model_dir, logs
):
    from emotions.cli import main

    repo = corpus.workdir(tmp_path / "repo")
    monkeypatch.chdir(repo)
    common = ["--model", str(model_dir), "--run", RUN, "--min-rows", "10", "--out", "mon"]
    assert main(["monitor", "--log", str(logs["short"]), *common]) == 2
    assert "3 answered predictions" in capsys.readouterr().err
    assert not (repo / "mon" / "report.html").exists()

    # params.yaml's reference split is "val" (6 clips here): fewer rows, still a real report.
    assert main(["monitor", "--log", str(logs["shifted"]), *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("monitor: DRIFT") and "brightness" in out
    summary = json.loads((repo / "mon" / "summary.json").read_text())
    assert summary["rows_reference"] == 6 and summary["drifted"] is True
    assert json.loads((repo / "mon" / "reference.json").read_text())["split"] == "val"


def test_snapshot_json_is_evidentlys_own_and_loads_back(tmp_path, reference, logs):
    from evidently.core.report import Snapshot

    summary = drift_report(
        log_table(logs["shifted"]), reference, tmp_path, threshold=0.3, min_rows=10
    )
    loaded = Snapshot.load(tmp_path / "snapshot.json")
    values = {
        metric["config"].get("column", metric["config"]["type"]): metric["value"]
        for metric in loaded.dict()["metrics"]
    }
    assert values["brightness"] == pytest.approx(summary.checks["brightness"]["score"])
    drifted = values["evidently:metric_v2:DriftedColumnsCount"]
    assert drifted["share"] == pytest.approx(summary.drift_share, abs=1e-4)
    assert drifted["count"] == len([c for c in summary.drifted_checks if c != "embedding"])
    assert "drift" in loaded.dump_dict()["tags"]


def refusals(path: Path, count: int) -> Path:
    """Append ``count`` refused requests, as the service logs a too-large upload."""
    log = PredictionLog(path)
    for i in range(count):
        rejection = Rejection(413, "too large", "the upload exceeds serve.max_upload_mb")
        log.append(error_record(request_id=f"x{i}", rejection=rejection, filename="big.mp4"))
    log.close()
    return path


@pytest.mark.slow
def test_the_dashboard_shows_three_monitor_runs_through_the_evidently_ui(
    tmp_path, model_dir, paths, logs, decoded
):
    """Three monitor runs (clean, shifted, clean with refusals), then a real `evidently ui` on
    loopback: its API holds the panels, and each panel's series has three points in time."""
    import requests
    from evidently.core.report import Snapshot
    from liveserver import start_evidently_ui

    from emotions.monitor.dashboard import PROJECT, panels

    third = refusals(write_log(tmp_path / "third.jsonl", model_dir, decoded), 6)
    workspace, out = tmp_path / "workspace", tmp_path / "monitor"
    summaries = [
        check_log(
            log,
            out,
            model_dir=model_dir,
            cache_dir=paths[0],
            split_file=paths[1],
            split=SPLIT,
            min_rows=10,
            workspace=workspace,
        )
        for log in (logs["clean"], logs["shifted"], third)
    ]
    assert [s.drifted for s in summaries] == [False, True, False]
    window = summaries[2].window
    assert window["requests"] == 24 and window["refused"] == 6 and window["model"] == "tiny"
    assert window["log_start"] < window["log_end"]
    loaded = Snapshot.load(out / "traffic.json")  # the last run's traffic, Evidently's format
    assert loaded.dict()["metrics"][0]["value"] == 24

    server = start_evidently_ui(workspace, tmp_path)
    try:
        api = f"{server.url}/api"
        (project,) = requests.get(f"{api}/projects/search/{PROJECT}", timeout=30).json()
        dashboard = requests.get(f"{api}/v2/dashboards/{project['id']}", timeout=30).json()
        titles = [panel["title"] for panel in dashboard["panels"]]
        assert titles == [panel.title for panel in panels()]
        series: dict[str, list] = {}
        for panel in dashboard["panels"]:
            filters = [
                {key: value[key] for key in ("tags", "metadata", "metric", "metric_labels")}
                for value in panel["values"]
            ]
            answer = requests.post(
                f"{api}/v2/snapshots/{project['id']}/data_series_batch",
                json={"series_filter": filters},
                timeout=30,
            )
            assert answer.status_code in (200, 201), answer.text
            body = answer.json()
            assert len(body["sources"]) == 3, (panel["title"], body["sources"])
            times = [source["timestamp"] for source in body["sources"]]
            assert times == sorted(times) and len(set(times)) == 3
            series[panel["title"]] = body["series"]
    finally:
        server.stop()
        print(server.tail(5))

    share, line = sorted(series["Drift share"], key=lambda s: "check" in s["params"])
    assert share["values"] == [pytest.approx(s.drift_share, abs=1e-4) for s in summaries]
    assert line["values"] == [0.3] * 3  # the threshold the monitor retrains at
    scores = {
        s["params"].get("column", "threshold"): s["values"]
        for s in series["Input drift (p-values)"]
    }
    assert scores["brightness"][1] < 0.05 < scores["brightness"][0]  # the shifted run drifted
    assert scores["threshold"] == [0.05] * 3
    labels = series["Predicted labels"]
    assert len(labels) >= 2 and all(len(s["values"]) == 3 for s in labels)
    for i in range(3):  # the class shares of each run add up to one
        assert sum(s["values"][i] or 0 for s in labels) == pytest.approx(1.0)
    (count,) = series["Requests"]
    assert count["values"] == [18, 18, 24]
    (refused,) = series["Refused share"]
    assert refused["values"] == [0, 0, pytest.approx(6 / 24)]
