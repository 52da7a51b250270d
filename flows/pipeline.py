"""The DVC pipeline as a Prefect flow: one task per stage, in dependency order.

`python -m flows.pipeline [--targets STAGE ...] [--force] [--repo DIR]` runs it on Prefect's
ephemeral local API (no server needed); against `prefect server start` the same runs, task
graph, logs and artifacts show in the UI.

What each piece owns:
- DVC owns the DAG and caching. The graph comes from DVC's Python API (flows/dvc_graph.py) and
  every stage is `dvc repro --single-item <stage>` in the repository root, so DVC alone decides
  whether a stage is up to date; a stage it skips ends as Prefect state "Cached".
- Prefect owns the run: order, retries of transient failures (`flow.retries`,
  `flow.retry_delay_s`; what is transient: flows/dvc_run.py), each stage's output streamed line
  by line into the run's logs, and two artifacts: `pipeline-summary` (markdown: every stage's
  outcome) and `pipeline-metrics` (a table of the metrics files the stages declare; list-shaped
  files such as the ablation go to `pipeline-ablation`).
- A hard failure ends that stage as Failed; every stage downstream of it is not run (it is
  listed as "not run" with the failed stage named) and the flow run fails, after the artifacts
  are written. Stages that do not depend on the failure still run.

Concurrency, and why it is safe (measured with DVC 3.67): `dvc repro` holds DVC's repository
lock only for its bookkeeping (collecting the stage, checking it, saving outputs, writing
dvc.lock) and *releases it while the stage command runs*; during the command it holds DVC's
per-path read/write locks on the stage's dependencies and outputs. Two `dvc repro --single-item`
of independent stages in one repository therefore run their commands at the same time and both
land in dvc.lock; a second process wanting the repository lock fails after 3 s unless given
`--wait-for-lock` (which every call here passes, so bookkeeping queues instead of failing); two
processes on the *same* stage fail at once with "'<out>' is busy" (no waiting). Stages that are
ready together in this flow never share a path (DVC draws an edge wherever a dependency overlaps
an output), so the flow runs up to `flow.concurrency` ready stages at once, each its own DVC
process, with no lock of ours around them. What cannot be made safe stage by stage is two flow
runs on one repository, so each flow run holds a repository-wide lock for its whole run
(flows/lock.py): a second run waits up to `flow.lock_wait_s`, then fails with a message naming
the holder; a `dvc` started by hand meanwhile shows up as lock contention, which is retried.
A run of a deployment (flows/deployments.py) first takes the repository's slot of a Prefect
global concurrency limit (one slot per repository, shared with the retrain deployment), so a
second deployment run waits in Prefect, where the UI shows it, before it reaches the file lock.

Timeouts: every stage task is killed after `flow.stage_timeout_s` (with the processes DVC
started for it) and fails without retries; Prefect's task timeout stands behind it.

Failure behaviour: a stage killed mid-run never reaches DVC's commit, so its outputs are not
recorded in dvc.lock and the next flow run reruns it (DVC removes partial outputs first; `persist:
true` outputs such as checkpoints are kept, so training resumes); a killed `dvc` leaves a stale
entry in DVC's rwlock file, which DVC drops when it sees the process is gone. A flow run
interrupted and started again skips every stage that had finished, because DVC finds them up to
date.
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# these annotations when a deployment runs it, and string annotations (`Literal[...]`) fail there.
import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dvc.exceptions import DvcException
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from emotions.config import ConfigError, FlowConfig, load_params
from emotions.layout import Layout
from flows.dvc_graph import StageNode, UnknownTargetError, load_graph, metrics_paths, select
from flows.dvc_run import (
    StageFailedError,
    dvc,
    end_children_on_signals,
    failure,
    outcome,
    progress_throttled,
    stream,
)
from flows.lock import RepoBusyError, repo_lock, repo_slot

# Threads available to the task runner; how many stages actually run at once is
# `flow.concurrency`, enforced by the scheduler below (it is read from the repository's
# params.yaml at run time, after the task runner exists).
MAX_WORKERS = 32


class PipelineFailedError(RuntimeError):
    """At least one stage failed; `outcomes` holds every stage's outcome."""

    def __init__(self, message: str, outcomes: list["StageOutcome"]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass
class StageOutcome:
    """How a stage ended in one flow run."""

    stage: str
    # ran | skipped (up to date) | restored (from DVC's run cache) | failed | not run
    status: str
    attempts: int = 0
    seconds: float = 0.0
    started: str | None = None
    finished: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ran", "skipped", "restored")


def flow_config(repo: Path) -> FlowConfig:
    """The `flow:` section of the repository's params.yaml (defaults without one)."""
    params = repo / "params.yaml"
    return load_params(params).flow if params.is_file() else FlowConfig()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def current_attempt() -> int:
    context = TaskRunContext.get()
    return max(context.task_run.run_count, 1) if context and context.task_run else 1


def retry_transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry only failures another attempt can fix (flows/dvc_run.py says which); a timeout
    is not one."""
    if state.name == "TimedOut":
        return False
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception as exc:  # the result itself could not be read: assume transient
            error = exc
    if isinstance(error, TimeoutError):
        return False
    return not isinstance(error, StageFailedError) or error.transient


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    cache_policy=NO_CACHE,  # DVC is the cache; Prefect must always ask it
    retry_condition_fn=retry_transient,
)
def run_stage(
    stage: str, repo: str, force: bool = False, timeout_s: float | None = None
) -> dict[str, Any] | State:
    """`dvc repro --single-item STAGE` in the repository, its output in this task's logs; past
    `timeout_s` the stage is killed and fails (not retried)."""
    logger = get_run_logger()
    attempt = current_attempt()
    args = ["repro", "--single-item", stage] + (["--force"] if force else [])
    started = _now()
    result = stream(dvc(*args), Path(repo), progress_throttled(logger.info), timeout_s=timeout_s)
    if result.returncode != 0:
        error = failure(stage, result, attempt)
        logger.error("%s (%s)", error, "transient, may retry" if error.transient else "hard")
        raise error
    status = outcome(stage, result.tail)
    record = asdict(StageOutcome(stage, status, attempt, round(result.seconds, 2), started, _now()))
    if status == "skipped":
        return Completed(name="Cached", message="up to date: DVC skipped it", data=record)
    if status == "restored":
        return Completed(name="Cached", message="restored from DVC's run cache", data=record)
    return record


def _finished(future: PrefectFuture, stage: str) -> StageOutcome:
    """Turn a finished task into a StageOutcome (a failure is a value here, not a raise)."""
    value = future.result(raise_on_failure=False)
    if isinstance(value, dict) and future.state.is_completed():
        return StageOutcome(**value)
    if isinstance(value, StageFailedError):
        kind = "transient, retries exhausted" if value.transient else "hard failure, not retried"
        return StageOutcome(
            stage, "failed", value.attempt, finished=_now(), message=f"{value.reason} ({kind})"
        )
    return StageOutcome(stage, "failed", finished=_now(), message=f"{future.state.message}")


def _schedule(
    nodes: list[StageNode], repo: Path, force: bool, config: FlowConfig
) -> list[StageOutcome]:
    """Submit each stage once everything it depends on succeeded, at most `concurrency` at a
    time; a stage downstream of a failure is not run. Returns outcomes in DAG order."""
    logger = get_run_logger()
    # No Prefect task timeout: a task runs in a worker thread, which Prefect cannot interrupt
    # (it says so in a warning per task); `stream` kills the stage's process tree at
    # flow.stage_timeout_s itself and the task ends with that reason.
    stage_task = run_stage.with_options(
        retries=config.retries,
        retry_delay_seconds=config.retry_delay_s,
    )
    outcomes: dict[str, StageOutcome] = {}
    futures: dict[str, PrefectFuture] = {}
    running: dict[PrefectFuture, str] = {}
    culprits: dict[str, list[str]] = {}  # not-run stage -> the failed stage(s) behind it
    pending = list(nodes)
    while pending or running:
        for node in list(pending):
            blocked = [u for u in node.upstream if u in outcomes and not outcomes[u].ok]
            if blocked:
                pending.remove(node)
                culprits[node.name] = sorted({c for u in blocked for c in culprits.get(u, [u])})
                named = ", ".join(f"'{name}'" for name in culprits[node.name])
                message = f"not run: upstream stage {named} failed"
                outcomes[node.name] = StageOutcome(node.name, "not run", message=message)
                logger.warning("%s %s", node.name, message)
                continue
            ready = all(u in outcomes for u in node.upstream)
            if ready and len(running) < config.concurrency:
                pending.remove(node)
                future = stage_task.submit(
                    node.name,
                    str(repo),
                    force,
                    config.stage_timeout_s,
                    wait_for=[futures[u] for u in node.upstream if u in futures],
                )
                futures[node.name] = future
                running[future] = node.name
        if running:
            done = next(as_completed(list(running)))
            stage = running.pop(done)
            outcomes[stage] = _finished(done, stage)
        elif pending:  # nothing running and nothing startable: cannot happen in a DAG
            raise RuntimeError(f"stages never became ready: {[n.name for n in pending]}")
    return [outcomes[node.name] for node in nodes]


def read_metrics(repo: Path) -> dict[str, Any]:
    """The declared metrics files that exist, parsed (a stage that failed may have none), and
    each dataset's ablation rows (a list: not a DVC `metrics:` file, one table here)."""
    layout = Layout(repo)
    paths = list(metrics_paths(repo))
    if layout.metrics_root.is_dir():
        ablations = (layout.ablation_metrics(d.name) for d in layout.metrics_root.iterdir())
        paths += sorted(p.relative_to(repo).as_posix() for p in ablations if p.is_file())
    found: dict[str, Any] = {}
    for path in paths:
        file = repo / path
        if file.is_file():
            found[path] = json.loads(file.read_text(encoding="utf-8"))
    return found


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in data.items()
        if isinstance(value, int | float | str) and not isinstance(value, bool)
    }


