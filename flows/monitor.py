"""Drift monitoring: the service's prediction log against the served run's validation clips.

`monitor(repo, log, threshold, on_drift)`:
1. read the prediction log (default `serve.log_path`); fewer answered requests than
   `monitor.min_rows` end the run with a note (and a summary.json saying so), not a failure;
2. load the reference table of the served run (`serve.run`, split `monitor.reference_split`)
   from `monitor.out`, rebuilding it when the model, cache or split changed;
3. run the Evidently report (emotions.monitor.drift): `report.html`, `snapshot.json`,
   `traffic.json` and `summary.json` in `monitor.out`, a drift and a traffic run in the
   dashboard project of the Evidently UI workspace `monitor.workspace`
   (`evidently ui --workspace artifacts/monitor/workspace`, emotions.monitor.dashboard) and a
   `drift-report` markdown artifact;
4. when the drift share reaches the threshold (`monitor.threshold` unless given), act on
   `on_drift`:
   - `event` (the default, and what the monitor deployment does): emit the Prefect event
     `emotions.drift.detected` about this repository (flows/events.py). The retrain deployment
     served by `make schedule` (flows/deployments.py) has a trigger on it, so the retrain runs
     as its own flow run of that deployment, under the repository's concurrency limit;
   - `retrain`: run the retrain flow here, as a subflow. `python -m flows.monitor` (and so
     `make monitor`) picks this when no Prefect server is configured (no `PREFECT_API_URL`):
     on the temporary local API nothing would listen to the event;
   - `report`: only record "would retrain" (`--no-retrain`).

The decision (`retrain`, `retrain requested`, `would retrain`, `no drift`, `insufficient data`)
is in the returned dict and in summary.json's `decision`; a requested retrain also records the
event id under `event`.

5. with `queue.after_monitor` (or `queue=True`), build a re-annotation queue of the kept uploads
   (emotions.annotation.queue): the clips in the features this check found drifted are picked as
   `drifted_slice`, besides the other rules; what was queued is under `queue` in the result and
   summary.json (no folder when nothing qualifies, e.g. serve.keep_uploads off).
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# these annotations when a deployment runs it, and string annotations fail there.
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from emotions.annotation.queue import queue_from_params
from emotions.atomic import atomic_write_json
from emotions.config import Params, load_params
from emotions.layout import Layout
from emotions.monitor.drift import DriftSummary, NotEnoughDataError, check_log
from flows.dvc_run import end_children_on_signals
from flows.events import DRIFT_EVENT, emit_drift

RETRAIN = "retrain"
REQUESTED = "retrain requested"
WOULD_RETRAIN = "would retrain"
NO_DRIFT = "no drift"
INSUFFICIENT = "insufficient data"


@task(name="drift-check", cache_policy=NO_CACHE)
def drift_check(
    log: Path,
    out: Path,
    model_dir: Path,
    cache_dir: Path,
    split_file: Path,
    split: str,
    threshold: float,
    min_rows: int,
    workspace: Path,
    plot_rows: int,
    threads: int,
    device: str = "cpu",
    precision: str = "auto",
) -> DriftSummary:
    return check_log(
        log,
        out,
        model_dir=model_dir,
        cache_dir=cache_dir,
        split_file=split_file,
        split=split,
        threshold=threshold,
        min_rows=min_rows,
        workspace=workspace,
        plot_rows=plot_rows,
        threads=threads,
        device=device,
        precision=precision,
    )


@task(name="annotation-queue", cache_policy=NO_CACHE)
def annotation_queue(
    params: Params, root: Path, log: Path, monitor_out: Path, drift_ran: bool
) -> dict[str, Any]:
    """The re-annotation queue after this check (its drifted features, when it ran)."""
    result = queue_from_params(
        params, root=root, log=log, monitor_out=monitor_out, read_drift=drift_ran
    )
    return result.to_dict()


def queue_after_check(
    params: Params, root: Path, log: Path, monitor_out: Path, drift_ran: bool
) -> dict[str, Any]:
    """:func:`annotation_queue`, whose failure is logged and recorded but never stops the
    monitor: the drift decision (and the retrain it may start) matters more than a queue."""
    try:
        return annotation_queue(params, root, log, monitor_out, drift_ran)
    except Exception as error:  # the queue is a side job of the drift check
        get_run_logger().exception("no re-annotation queue this time")
        return {"queue_dir": None, "error": f"{type(error).__name__}: {error}"}


def _markdown(summary: DriftSummary, decision: str) -> str:
    lines = [
        f"# Drift: {decision}",
        "",
        f"Drift share **{summary.drift_share:.2f}** (threshold {summary.threshold:.2f}); "
        f"{summary.rows_current} logged predictions against {summary.rows_reference} "
        "reference clips.",
        "",
        "| check | method | score | drifted |",
        "|---|---|---|---|",
    ]
    for name, check in summary.checks.items():
        score = "-" if check["score"] is None else f"{check['score']:.4g}"
        lines.append(
            f"| {name} | {check['method']} | {score} | {'yes' if check['drifted'] else 'no'} |"
        )
    for name, why in summary.skipped.items():
        lines.append(f"| {name} | skipped: {why} | - | - |")
    lines += ["", f"Report: `{summary.report_html}`"]
    return "\n".join(lines)


@flow(name="monitor", description="Evidently drift of the prediction log; retrain on drift.")
def monitor(
    repo: str = ".",
    log: str | None = None,
    threshold: float | None = None,
    on_drift: Literal["event", "retrain", "report"] = "event",
    model: str | None = None,
    run: str | None = None,
    out: str | None = None,
    min_rows: int | None = None,
    queue: bool | None = None,
) -> dict[str, Any]:
    """One drift check; returns summary.json's content (with ``decision``) and, when a
    retrain ran here, its decision record under ``retrain``."""
    logger = get_run_logger()
    root = Path(repo).resolve()
    params = load_params(root / "params.yaml")
    config = params.monitor
    run = run or params.serve.run
    spec = params.run(run)
    layout = Layout(root)
    paths = layout.run_paths(spec.dataset, spec.variant)
    model_dir = Path(model) if model else paths.model_dir
    log_path = root / (log or params.serve.log_path)
    out_dir = root / (out or config.out)
    threshold = config.threshold if threshold is None else threshold
    min_rows = config.min_rows if min_rows is None else min_rows
    queue = params.queue.after_monitor if queue is None else queue

    try:
        # In process, no Prefect timeout: a worker thread cannot be interrupted (the Evidently
        # report is bounded by monitor.embedding_plot_rows instead).
        summary = drift_check(
            log_path,
            out_dir,
            model_dir,
            paths.cache,
            paths.split,
            config.reference_split,
            threshold,
            min_rows,
            root / config.workspace,
            config.embedding_plot_rows,
            config.threads,
            params.serve.device,
            params.serve.precision,
        )
    except NotEnoughDataError as error:
        logger.warning("no drift check: %s", error)
        result = {"decision": INSUFFICIENT, "drifted": False, "reason": str(error)}
        if queue:
            result["queue"] = queue_after_check(params, root, log_path, out_dir, False)
        atomic_write_json(result, out_dir / "summary.json")
        return result

    torn = int(summary.window.get("torn_lines") or 0)
    if torn:
        logger.warning("%s: skipped %d torn line(s) (not one whole record)", log_path, torn)
    decision = {"event": REQUESTED, "retrain": RETRAIN, "report": WOULD_RETRAIN}[on_drift]
    if not summary.drifted:
        decision = NO_DRIFT
    result = {**summary.to_dict(), "decision": decision}
    if decision == REQUESTED:
        result["event"] = emit_drift(root, summary.window.get("model") or run, result)
        if result["event"] is None:
            logger.warning(
                "%s was not sent (events are off, or no Prefect API takes them): no retrain "
                "will follow; run with on_drift='retrain' to retrain here",
                DRIFT_EVENT,
            )
        else:
            logger.info("emitted %s (event %s)", DRIFT_EVENT, result["event"])
    if queue:
        result["queue"] = queue_after_check(params, root, log_path, out_dir, True)
    atomic_write_json(result, out_dir / "summary.json")
    create_markdown_artifact(
        key="drift-report", markdown=_markdown(summary, decision), description="Evidently drift"
    )
    logger.info(
        "drift share %.2f (threshold %.2f, drifted: %s): %s",
        summary.drift_share,
        threshold,
        ", ".join(summary.drifted_checks) or "none",
        decision,
    )
    if decision == RETRAIN:
        from flows.retrain import retrain

        result["retrain"] = retrain(repo=str(root))
    return result


def default_on_drift() -> str:
    """`event` when a Prefect server is configured (its served retrain deployment listens),
    else `retrain` in-process (the temporary local API has no one listening)."""
    return "event" if os.environ.get("PREFECT_API_URL") else "retrain"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--log", default=None, help="prediction log (default serve.log_path)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument(
        "--on-drift",
        choices=["event", "retrain", "report"],
        default=None,
        help="event: emit emotions.drift.detected (default with PREFECT_API_URL set); retrain: "
        "run the retrain flow here (default without); report: record only",
    )
    parser.add_argument("--no-retrain", action="store_true", help="same as --on-drift report")
    args = parser.parse_args(argv)
    if argv is None:  # a process of its own: a kill stops its Prefect server and stages too
        end_children_on_signals()
    on_drift = "report" if args.no_retrain else (args.on_drift or default_on_drift())
    result = monitor(repo=args.repo, log=args.log, threshold=args.threshold, on_drift=on_drift)
    summary = {
        k: result.get(k) for k in ("decision", "drift_share", "threshold", "reason", "event")
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
