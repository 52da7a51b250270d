"""`emotions queue pull`: Label Studio's export of finished tasks → the next annotation stage.

Every submitted annotation of a task becomes one vote ``clip_id,stage,annotator,label``:
the stage is the one the task was pushed with, the annotator is Label Studio's user (its
e-mail, or ``label-studio:<id>`` when the user has none), the label the chosen class. Skipped
(cancelled) annotations and annotations without a choice are not votes. The clips and votes
are merged into a corpus root in the ``emotions`` layout (emotions.annotation.labelstudio.corpus), ready for
ingest to aggregate with the earlier stages: ``data/`` (``--into data``) or, by default, each
clip's own queue folder (its ``annotations.csv``, the place the queue format names for them).

The export is data from a server, so nothing in it is trusted: its shape is checked (a list
of task objects, each with a ``data`` object and a list of annotations), every path it
names (the local-files ``?d=``, the ``queue`` folder, the clip id as a file name) must stay
under its root (:mod:`emotions.corpus.confine`), and each video must have the ``sha256`` its
task says before it is copied. Any of these failing is a ``PullError`` (one line, exit 2)
raised before anything is written; the pull then applies as one transaction
(:func:`emotions.annotation.labelstudio.corpus.apply_stages`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from emotions.annotation.labelstudio.client import LabelStudio
from emotions.annotation.labelstudio.corpus import (
    MergeResult,
    PulledClip,
    apply_stages,
    plan_stage,
    sha256_of,
)
from emotions.annotation.labelstudio.labeling_config import DATA_KEY, FROM_NAME
from emotions.annotation.queue_format import QUEUE_CSV
from emotions.corpus.confine import OutsideRootError, child, is_under, under
from emotions.corpus.votes import VOTE_COLUMNS
from emotions.errors import StageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    project_id: int
    tasks: int  # finished tasks in the export
    votes: pd.DataFrame
    merges: list[MergeResult]


SHA256 = re.compile(r"[0-9a-f]{64}")
SHORT_INT = re.compile(r"[0-9]{1,9}")


class PullError(StageError):
    """The export, or a task in it, cannot be pulled; the message names the task."""


def _task_name(task: Mapping[str, Any]) -> str:
    return f"task {task.get('id', '?')}"


def checked_export(export: Any) -> list[Mapping[str, Any]]:
    """``export`` when it has the shape of a Label Studio JSON export, else PullError: a list
    of task objects, each with a ``data`` object and a list of annotation objects whose
    ``result`` is a list of region objects."""
    if not isinstance(export, list):
        raise PullError(f"the Label Studio export is {type(export).__name__}, not a list of tasks")
    for number, task in enumerate(export):
        if not isinstance(task, Mapping):
            raise PullError(f"export item {number} is {type(task).__name__}, not a task object")
        name = _task_name(task)
        if not isinstance(task.get("data", {}), Mapping):
            raise PullError(f"{name}: 'data' is not an object")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list) or not all(
            isinstance(a, Mapping) for a in annotations
        ):
            raise PullError(f"{name}: 'annotations' is not a list of objects")
        for annotation in annotations:
            result = annotation.get("result", [])
            if not isinstance(result, list) or not all(
                isinstance(r, Mapping) and isinstance(r.get("value", {}), Mapping) for r in result
            ):
                raise PullError(f"{name}: an annotation's 'result' is not a list of regions")
    return export


def annotator_name(completed_by: Any, users: Mapping[int, str]) -> str:
    """A stable annotator id: the user's e-mail, else ``label-studio:<id>``."""
    if isinstance(completed_by, Mapping):
        email = str(completed_by.get("email") or "")
        user_id = completed_by.get("id")
    else:
        user_id, email = completed_by, ""
    if not email and user_id is not None:
        email = users.get(int(user_id), "")
    return email or f"label-studio:{user_id}"


