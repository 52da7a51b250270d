"""The three Prefect deployments of a repository, served together (`make schedule`).

- `pipeline/pipeline-emotions`: the DVC DAG (flows/pipeline.py), on demand (Run in the UI or
  `prefect deployment run pipeline/pipeline-emotions`);
- `retrain/retrain-emotions`: champion/challenger retraining (flows/retrain.py) on
  `flow.retrain_cron`, and on every `emotions.drift.detected` event about this repository
  (the trigger of flows/events.py), so a drift shows up as its own retrain flow run;
- `monitor/monitor-emotions`: the drift check (flows/monitor.py) on `flow.monitor_cron`; on
  drift it emits that event.

All three point at one repository (`--repo`, resolved). The pipeline and retrain runs of a
deployment share the repository's Prefect global concurrency limit (one slot, created here and
by each run: flows/lock.py), so two of them never work on the repository at once; the second
waits, visibly, as "waiting for concurrency". Plain CLI runs keep using the file lock only.

`python -m flows.deployments --repo .` serves them in this process (a Runner that polls the
server for scheduled and triggered runs and executes them as subprocesses) until interrupted;
it needs a Prefect server (`make ui`, then `PREFECT_API_URL=http://127.0.0.1:4200/api`).
"""

# No `from __future__ import annotations` here: see flows/pipeline.py.
import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emotions.config import ConfigError, load_params
from flows.events import drift_trigger
from flows.lock import ensure_limit, limit_name
from flows.monitor import monitor
from flows.pipeline import pipeline
from flows.retrain import DEPLOYMENT as RETRAIN_DEPLOYMENT
from flows.retrain import retrain

PIPELINE_DEPLOYMENT = "pipeline-emotions"
MONITOR_DEPLOYMENT = "monitor-emotions"


def deployments(repo: str = ".") -> list[Any]:
    """The three RunnerDeployments of ``repo`` (schedules from its params.yaml)."""
    root = Path(repo).resolve()
    config = load_params(root / "params.yaml").flow

    def deployment(flow: Any, name: str, kind: str, description: str, **options: Any) -> Any:
        """One deployment of `flow` on this repository; `options` adds its own parameters,
        schedule and triggers."""
        parameters = {"repo": str(root), **options.pop("parameters", {})}
        tags = ["emotions", f"repo:{root.name}", kind]
        return flow.to_deployment(
            name=name, parameters=parameters, description=description, tags=tags, **options
        )

    return [
        deployment(
            pipeline,
            PIPELINE_DEPLOYMENT,
            "pipeline",
            f"The DVC pipeline of {root}, one task per stage",
        ),
        deployment(
            retrain,
            RETRAIN_DEPLOYMENT,
            "retrain",
            f"Retraining of {root} on {config.retrain_cron} and on drift",
            cron=config.retrain_cron,
            parameters={"refresh": "pull"},
            triggers=[drift_trigger(root)],
        ),
        deployment(
            monitor,
            MONITOR_DEPLOYMENT,
            "monitor",
            f"Drift check of {root}'s prediction log on {config.monitor_cron}",
            cron=config.monitor_cron,
            parameters={"on_drift": "event"},
        ),
    ]


def serve_all(repo: str = ".") -> None:
    """Create the repository's concurrency limit, then serve the deployments; blocks."""
    from prefect import serve

    if not os.environ.get("PREFECT_API_URL"):
        print(
            "note: PREFECT_API_URL is not set, so this serves on a temporary local API: "
            "schedules and triggers never fire. Start `prefect server start` (make ui) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
    items = deployments(repo)
    name = ensure_limit(Path(repo).resolve())
    print(f"global concurrency limit {name} (1 slot) guards {Path(repo).resolve()}", flush=True)
    serve(*items, print_starting_message=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deployments", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repo", default=".", help="the DVC repository (default: .)")
    parser.add_argument(
        "--list", action="store_true", help="print the deployments and exit (no server needed)"
    )
    args = parser.parse_args(argv)
    try:
        if args.list:
            for item in deployments(args.repo):
                cron = ", ".join(s.schedule.cron for s in item.schedules) or "on demand"
                triggers = ", ".join(sorted(e for t in item.triggers for e in t.expect))
                print(
                    f"{item.flow_name}/{item.name}: {cron}"
                    + (f"; on {triggers}" if triggers else "")
                )
            print(f"concurrency limit: {limit_name(Path(args.repo))}")
            return 0
        serve_all(args.repo)
    except ConfigError as error:
        print(f"deployments: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