def metrics_tables(metrics: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(one row per metrics file of scalars, one row per entry of list-shaped files)."""
    # A dict with no top-level scalar (ablation_cells.json: the ablation rows keyed by cell for
    # DVC) would be an empty row here; its rows are in the list table from ablation.json.
    scalar_rows = [
        {"file": path, **_scalars(data)}
        for path, data in metrics.items()
        if isinstance(data, dict) and _scalars(data)
    ]
    list_rows = [
        {"file": path, **_scalars(row)}
        for path, data in metrics.items()
        if isinstance(data, list)
        for row in data
        if isinstance(row, dict)
    ]
    return scalar_rows, list_rows


def summary_markdown(
    outcomes: list[StageOutcome], targets: Sequence[str] | None, force: bool, repo: Path
) -> str:
    counts: dict[str, int] = {}
    for item in outcomes:
        counts[item.status] = counts.get(item.status, 0) + 1
    lines = [
        f"# Pipeline run `{flow_run.get_name() or 'local'}`",
        "",
        f"Repository `{repo}`, targets {', '.join(targets) if targets else 'all'}"
        f"{', forced' if force else ''}: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        "",
        "| stage | outcome | attempts | seconds | note |",
        "|---|---|---|---|---|",
    ]
    for item in outcomes:
        note = item.message.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{item.stage}` | {item.status} | {item.attempts} | {item.seconds:.1f} | {note} |"
        )
    return "\n".join(lines) + "\n"


def publish(outcomes: list[StageOutcome], targets, force: bool, repo: Path) -> dict[str, Any]:
    """Write the run's artifacts; returns the metrics that were published."""
    create_markdown_artifact(
        markdown=summary_markdown(outcomes, targets, force, repo),
        key="pipeline-summary",
        description="What every stage did in this run",
    )
    metrics = read_metrics(repo)
    scalar_rows, list_rows = metrics_tables(metrics)
    if scalar_rows:
        create_table_artifact(
            table=scalar_rows, key="pipeline-metrics", description="Test metrics per run"
        )
    if list_rows:
        create_table_artifact(
            table=list_rows, key="pipeline-ablation", description="List-shaped metrics (ablation)"
        )
    return metrics


@flow(
    name="pipeline",
    description="Run the DVC stages of dvc.yaml as Prefect tasks, in dependency order.",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS),
)
def pipeline(
    targets: list[str] | None = None, force: bool = False, repo: str = "."
) -> dict[str, Any] | State:
    """Run the targets (default: every stage) and everything upstream of them.

    Returns `{"stages": [outcome, ...], "metrics": {path: content}}`. When a stage failed the
    flow run ends Failed and calling `pipeline(...)` raises PipelineFailedError (its `outcomes`
    hold every stage's outcome).
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    config = flow_config(root)
    owner = f"flow run '{flow_run.get_name() or 'pipeline'}'"
    try:
        with (
            repo_slot(root, config.lock_wait_s),
            repo_lock(root, owner=owner, wait_s=config.lock_wait_s, on_wait=logger.warning),
        ):
            nodes = select(load_graph(root), targets)
            logger.info(
                "%d stages, up to %d at once: %s",
                len(nodes),
                config.concurrency,
                ", ".join(node.name for node in nodes),
            )
            started = time.perf_counter()
            outcomes = _schedule(nodes, root, force, config)
            metrics = publish(outcomes, targets, force, root)
    except (RepoBusyError, UnknownTargetError, DvcException, TimeoutError) as error:
        logger.error("%s", error)
        return Failed(message=str(error), data=error)
    failed = [item for item in outcomes if item.status == "failed"]
    skipped = [item for item in outcomes if item.status == "not run"]
    logger.info(
        "pipeline finished in %.1f s: %s",
        time.perf_counter() - started,
        ", ".join(f"{item.stage} {item.status}" for item in outcomes),
    )
    if failed:
        message = "; ".join(f"{item.stage}: {item.message}" for item in failed)
        if skipped:
            message += f"; not run: {', '.join(item.stage for item in skipped)}"
        # A Failed state rather than a raise: the run fails with this message and the caller
        # gets the error, without Prefect logging a traceback that says nothing more.
        logger.error("pipeline failed: %s", message)
        return Failed(message=message, data=PipelineFailedError(message, outcomes))
    return {"stages": [asdict(item) for item in outcomes], "metrics": metrics}


def _up_to_date(repo: Path, targets: Sequence[str] | None) -> bool:
    """Whether `dvc status` finds nothing to run: then the flow (and the ephemeral Prefect
    server it needs, ~20 s) is not started at all. Any doubt runs the flow."""
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc_repo:
            return not dvc_repo.status(targets=list(targets) if targets else None)
    except Exception:  # an unreadable repo or target: the flow reports it properly
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--targets", nargs="+", default=None, help="stages or stage groups")
    parser.add_argument("--force", action="store_true", help="rerun even up-to-date stages")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: .)")
    args = parser.parse_args(argv)
    if argv is None:  # a process of its own: a kill stops its Prefect server and stages too
        end_children_on_signals()
    repo = Path(args.repo)
    try:
        # A params mistake is one line, before Prefect starts and before DVC touches an output.
        if (repo / "params.yaml").is_file():
            load_params(repo / "params.yaml")
    except ConfigError as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return 2
    if not args.force and _up_to_date(repo, args.targets):
        print("pipeline: every stage is up to date (dvc status); nothing to run")
        return 0
    try:
        result = pipeline(targets=args.targets, force=args.force, repo=args.repo)
    except (PipelineFailedError, ConfigError, DvcException, ValueError, RuntimeError) as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pipeline: interrupted; the next run resumes where this one stopped", file=sys.stderr)
        return 130
    for item in result["stages"]:
        print(f"{item['status']:>8}  {item['stage']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