def chosen_label(result: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> str | None:
    """The class chosen in one annotation's result (None: no choice, or not a class)."""
    for region in result:
        if region.get("from_name") != FROM_NAME or region.get("type") != "choices":
            continue
        choices = region.get("value", {}).get("choices") or []
        if isinstance(choices, list) and len(choices) == 1 and choices[0] in classes:
            return str(choices[0])
    return None


def export_votes(
    export: Sequence[Mapping[str, Any]], users: Mapping[int, str], classes: Sequence[str]
) -> pd.DataFrame:
    """Votes (VOTE_COLUMNS, the queue's clip ids) of a Label Studio JSON export."""
    rows = []
    for task in checked_export(export):
        data = task.get("data", {})
        if "clip_id" not in data or "stage" not in data:
            log.warning(
                "queue pull: task %s was not pushed by `emotions queue push`", task.get("id")
            )
            continue
        for annotation in task.get("annotations", []):
            if annotation.get("was_cancelled"):
                continue
            label = chosen_label(annotation.get("result", []), classes)
            if label is None:
                log.warning("queue pull: task %s: an annotation without a class", task.get("id"))
                continue
            rows.append(
                {
                    "clip_id": str(data["clip_id"]),
                    "stage": _stage(task),
                    "annotator": annotator_name(annotation.get("completed_by"), users),
                    "label": label,
                }
            )
    return pd.DataFrame(rows, columns=list(VOTE_COLUMNS))


def _stage(task: Mapping[str, Any]) -> int:
    stage = task["data"]["stage"]
    text = str(stage)
    if isinstance(stage, bool) or not isinstance(stage, int | str) or not SHORT_INT.fullmatch(text):
        raise PullError(f"{_task_name(task)}: stage {stage!r} is not a whole number")
    return int(stage)


def task_file(data: Mapping[str, Any], document_root: Path) -> Path:
    """The video of a task, from its ``/data/local-files/?d=...`` URL: resolved, and never
    outside the document root."""
    query = parse_qs(urlsplit(str(data.get(DATA_KEY, ""))).query)
    if "d" not in query:
        raise PullError(f"task of clip {data.get('clip_id')}: not a local-files URL")
    return under(document_root, query["d"][0], what=f"video of clip {data.get('clip_id')}")


def task_target(data: Mapping[str, Any], document_root: Path, into: Path | None) -> Path:
    """Where a task's clip and votes go: ``into``, else its queue folder (below the document
    root, and a queue folder: it holds queue.csv)."""
    if into is not None:
        return Path(into)
    if not isinstance(data.get("queue"), str) or not data["queue"]:
        raise PullError(f"task of clip {data.get('clip_id')}: no queue folder (pass --into)")
    folder = under(document_root, data["queue"], what=f"queue of clip {data.get('clip_id')}")
    if not (folder / QUEUE_CSV).is_file():
        raise PullError(f"task of clip {data.get('clip_id')}: {folder} is not a queue folder")
    return folder


def pulled_clip(task: Mapping[str, Any], document_root: Path) -> PulledClip:
    """The task's clip, checked: a plain clip id, a sha256, the file it names under the
    document root with that very content."""
    data = task["data"]
    name = _task_name(task)
    clip_id = data.get("clip_id")
    if not isinstance(clip_id, str):
        raise PullError(f"{name}: clip_id {clip_id!r} is not a string")
    try:
        child(document_root, clip_id, what="clip_id")
    except OutsideRootError as error:
        raise PullError(f"{name}: {error}") from None
    sha = data.get("sha256")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise PullError(
            f"{name} (clip {clip_id}): no sha256 (64 lower-case hex digits) in its data; "
            "was it pushed by `emotions queue push`?"
        )
    source = task_file(data, document_root)
    if not source.is_file():
        raise PullError(f"{name} (clip {clip_id}): {source} no longer exists")
    actual = sha256_of(source)
    if actual != sha:
        raise PullError(
            f"{name} (clip {clip_id}): {source} has sha256 {actual[:16]}…, the task says "
            f"{sha[:16]}…; not pulled"
        )
    return PulledClip(clip_id, sha, source)


def pull_stage(
    client: LabelStudio,
    project_id: int,
    *,
    classes: Sequence[str],
    document_root: Path,
    into: Path | None,
) -> PullResult:
    """Export the project's finished tasks and merge clips and votes into ``into`` (a corpus
    root), or with ``into=None`` into each clip's queue folder: every task checked and every
    target planned first, then all of it applied as one transaction."""
    export = checked_export(client.export(project_id))
    votes = export_votes(export, client.users(), classes)
    voted = set(votes["clip_id"])
    targets: dict[Path, list[PulledClip]] = {}
    for task in export:
        data = task.get("data", {})
        if str(data.get("clip_id")) not in voted:
            continue
        clip = pulled_clip(task, document_root)
        target = task_target(data, document_root, into)
        if into is None and not is_under(target, clip.source):
            raise PullError(
                f"{_task_name(task)} (clip {clip.clip_id}): its video {clip.source} is not in "
                f"its queue folder {target}"
            )
        targets.setdefault(target, []).append(clip)
    plans = []
    for target, clips in targets.items():
        ids = {clip.clip_id for clip in clips}
        plans.append(plan_stage(target, clips, votes[votes["clip_id"].isin(ids)]))
    merges: list[MergeResult] = apply_stages(plans)
    return PullResult(project_id, len(export), votes, merges)
