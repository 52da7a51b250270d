"""Writing a pulled stage into a corpus in the ``emotions`` layout (``videos/`` + ``annotations.csv``).

The layout names a clip by its video's file stem, so a pulled clip whose content the corpus
already holds (same sha256) is voted on under that file's stem — a second copy under another
name would make ingest collapse or reject the pair — and a new clip is copied in under its
queue file name (or its clip id, if that name is taken by other content). Votes replace any
earlier row of the same (clip, stage, annotator), so pulling the same export twice leaves the
corpus as one pull did. annotations.csv is rewritten atomically; each video is copied to a
temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emotions.atomic import atomic_write
from emotions.corpus.votes import VOTE_COLUMNS

ANNOTATIONS = "annotations.csv"
VIDEOS = "videos"


@dataclass(frozen=True)
class PulledClip:
    """One clip of the stage: where its video is now and what it is."""

    clip_id: str  # the queue's id
    sha256: str
    source: Path  # the queued video


@dataclass(frozen=True)
class MergeResult:
    root: Path
    copied: int  # videos new to the corpus
    matched: int  # clips the corpus already had (voted on under their existing stem)
    votes_added: int
    votes_replaced: int


def read_votes(root: Path) -> pd.DataFrame:
    """The corpus's annotations.csv as strings (an empty frame when there is none yet)."""
    path = Path(root) / ANNOTATIONS
    if not path.is_file():
        return pd.DataFrame(columns=list(VOTE_COLUMNS), dtype=str)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in VOTE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {', '.join(missing)}")
    return frame


def next_stage(root: Path) -> int:
    """One past the highest integer stage in the corpus's annotations.csv (1 for none)."""
    stages = pd.to_numeric(read_votes(root)["stage"], errors="coerce").dropna()
    return int(stages.max()) + 1 if len(stages) else 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing_by_hash(videos: Path, sizes: set[int]) -> dict[str, Path]:
    """sha256 → video already in the corpus, hashing only files of a queued clip's size."""
    found: dict[str, Path] = {}
    if not videos.is_dir():
        return found
    for path in sorted(videos.rglob("*")):
        if path.is_file() and path.stat().st_size in sizes:
            found.setdefault(sha256_of(path), path)
    return found


def _copy_atomic(source: Path, target: Path) -> None:
    def write(tmp: Path) -> None:
        shutil.copyfile(source, tmp)

    atomic_write(target, write)


def merge_stage(root: Path, clips: Iterable[PulledClip], votes: pd.DataFrame) -> MergeResult:
    """Put ``clips`` into ``root`` (created if need be) and their ``votes`` into annotations.csv.

    ``votes`` has VOTE_COLUMNS with the queue's clip ids; they are rewritten to the stems the
    clips have in the corpus.
    """
    root = Path(root)
    videos = root / VIDEOS
    clips = list(clips)
    existing = _existing_by_hash(videos, {c.source.stat().st_size for c in clips})
    stem_of: dict[str, str] = {}
    copied = matched = 0
    for clip in clips:
        if clip.sha256 in existing:
            here = existing[clip.sha256]
            matched += 1
        else:
            here = videos / clip.source.name
            if here.exists() or os.path.lexists(here):
                here = videos / f"{clip.clip_id}{clip.source.suffix.lower()}"
            if here.exists():
                raise ValueError(f"{here}: taken by other content; cannot place {clip.source}")
            _copy_atomic(clip.source, here)
            existing[clip.sha256] = here
            copied += 1
        stem_of[clip.clip_id] = here.stem
    unknown = set(votes["clip_id"]) - set(stem_of)
    if unknown:
        raise ValueError(f"votes for clip(s) without a video: {', '.join(sorted(unknown))}")
    new = votes.assign(
        clip_id=votes["clip_id"].map(stem_of), stage=votes["stage"].astype(int).astype(str)
    )[list(VOTE_COLUMNS)].astype(str)
    old = read_votes(root)
    key = ["clip_id", "stage", "annotator"]
    old_keys = old[key].astype(str).apply(tuple, axis=1) if len(old) else pd.Series(dtype=object)
    new_keys = set(new[key].apply(tuple, axis=1)) if len(new) else set()
    replaced = old_keys.isin(new_keys) if len(old) else pd.Series(dtype=bool)
    kept = old[~replaced] if len(old) else old
    merged = pd.concat([kept, new], ignore_index=True)[[*old.columns]]
    atomic_write(root / ANNOTATIONS, lambda tmp: merged.to_csv(tmp, index=False))
    n_replaced = int(replaced.sum()) if len(old) else 0
    return MergeResult(root, copied, matched, len(new) - n_replaced, n_replaced)
