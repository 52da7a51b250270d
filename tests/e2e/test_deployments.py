"""The deployments against a real `prefect server start` on loopback: a drift event about a
repository makes the retrain deployment's trigger start a retrain flow run of that repository,
and two runs of the pipeline deployment take turns on the repository's concurrency slot.

Everything is real and separate: the server (its own PREFECT_HOME in tmp, a free port, no UI,
no scheduler so the only runs are the triggered ones), `python -m flows.deployments` serving
the three deployments in a child process, and `python -m flows.events` emitting the event from
another child, as the monitor flow does on drift. The test reads the server's REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from flowrepo import REPO, py, toy_repo
from liveserver import LiveServer, free_port, start_server

from flows.events import DRIFT_EVENT, repo_resource_id
from flows.lock import limit_name

NEVER = "0 0 1 1 *"
# The toy stage: slow while the file `slow` exists; appends when it ran to spans.jsonl.
SPAN = (
    "import json,os,time; t=time.time(); time.sleep(6 if os.path.exists('slow') else 0); "
    "open('model.bin','w').write('m'); "
    "open('spans.jsonl','a').write(json.dumps([t, time.time()]) + chr(10))"
)  # the crons of the test repository: no schedule interferes (scheduler off)


def prefect_env(home: Path, api: str | None = None) -> dict[str, str]:
    """The children's environment: a private PREFECT_HOME, this worktree's code first."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    where = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    argv = [str(Path(sys.executable).parent / "prefect"), "server", "start"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-scheduler"]
    live = start_server(
        argv,
        port=port,
        cwd=where,
        env=prefect_env(where / "home"),
        output=where / "server.log",
        timeout_s=240,
        health="/api/health",
    )
    yield live
    live.stop()


def api(server: LiveServer, path: str, body: dict | None = None) -> object:
    url = f"{server.url}/api{path}"
    answer = requests.post(url, json=body or {}, timeout=30)
    assert answer.status_code in (200, 201), f"{path}: {answer.status_code} {answer.text}"
    return answer.json()


def poll(what, check, timeout_s: float = 180.0, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(every_s)


@pytest.mark.slow
def test_a_drift_event_starts_a_retrain_run_and_deployment_runs_share_one_slot(server, tmp_path):
    repo = toy_repo(
        tmp_path / "toy",
        {"train": {"cmd": py(SPAN), "outs": ["model.bin"]}},
        retrain_cron=NEVER,
        monitor_cron=NEVER,
        lock_wait_s=120,
    )
    root = repo.resolve()
    env = prefect_env(tmp_path / "home", f"{server.url}/api")
    handle = (tmp_path / "serve.log").open("wb")
    serving = subprocess.Popen(
        [sys.executable, "-m", "flows.deployments", "--repo", str(root)],
        cwd=tmp_path,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    runner = LiveServer(server.url, serving, tmp_path / "serve.log")
    try:
        # The three deployments, their schedules and the retrain trigger are on the server.
        found = poll(
            "three deployments",
            lambda: (
                items
                if len(items := api(server, "/deployments/filter")) == 3 and serving.poll() is None
                else None
            ),
            timeout_s=180,
        )
        by_name = {item["name"]: item for item in found}
        assert set(by_name) == {"pipeline-emotions", "retrain-emotions", "monitor-emotions"}
        retrain = by_name["retrain-emotions"]
        assert [s["schedule"]["cron"] for s in retrain["schedules"]] == [NEVER]
        assert retrain["parameters"] == {"repo": str(root), "refresh": "pull"}
        assert by_name["monitor-emotions"]["parameters"]["on_drift"] == "event"
        automations = api(server, "/automations/filter")
        (trigger,) = [a["trigger"] for a in automations if "drift" in a["name"]]
        assert trigger["expect"] == [DRIFT_EVENT]
        assert trigger["match"] == {"prefect.resource.id": repo_resource_id(root)}
        limits = api(server, "/v2/concurrency_limits/filter")
        assert {"name": limit_name(root), "limit": 1} in [
            {"name": item["name"], "limit": item["limit"]} for item in limits
        ]
        assert api(server, "/flow_runs/filter") == []  # nothing ran yet

        # The monitor's event, emitted by a separate process.
        sent = subprocess.run(
            [sys.executable, "-m", "flows.events", "--repo", str(root), "--model", "tiny"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        def retrain_runs() -> list[dict]:
            runs = api(
                server,
                "/flow_runs/filter",
                {"flow_runs": {"deployment_id": {"any_": [retrain["id"]]}}},
            )
            return [run for run in runs if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]

        (run,) = poll("a finished retrain flow run", retrain_runs, timeout_s=240)
        assert run["created_by"]["type"] == "AUTOMATION"
        assert run["parameters"] == {"repo": str(root), "refresh": "pull"}
        # It ran here, in the served deployment's process, on this repository: its decision
        # record names the flow run (the toy repository has no metrics, so no challenger).
        decisions = (root / "registry" / "decisions.jsonl").read_text(encoding="utf-8")
        record = json.loads(decisions.splitlines()[-1])
        assert record["flow_run"] == run["name"] and record["decision"] == "failed"

        # Two runs of the pipeline deployment at once: the repository's one slot keeps the
        # second off the repository until the first is done.
        (root / "slow").touch()
        (root / "spans.jsonl").unlink(missing_ok=True)
        pipeline_id = by_name["pipeline-emotions"]["id"]
        created = [
            api(
                server,
                f"/deployments/{pipeline_id}/create_flow_run",
                {"parameters": {"force": True}},
            )
            for _ in range(2)
        ]

        def held() -> bool:
            limits = api(server, "/v2/concurrency_limits/filter")
            return any(i["name"] == limit_name(root) and i["active_slots"] == 1 for i in limits)

        poll("the repository's slot taken by a pipeline run", held, timeout_s=180, every_s=0.3)

        def finished() -> list[dict]:
            ids = [item["id"] for item in created]
            runs = api(server, "/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
            done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
            return done if len(done) == 2 else []

        runs = poll("both pipeline runs finished", finished, timeout_s=240)
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], runs
        lines = (root / "spans.jsonl").read_text(encoding="utf-8").splitlines()
        spans = sorted(json.loads(line) for line in lines)
        assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # one after the other
    finally:
        runner.stop()
        print(runner.tail(40))
