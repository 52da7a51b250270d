"""The ``emotions`` layout (the eMotions corpus and the bundled sample corpus).

::

    root/videos/<clip_id>.<ext>
    root/annotations.csv   clip_id,stage,annotator,label   (one row per vote, long format)
    root/meta.csv          clip_id,platform                 (optional)

The clip id in the CSVs is the video's file stem. Labels come from the votes (aggregated by
``emotions.corpus.votes`` in the ingest stage); a video nobody voted on is rejected, and so
is an annotated id with no video, so neither disappears silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pandas as pd

from emotions.corpus.sources import Candidate, Record, Reject, Source, walk_files

log = logging.getLogger(__name__)

VOTE_COLUMNS = ("clip_id", "stage", "annotator", "label")


class EmotionsSource(Source):
    name = "emotions"

    def scan(self, root: Path) -> Iterator[Record]:
        videos = root / "videos"
        files: list[str] = []
        if videos.is_dir():
            for item in walk_files(root, videos):
                if isinstance(item, Reject):
                    yield item
                else:
                    files.append(item)
        votes, problem = _read_votes(root / "annotations.csv")
        if problem is not None:
            for path in files:
                yield Reject(path, f"no annotations ({problem})")
            return
        by_clip = {
            str(key): group[["stage", "annotator", "label"]]
            for key, group in votes.groupby("clip_id", sort=False)
        }
        platforms = _read_platforms(root / "meta.csv")
        seen: set[str] = set()
        for path in files:
            stem = PurePosixPath(path).stem
            clip_votes = by_clip.get(stem)
            if clip_votes is None:
                yield Reject(path, "no annotations")
                continue
            seen.add(stem)
            yield Candidate(
                path,
                label=None,
                platform=platforms.get(stem),
                votes=clip_votes.reset_index(drop=True),
            )
        for clip_id in by_clip:
            if clip_id not in seen:
                yield Reject(
                    f"videos/{clip_id}", "missing file (annotated in annotations.csv, no video)"
                )


def _read_csv(path: Path) -> pd.DataFrame:
    # Ids stay strings ("007" is not 7); empty cells stay empty strings, not NaN.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _read_votes(path: Path) -> tuple[pd.DataFrame, str | None]:
    if not path.is_file():
        return pd.DataFrame(columns=list(VOTE_COLUMNS)), "annotations.csv is missing"
    try:
        frame = _read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return pd.DataFrame(columns=list(VOTE_COLUMNS)), f"annotations.csv is unreadable: {error}"
    missing = [c for c in VOTE_COLUMNS if c not in frame.columns]
    if missing:
        return frame, f"annotations.csv lacks column(s) {', '.join(missing)}"
    frame = frame[list(VOTE_COLUMNS)].apply(lambda column: column.str.strip())
    return frame[(frame["clip_id"] != "") & (frame["label"] != "")], None


def _read_platforms(path: Path) -> dict[str, str]:
    """clip id → platform; meta.csv is optional, so a bad one is logged and ignored."""
    if not path.is_file():
        return {}
    try:
        frame = _read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        log.warning("ignoring %s: %s", path, error)
        return {}
    if not {"clip_id", "platform"} <= set(frame.columns):
        log.warning("ignoring %s: needs columns clip_id,platform", path)
        return {}
    return {
        str(row.clip_id).strip(): str(row.platform).strip()
        for row in frame.itertuples(index=False)
        if str(row.platform).strip()
    }
