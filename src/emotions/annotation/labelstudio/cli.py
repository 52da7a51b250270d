"""`emotions queue push` / `emotions queue pull`: the Label Studio half of the annotation loop.

``add_queue_commands(queue_parser)`` hangs both under the `queue` command of emotions.cli, so
the queue-building command (`emotions queue` alone) and these two share one name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emotions.config import Params


class QueueCommandError(RuntimeError):
    """A push or pull cannot go on; the message is what the user reads."""


def _client(params: Params):
    from emotions.annotation.labelstudio.client import LabelStudio, token_from_env

    config = params.annotate
    return LabelStudio(
        config.url,
        token_from_env(config.token_env),
        timeout_s=config.timeout_s,
        page_size=config.page_size,
    )


def _classes(params: Params) -> list[str]:
    return list(params.taxonomy_for(params.annotate.dataset))


def cmd_push(args: argparse.Namespace, params: Params) -> None:
    from emotions.annotation.labelstudio.client import AnnotateError
    from emotions.annotation.labelstudio.corpus import next_stage
    from emotions.annotation.labelstudio.push import push_queue
    from emotions.annotation.labelstudio.queue_folder import QueueError

    config = params.annotate
    root = Path(params.dataset(config.dataset).root)
    try:
        with _client(params) as client:
            result = push_queue(
                client,
                Path(args.queue or params.queue.out),
                title=args.project or config.project,
                classes=_classes(params),
                document_root=Path(config.document_root),
                stage=next_stage(root),
            )
    except (AnnotateError, QueueError, ValueError) as error:
        raise QueueCommandError(str(error)) from None
    print(
        f"queue push: project {result.project_id} ({result.project_state}): "
        f"{result.imported} new task(s), "
        f"{result.already_there} already there (stage {result.stage}) -> {result.project_url}"
    )


def cmd_pull(args: argparse.Namespace, params: Params) -> None:
    from emotions.annotation.labelstudio.client import AnnotateError
    from emotions.annotation.labelstudio.pull import pull_stage

    config = params.annotate
    title = args.project or config.project
    into = Path(args.into) if args.into else None
    try:
        with _client(params) as client:
            project = client.find_project(title)
            if project is None:
                raise QueueCommandError(f"no Label Studio project '{title}' (push a queue first)")
            result = pull_stage(
                client,
                int(project["id"]),
                classes=_classes(params),
                document_root=Path(config.document_root),
                into=into,
            )
    except (AnnotateError, ValueError, FileNotFoundError) as error:
        raise QueueCommandError(str(error)) from None
    merges = result.merges
    stages = ", ".join(str(s) for s in sorted(set(result.votes["stage"]))) or "none"
    where = str(into) if into is not None else f"{len(merges)} queue folder(s)"
    print(
        f"queue pull: {len(result.votes)} vote(s) on {result.votes['clip_id'].nunique()} clip(s) "
        f"of {result.tasks} finished task(s), stage {stages} -> {where} "
        f"({sum(m.copied for m in merges)} video(s) copied, "
        f"{sum(m.matched for m in merges)} already there, "
        f"{sum(m.votes_added for m in merges)} vote(s) added, "
        f"{sum(m.votes_replaced for m in merges)} replaced)"
    )
    if into is not None:
        print(f"queue pull: version it with `dvc add {into}` (then `dvc push`, and retrain)")


def add_queue_commands(queue: argparse.ArgumentParser) -> None:
    """`push` and `pull` as sub-commands of the `queue` parser."""
    sub = queue.add_subparsers(dest="queue_command", metavar="{push,pull}")
    push = sub.add_parser("push", help="the queue as tasks of a Label Studio project")
    push.add_argument(
        "--queue",
        default=None,
        help="a queue folder or the folder of them (default: queue.out, where `emotions queue` writes)",
    )
    push.add_argument("--project", default=None, help="project title (default: annotate.project)")
    push.set_defaults(run_command=cmd_push)

    pull = sub.add_parser("pull", help="finished tasks as the next annotation stage")
    pull.add_argument("--project", default=None, help="project title (default: annotate.project)")
    pull.add_argument(
        "--into",
        default=None,
        help="corpus root to add clips and votes to, e.g. data (default: each clip's queue "
        "folder, its annotations.csv)",
    )
    pull.set_defaults(run_command=cmd_pull)
