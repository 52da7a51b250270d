"""`emotions queue push`: the queue folders → tasks of a Label Studio project.

The project (found by title, created on the first push) gets the labeling config of the
taxonomy; a changed taxonomy updates it. The videos stay where the queue put them: a Local
Files storage over the queue root lets Label Studio serve them at
``/data/local-files/?d=<path below the document root>``, so nothing is uploaded or copied.

Pushing is idempotent: a queued clip whose sha256 is already in a task of the project is not
imported again, so pushing after every `emotions queue` run only adds the new folders' clips. Each task
carries the annotation stage its votes will have (the corpus's next stage at push time): the
votes of one round stay one stage however many pulls collect them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from emotions.annotation.labelstudio.client import LabelStudio
from emotions.annotation.labelstudio.labeling_config import (
    DATA_KEY,
    DEFAULT_FPS,
    FPS_KEY,
    labeling_config,
    same_config,
)
from emotions.annotation.labelstudio.queue_folder import read_queues
from emotions.corpus.confine import is_under
from emotions.media.probe import header_frame_rate

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Clips the emotions service answered with low confidence, disagreeing views or drifted "
    "inputs (emotions queue). Watch and listen, then choose the emotion the clip conveys."
)
STORAGE_TITLE = "emotions queue"


def frame_rate(path: Path) -> float:
    """The clip's declared frame rate, for the player's frame counter; Label Studio's
    default when the header does not say."""
    rate = header_frame_rate(path)
    return round(rate, 3) if rate else DEFAULT_FPS


@dataclass(frozen=True)
class PushResult:
    project_id: int
    project_url: str
    project_state: str  # "created", "updated" (its labeling config) or "unchanged"
    imported: int
    already_there: int
    stage: int


def local_files_url(file: Path, document_root: Path, *, folder: bool = False) -> str:
    """The URL Label Studio serves ``file`` at, relative to its LOCAL_FILES_DOCUMENT_ROOT
    (with ``folder``: just the relative path)."""
    root = Path(os.path.abspath(document_root))
    target = Path(os.path.abspath(file))
    if not is_under(root, target) or target == root:
        raise ValueError(
            f"{target} is not below the Label Studio document root {root} "
            "(annotate.document_root, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        )
    relative = target.relative_to(root).as_posix()
    return relative if folder else f"/data/local-files/?d={quote(relative)}"


def ensure_project(client: LabelStudio, title: str, classes: Sequence[str]) -> tuple[dict, str]:
    """(project, state): the titled project, its labeling config set to ``classes``."""
    config = labeling_config(classes)
    project = client.find_project(title)
    if project is None:
        return client.create_project(title, config, DESCRIPTION), "created"
    if same_config(project.get("label_config"), config):
        return project, "unchanged"
    log.info("queue push: updating the labeling config of project %s", project["id"])
    return client.update_project(project["id"], label_config=config), "updated"


def ensure_storage(client: LabelStudio, project_id: int, folder: Path) -> dict:
    """The project's Local Files storage over ``folder`` (created once)."""
    path = os.path.abspath(folder)
    for storage in client.local_storages(project_id):
        if os.path.normpath(str(storage.get("path") or "")) == path:
            return storage
    return client.create_local_storage(project_id, path, STORAGE_TITLE)


def push_queue(
    client: LabelStudio,
    queue_dir: Path,
    *,
    title: str,
    classes: Sequence[str],
    document_root: Path,
    stage: int,
) -> PushResult:
    """Create/update the project and import every queued clip it does not have yet.

    ``queue_dir`` is one queue folder or the folder of them (``queue.out``)."""
    queue = read_queues(queue_dir)
    urls = [local_files_url(file, document_root) for file in queue["file"]]
    project, state = ensure_project(client, title, classes)
    project_id = int(project["id"])
    ensure_storage(client, project_id, Path(queue_dir))
    known = {str(task["data"].get("sha256")) for task in client.tasks(project_id)}
    tasks = []
    for row, url, file in zip(queue.itertuples(index=False), urls, queue["file"], strict=True):
        if row.sha256 in known:
            continue
        data = {
            DATA_KEY: url,
            FPS_KEY: frame_rate(Path(file)),
            "clip_id": row.clip_id,
            "sha256": row.sha256,
            "stage": stage,
            "reason": row.reason,
            "score": row.score,
            "predicted_label": row.predicted_label,
            "confidence": row.confidence,
            "request_id": row.request_id,
            "served_at": row.served_at,
            # The queue folder, below the document root: its annotations.csv gets the votes.
            "queue": local_files_url(row.folder, document_root, folder=True),
        }
        tasks.append({"data": data})
    imported = client.import_tasks(project_id, tasks)
    return PushResult(
        project_id=project_id,
        project_url=f"{client.url}/projects/{project_id}/data",
        project_state=state,
        imported=imported,
        already_there=len(queue) - len(tasks),
        stage=stage,
    )
