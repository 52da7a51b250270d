"""The Prefect event the monitor emits on drift, and what the retrain deployment listens for.

When the drift share of a monitor run reaches `monitor.threshold`, the monitor emits
:data:`DRIFT_EVENT` about the repository (resource ``emotions.repo.<hash of its path>``, named
by the path) with the served model as a related resource and the drift summary as payload. The
retrain deployment (flows/deployments.py) has a trigger on that event for its own repository,
so Prefect's automation service starts the retrain as its own flow run: in the UI it shows under
*Runs* (deployment ``retrain/retrain-emotions``), the event under *Event Feed* and the trigger
under *Automations*.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

DRIFT_EVENT = "emotions.drift.detected"


def repo_resource_id(repo: str | Path) -> str:
    """The event resource id of a repository (stable for its resolved path)."""
    digest = hashlib.sha256(str(Path(repo).resolve()).encode()).hexdigest()[:12]
    return f"emotions.repo.{digest}"


def drift_trigger(repo: str | Path, parameters: dict[str, Any] | None = None) -> Any:
    """The retrain deployment's trigger: one drift event about ``repo`` starts one run."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"retrain on drift ({Path(repo).resolve().name})",
        description=f"Retrain {Path(repo).resolve()} when its monitor reports drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": repo_resource_id(repo)},
        parameters=parameters or {},
    )


def emit_drift(repo: str | Path, model: str, summary: dict[str, Any]) -> str | None:
    """Emit :data:`DRIFT_EVENT` for ``repo`` (``model``: the served run or model tag); returns
    the event id, or None when no events client could take it (Prefect logs why)."""
    from prefect.events import emit_event

    root = Path(repo).resolve()
    payload = {
        key: summary.get(key)
        for key in ("drift_share", "threshold", "drifted_checks", "rows_current", "window")
    }
    event = emit_event(
        DRIFT_EVENT,
        resource={
            "prefect.resource.id": repo_resource_id(root),
            "prefect.resource.name": str(root),
        },
        related=[
            {
                "prefect.resource.id": f"emotions.model.{model}",
                "prefect.resource.role": "model",
                "prefect.resource.name": model,
            }
        ],
        payload=payload,
    )
    return None if event is None else str(event.id)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.events --repo . --model NAME`: emit one drift event by hand (to try the
    retrain trigger against a server) and wait until it is sent."""
    import argparse
    import json

    from prefect.events.worker import EventsWorker

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--model", default="manual")
    parser.add_argument("--drift-share", type=float, default=1.0)
    args = parser.parse_args(argv)
    summary = {"drift_share": args.drift_share, "drifted_checks": ["manual"]}
    event_id = emit_drift(args.repo, args.model, summary)
    EventsWorker.drain_all(timeout=30)
    print(
        json.dumps({"event": DRIFT_EVENT, "id": event_id, "resource": repo_resource_id(args.repo)})
    )
    return 0 if event_id else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
