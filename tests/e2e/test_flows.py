"""The pipeline flow on real Prefect (a test server) and real DVC.

One slow test runs our whole DAG on a small generated corpus (order, artifacts, a second run that
skips everything). The failure modes run on toy dvc.yaml files of `python -c` stages, where a
stage can be made to fail once, fail hard, or sleep long enough to be killed or overlapped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `flows` lives at the repository root, beside src/
    sys.path.insert(0, str(REPO))
# Prefect's home (profiles, local storage) stays in the git-ignored .prefect/, not ~/.prefect.
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))

from flowrepo import py, real_repo, run, toy_repo, write_params  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.commit_results import commit_results  # noqa: E402
from flows.dvc_graph import UnknownTargetError, load_graph, select  # noqa: E402
from flows.dvc_run import CommandResult, failure, outcome  # noqa: E402
from flows.lock import RepoBusyError  # noqa: E402
from flows.pipeline import PipelineFailedError, pipeline  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory):
    """One Prefect test server (temporary SQLite) for the module; its start-up time comes from
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, as cold starts here are slow."""
    env = pytest.MonkeyPatch()
    env.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))  # the package stage
    with prefect_test_harness(server_startup_timeout=None):
        yield
    env.undo()


def _artifacts(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {item.key: item.data for item in found}


def _task_states(flow_run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {item.name: item.state.name for item in runs}


def _table(data) -> list[dict]:
    return json.loads(data) if isinstance(data, str) else data


def _flow_env() -> dict[str, str]:
    """A child `python -m flows.pipeline` reports to this module's test server."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        # This checkout's code, also where the venv's editable install points elsewhere.
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }


