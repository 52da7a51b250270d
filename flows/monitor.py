"""Drift monitoring: the service's prediction log against the served run's validation clips.

`monitor(repo, log, threshold, retrain_on_drift)`:
1. read the prediction log (default `serve.log_path`); fewer answered requests than
   `monitor.min_rows` end the run with a note (and a summary.json saying so), not a failure;
2. load the reference table of the served run (`serve.run`, split `monitor.reference_split`)
   from `monitor.out`, rebuilding it when the model, cache or split changed;
3. run the Evidently report (emotions.monitor.drift): `report.html`, `snapshot.json`,
   `traffic.json` and `summary.json` in `monitor.out`, a drift and a traffic run in the
   dashboard project of the Evidently UI workspace `monitor.workspace`
   (`evidently ui --workspace artifacts/monitor/workspace`, emotions.monitor.dashboard) and a
   `drift-report` markdown artifact;
4. when the drift share reaches the threshold (`monitor.threshold` unless given), run the
   retrain flow as a subflow; with `retrain_on_drift=False` only record "would retrain".

The decision (`retrain`, `would retrain`, `no drift`, `insufficient data`) is in the returned
dict and in summary.json's `decision`.
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# these annotations when a deployment runs it, and string annotations fail there.
import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from emotions.atomic import atomic_write_json
from emotions.config import load_params
from emotions.monitor.drift import DriftSummary, NotEnoughDataError, check_log

RETRAIN = "retrain"
WOULD_RETRAIN = "would retrain"
NO_DRIFT = "no drift"
INSUFFICIENT = "insufficient data"


@task(cache_policy=NO_CACHE)
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
    )


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
    retrain_on_drift: bool = True,
    model: str | None = None,
    run: str | None = None,
    out: str | None = None,
    min_rows: int | None = None,
) -> dict[str, Any]:
    """One drift check; returns summary.json's content (with ``decision``) and, when a
    retrain ran, its decision record under ``retrain``."""
    logger = get_run_logger()
    root = Path(repo).resolve()
    params = load_params(root / "params.yaml")
    config = params.monitor
    run = run or params.serve.run
    spec = params.run(run)
    artifacts = root / "artifacts" / spec.dataset
    model_dir = (
        Path(model) if model else root / "artifacts" / "models" / spec.dataset / spec.variant
    )
    log_path = root / (log or params.serve.log_path)
    out_dir = root / (out or config.out)
    threshold = config.threshold if threshold is None else threshold
    min_rows = config.min_rows if min_rows is None else min_rows

    try:
        summary = drift_check(
            log_path,
            out_dir,
            model_dir,
            artifacts / "cache",
            artifacts / "variants" / spec.variant / "split.parquet",
            config.reference_split,
            threshold,
            min_rows,
            root / config.workspace,
        )
    except NotEnoughDataError as error:
        logger.warning("no drift check: %s", error)
        result = {"decision": INSUFFICIENT, "drifted": False, "reason": str(error)}
        atomic_write_json(result, out_dir / "summary.json")
        return result

    decision = RETRAIN if retrain_on_drift else WOULD_RETRAIN
    if not summary.drifted:
        decision = NO_DRIFT
    result = {**summary.to_dict(), "decision": decision}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--log", default=None, help="prediction log (default serve.log_path)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--no-retrain", action="store_true", help="report only, never retrain")
    args = parser.parse_args(argv)
    result = monitor(
        repo=args.repo,
        log=args.log,
        threshold=args.threshold,
        retrain_on_drift=not args.no_retrain,
    )
    summary = {k: result.get(k) for k in ("decision", "drift_share", "threshold", "reason")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
