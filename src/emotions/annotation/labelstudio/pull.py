"""`emotions queue pull`: Label Studio's export of finished tasks → the next annotation stage.

Every submitted annotation of a task becomes one vote ``clip_id,stage,annotator,label``:
the stage is the one the task was pushed with, the annotator is Label Studio's user (its
e-mail, or ``label-studio:<id>`` when the user has none), the label the chosen class. Skipped
(cancelled) annotations and annotations without a choice are not votes. The clips and votes
are merged into a corpus root in the ``emotions`` layout (emotions.annotation.labelstudio.corpus), ready for
ingest to aggregate with the earlier stages: ``data/`` (``--into data``) or, by default, each
clip's own queue folder (its ``annotations.csv``, the place the queue format names for them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from emotions.annotation.labelstudio.client import LabelStudio
from emotions.annotation.labelstudio.corpus import MergeResult, PulledClip, merge_stage
from emotions.annotation.labelstudio.labeling_config import DATA_KEY, FROM_NAME
from emotions.corpus.votes import VOTE_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    project_id: int
    tasks: int  # finished tasks in the export
    votes: pd.DataFrame
    merges: list[MergeResult]


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
        if len(choices) == 1 and choices[0] in classes:
            return str(choices[0])
    return None


def export_votes(
    export: Sequence[Mapping[str, Any]], users: Mapping[int, str], classes: Sequence[str]
) -> pd.DataFrame:
    """Votes (VOTE_COLUMNS, the queue's clip ids) of a Label Studio JSON export."""
    rows = []
    for task in export:
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
                    "stage": int(data["stage"]),
                    "annotator": annotator_name(annotation.get("completed_by"), users),
                    "label": label,
                }
            )
    return pd.DataFrame(rows, columns=list(VOTE_COLUMNS))


def task_file(data: Mapping[str, Any], document_root: Path) -> Path:
    """The video of a task, from its ``/data/local-files/?d=...`` URL."""
    query = parse_qs(urlsplit(str(data[DATA_KEY])).query)
    if "d" not in query:
        raise ValueError(f"task of clip {data.get('clip_id')}: not a local-files URL")
    return Path(document_root) / query["d"][0]


def pull_stage(
    client: LabelStudio,
    project_id: int,
    *,
    classes: Sequence[str],
    document_root: Path,
    into: Path | None,
) -> PullResult:
    """Export the project's finished tasks and merge clips and votes into ``into`` (a corpus
    root), or with ``into=None`` into each clip's queue folder."""
    export = client.export(project_id)
    votes = export_votes(export, client.users(), classes)
    voted = set(votes["clip_id"])
    targets: dict[Path, list[PulledClip]] = {}
    for task in export:
        data = task.get("data", {})
        if str(data.get("clip_id")) not in voted:
            continue
        source = task_file(data, document_root)
        if not source.is_file():
            raise FileNotFoundError(f"clip {data['clip_id']}: {source} no longer exists")
        target = Path(into) if into is not None else Path(document_root) / str(data["queue"])
        clip = PulledClip(str(data["clip_id"]), str(data["sha256"]), source)
        targets.setdefault(target, []).append(clip)
    merges = []
    for target, clips in targets.items():
        ids = {clip.clip_id for clip in clips}
        merges.append(merge_stage(target, clips, votes[votes["clip_id"].isin(ids)]))
    return PullResult(project_id, len(export), votes, merges)