def _start_flow(
    repo: Path, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """`python -m flows.pipeline --repo REPO` in a process of its own (``env``: the flow's
    environment, this module's test server by default)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(repo)],
        env=_flow_env() if env is None else env,
        text=True,
        **popen,
    )


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_pipeline_runs_the_dag_in_order_publishes_metrics_then_skips(tmp_path):
    repo = real_repo(tmp_path / "repo")
    state = pipeline(repo=str(repo), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    outcomes = {item["stage"]: item for item in result["stages"]}
    nodes = load_graph(repo)
    assert list(outcomes) == [node.name for node in nodes]
    assert outcomes["data.dvc"]["status"] == "skipped"
    assert {outcomes[n.name]["status"] for n in nodes if n.cmd} == {"ran"}
    for node in nodes:  # every stage started after everything it depends on had finished
        for upstream in node.upstream:
            started = datetime.fromisoformat(outcomes[node.name]["started"])
            assert datetime.fromisoformat(outcomes[upstream]["finished"]) <= started, node.name

    metrics_file = json.loads((repo / "metrics/emotions/full.json").read_text(encoding="utf-8"))
    artifacts = _artifacts(state.state_details.flow_run_id)
    rows = {row["file"]: row for row in _table(artifacts["pipeline-metrics"])}
    assert rows["metrics/emotions/full.json"]["weighted_f1"] == metrics_file["weighted_f1"]
    assert rows["metrics/emotions/full.json"]["n_test"] == metrics_file["n_test"] > 0
    assert "per_class" not in rows["metrics/emotions/full.json"]
    ablation = _table(artifacts["pipeline-ablation"])
    assert [(row["modality"], row["file"]) for row in ablation] == [
        ("video", "metrics/emotions/ablation.json")
    ]
    summary = artifacts["pipeline-summary"]
    assert "| `train@emotions-full` | ran | 1 |" in summary
    assert f"{sum(1 for node in nodes if node.cmd)} ran" in summary

    again = pipeline(repo=str(repo), return_state=True)
    assert {item["status"] for item in again.result()["stages"]} == {"skipped"}
    states = _task_states(again.state_details.flow_run_id)
    assert set(states.values()) == {"Cached"}, states
    assert "up to date" in run(["dvc", "status"], repo).stdout
    # The command line sees that nothing is to run before it starts Prefect at all.
    started = time.perf_counter()
    noop = run([sys.executable, "-m", "flows.pipeline", "--repo", str(repo)], REPO)
    assert noop.returncode == 0, noop.stderr[-2000:]
    assert "every stage is up to date" in noop.stdout
    assert time.perf_counter() - started < 10
    assert "Traceback" not in noop.stderr

    # `make demo`'s last step: all the runs left outside git-ignored folders is what git tracks
    # for DVC (dvc.lock, metrics/, plots/, reports/); once that is committed, the tree is clean.
    rev = commit_results(repo)
    committed = run(["git", "show", "--name-only", "--format=", rev], repo).stdout.split()
    assert {"dvc.lock", "metrics/emotions/full.json", "reports/results.md"} <= set(committed)
    assert run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout == ""


FLAKY = py(
    "import os,sys; os.path.exists('flaky.marker') or (open('flaky.marker','w').close(), "
    "sys.exit(1)); open('f.txt','w').write('f')"
)
HARD = py(
    "import sys; open('hard.count','a').write('x'); "
    "print('emotions hard - no usable clip', file=sys.stderr); sys.exit(2)"
)


def test_a_flaky_stage_is_retried_and_a_hard_failure_stops_only_its_dependants(tmp_path):
    repo = toy_repo(
        tmp_path / "toy",
        {
            "a": {"cmd": py("open('a.txt','w').write('a')"), "outs": ["a.txt"]},
            "b": {"cmd": py("open('b.txt','w').write('b')"), "outs": ["b.txt"]},
            "flaky": {"cmd": FLAKY, "deps": ["a.txt"], "outs": ["f.txt"]},
            "hard": {"cmd": HARD, "deps": ["b.txt"], "outs": ["h.txt"]},
            "side": {
                "cmd": py("open('s.txt','w').write('s')"),
                "deps": ["f.txt"],
                "outs": ["s.txt"],
            },
            "after": {
                "cmd": py("open('z.txt','w')"),
                "deps": ["h.txt", "f.txt"],
                "outs": ["z.txt"],
            },
            "last": {"cmd": py("open('l.txt','w')"), "deps": ["z.txt"], "outs": ["l.txt"]},
        },
        retries=2,
    )
    state = pipeline(repo=str(repo), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PipelineFailedError)
    assert "hard: command exited with 2: emotions hard - no usable clip" in str(error)
    by_stage = {item.stage: item for item in error.outcomes}
    assert (by_stage["flaky"].status, by_stage["flaky"].attempts) == ("ran", 2)
    assert (repo / "f.txt").read_text() == "f"
    assert by_stage["side"].status == "ran"  # does not depend on the failure
    assert by_stage["hard"].status == "failed"
    assert "not retried" in by_stage["hard"].message
    assert (repo / "hard.count").read_text() == "x"  # exit 2 is hard: one attempt only
    for stage in ("after", "last"):
        assert by_stage[stage].status == "not run"
        assert by_stage[stage].message == "not run: upstream stage 'hard' failed"
    assert not (repo / "z.txt").exists()
    summary = _artifacts(state.state_details.flow_run_id)["pipeline-summary"]
    assert "| `last` | not run | 0 |" in summary
    states = _task_states(state.state_details.flow_run_id)
    assert states["hard"] == "Failed" and states["flaky"] == "Completed"
    assert "after" not in states  # never submitted


SLOW = (
    "import time,json; t=time.time(); time.sleep(3); "
    "json.dump([t, time.time()], open('{name}.json','w'))"
)


def test_independent_stages_run_concurrently_up_to_the_limit(tmp_path):
    stages = {
        name: {"cmd": py(SLOW.format(name=name)), "outs": [f"{name}.json"]}
        for name in ("s1", "s2", "s3", "s4")
    }
    stages["join"] = {"cmd": py("open('j','w')"), "deps": [f"{n}.json" for n in stages]}
    repo = toy_repo(tmp_path / "toy", stages, concurrency=2)
    pipeline(repo=str(repo))
    spans = [json.loads((repo / f"{n}.json").read_text()) for n in ("s1", "s2", "s3", "s4")]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2  # two at once, never more
    # Concurrent `dvc repro` processes all landed in dvc.lock and left the repo consistent.
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_second_flow_run_fails_clearly_or_waits_and_the_repo_stays_consistent(tmp_path):
    # The first run's stage holds until the test writes `release`, so the overlap is certain.
    hold = py(
        "import os,time; open('slow.started','w'); "
        "[time.sleep(0.1) for _ in range(900) if not os.path.exists('release')]; "
        "open('slow.txt','w').write('s')"
    )
    repo = toy_repo(
        tmp_path / "toy",
        {
            "slow": {"cmd": hold, "outs": ["slow.txt"]},
            "next": {"cmd": py("open('n.txt','w')"), "deps": ["slow.txt"], "outs": ["n.txt"]},
        },
        lock_wait_s=0,
    )
    first = _start_flow(repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    release = threading.Timer(3.0, (repo / "release").touch)
    try:
        _wait_for(repo / "slow.started")
        with pytest.raises(RepoBusyError, match=rf"is busy: flow run .* \(pid {first.pid} "):
            pipeline(repo=str(repo))
        assert not (repo / "n.txt").exists()
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["flow"]["lock_wait_s"] = 120
        write_params(repo, params)
        assert first.poll() is None  # still holding the repository...
        release.start()
        waited = pipeline(repo=str(repo))  # ...so this run waits for it, then has nothing to do
    finally:
        (repo / "release").touch()
        output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert {item["status"] for item in waited["stages"]} == {"skipped"}
    assert (repo / "slow.txt").read_text() == "s"
    assert (repo / "n.txt").exists()
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_killed_flow_run_resumes_without_redoing_finished_stages(tmp_path):
    slow = py(
        "import os,time; open('slow.count','a').write('x'); open('slow.started','w'); "
        "time.sleep(0 if os.path.exists('go') else 120); open('slow.txt','w').write('s')"
    )
    repo = toy_repo(
        tmp_path / "toy",
        {
            "first": {
                "cmd": py("open('first.count','a').write('x'); open('a.txt','w').write('a')"),
                "outs": ["a.txt"],
            },
            "slow": {"cmd": slow, "deps": ["a.txt"], "outs": ["slow.txt"]},
            "last": {"cmd": py("open('l.txt','w')"), "deps": ["slow.txt"], "outs": ["l.txt"]},
        },
        # The killed `dvc` may linger a moment (until init reaps it), and DVC sees its
        # per-path lock as held until then: the lock contention is retried.
        retries=5,
        retry_delay_s=1,
    )
    doomed = _start_flow(
        repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: kill the flow, dvc and the stage
    )
    _wait_for(repo / "slow.started")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    (repo / "go").touch()

    result = pipeline(repo=str(repo))
    statuses = {item["stage"]: item["status"] for item in result["stages"]}
    assert statuses == {"first": "skipped", "slow": "ran", "last": "ran"}
    assert (repo / "first.count").read_text() == "x"  # finished before the kill: not redone
    assert (repo / "slow.count").read_text() == "xx"  # killed mid-run: rerun from scratch
    assert (repo / "slow.txt").read_text() == "s"
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_stage_past_its_timeout_is_killed_with_its_processes_and_not_retried(tmp_path):
    import psutil

    # The stage starts a child of its own that sleeps silently: the kill must reach it too.
    hang = py(
        "import os,subprocess,sys,time; open('hang.count','a').write('x'); "
        "c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(300)']); "
        "open('hang.pids','w').write(f'{os.getpid()} {c.pid}'); time.sleep(300)"
    )
    repo = toy_repo(
        tmp_path / "toy",
        {
            "hang": {"cmd": hang, "outs": ["h.txt"]},
            "next": {"cmd": py("open('n.txt','w')"), "deps": ["h.txt"], "outs": ["n.txt"]},
        },
        retries=2,
        stage_timeout_s=8,
    )
    started = time.monotonic()
    state = pipeline(repo=str(repo), return_state=True)
    assert state.is_failed() and time.monotonic() - started < 90
    by_stage = {item.stage: item for item in state.result(raise_on_failure=False).outcomes}
    assert by_stage["hang"].status == "failed" and "timed out after 8 s" in by_stage["hang"].message
    assert (repo / "hang.count").read_text() == "x"  # a timeout is not retried
    assert by_stage["next"].status == "not run"
    pids = [int(pid) for pid in (repo / "hang.pids").read_text().split()]
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


def test_targets_select_upstream_stages_and_unknown_targets_are_named(tmp_path):
    repo = toy_repo(
        tmp_path / "toy",
        {
            "a": {"cmd": py("open('a.txt','w')"), "outs": ["a.txt"]},
            "b": {"cmd": py("open('b.txt','w')"), "deps": ["a.txt"], "outs": ["b.txt"]},
            "c": {"cmd": py("open('c.txt','w')"), "outs": ["c.txt"]},
        },
    )
    nodes = load_graph(repo)
    assert [node.name for node in select(nodes, ["b"])] == ["a", "b"]
    result = pipeline(targets=["b"], repo=str(repo))
    assert [item["stage"] for item in result["stages"]] == ["a", "b"]
    assert not (repo / "c.txt").exists()
    forced = pipeline(targets=["a"], force=True, repo=str(repo))
    assert [item["status"] for item in forced["stages"]] == ["ran"]
    with pytest.raises(UnknownTargetError, match=r"unknown stage 'nope' \(the DAG has: a, b, c\)"):
        pipeline(targets=["nope"], repo=str(repo))


def test_dvc_output_is_read_as_outcomes_and_failures_are_classified():
    assert outcome("x@y", ["Running stage 'x@y':", "> cmd"]) == "ran"
    assert outcome("x@y", ["Stage 'x@y' didn't change, skipping"]) == "skipped"
    assert outcome("data.dvc", ["'data.dvc' didn't change, skipping"]) == "skipped"
    restored = "Stage 'x' is cached - skipping run, checking out outputs"
    assert outcome("x", [restored]) == "restored"

    def failed(code: int, *lines: str):
        return failure("s", CommandResult(code, lines, 0.1))

    crash = failed(255, "Traceback ...", "ERROR: failed to reproduce 's': ..., exited with 1")
    assert crash.transient
    hard = failed(255, "emotions validate: 2 problems", "ERROR: ... exited with 2")
    assert not hard.transient and hard.reason.endswith("emotions validate: 2 problems")
    busy = failed(255, "ERROR: failed to reproduce 's': 'out' is busy, it is being blocked by:")
    assert busy.transient
    missing = failed(255, "ERROR: failed to reproduce 's': dependency 'x' does not exist")
    assert not missing.transient and "does not exist" in missing.reason
    assert failed(-9).transient


def test_a_params_mistake_is_one_line_before_prefect_or_dvc(tmp_path: Path):
    """A typo in params.yaml stops `python -m flows.pipeline` with the key named, exit 2 (the
    flows' "deterministic" code), before a Prefect server starts or DVC removes an output."""
    (tmp_path / "params.yaml").write_text("train:\n  lrr: 0.1\n", encoding="utf-8")
    result = run([sys.executable, "-m", "flows.pipeline", "--repo", str(tmp_path)], REPO, False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("pipeline: ") and "train.lrr" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_pipeline_stops_its_temporary_server_and_its_stage(tmp_path, signum):
    """SIGTERM used to end `python -m flows.pipeline` at once: its temporary Prefect server
    kept listening and its stage kept running. Here the flow starts its own server (no API URL
    in its environment) and is killed while a stage runs. SIGKILL leaves no handler to run:
    `dvc repro` and its stage still end (they die with their parents); the server cannot."""
    import psutil

    # A stage set up as every `emotions <stage>` sets itself up (cli.main), then busy.
    sleeper = py(
        "from emotions.lifetime import die_with_parent, stop_on_signals; "
        "die_with_parent(); stop_on_signals(); import time; time.sleep(600)"
    )
    repo = toy_repo(tmp_path / "toy", {"slow": {"cmd": sleeper, "outs": ["never.txt"]}})
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # DVC runs the stage under $SHELL -c. bash execs a lone command; dash (/bin/sh, DVC's
    # choice when SHELL is unset, as in CI) keeps a shell between DVC and the stage.
    env.pop("SHELL", None)
    flow = _start_flow(repo, env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while not started and flow.poll() is None and time.monotonic() < deadline:
            below = psutil.Process(flow.pid).children(recursive=True)
            if any("time.sleep(600)" in " ".join(_cmdline(p)) for p in below):
                started = below
            time.sleep(0.5)
        assert started, "the stage never started"
        servers = [p for p in started if "uvicorn" in _cmdline(p)]
        assert servers, "no temporary server started"
        flow.send_signal(signum)
        assert flow.wait(timeout=120) == (128 + signum if signum != signal.SIGKILL else -signum)
    finally:
        if flow.poll() is None:
            flow.kill()
    expected_gone = (
        started if signum != signal.SIGKILL else [p for p in started if p not in servers]
    )
    _, alive = psutil.wait_procs(expected_gone, timeout=60)
    for server in servers:  # a SIGKILLed flow's server is left to us
        with contextlib.suppress(psutil.Error):
            server.kill()
    assert not [p for p in alive if _running(p)], alive
    # DVC was let finish its failure path: its lock table is readable (a cut one failed the
    # next `dvc repro`), and it no longer holds the stage's output.
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists():
        table = json.loads(rwlock.read_text(encoding="utf-8"))
        assert not table.get("write"), table


def _running(process) -> bool:
    """Alive and not a zombie awaiting its reaper."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []
