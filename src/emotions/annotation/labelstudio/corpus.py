"""Writing a pulled stage into a corpus in the ``emotions`` layout (``videos/`` + ``annotations.csv``).

The layout names a clip by its video's file stem, so a pulled clip whose content the corpus
already holds (same sha256) is voted on under that file's stem — a second copy under another
name would make ingest collapse or reject the pair — and a new clip is copied in under its
queue file name (or its clip id, if that name is taken by other content). Votes replace any
earlier row of the same (clip, stage, annotator), so pulling the same export twice leaves the
corpus as one pull did. Every target of a pull is planned first (nothing written), then
applied as one transaction (:func:`apply_stages`): the videos and the votes of a pull land
together or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emotions.atomic import atomic_write, fsync_folder, process_alive
from emotions.corpus.confine import child
from emotions.corpus.votes import VOTE_COLUMNS
from emotions.errors import StageError

ANNOTATIONS = "annotations.csv"
VIDEOS = "videos"
STAGED = ".pull"  # suffix of a pull's hidden staged copies (pid before it)


class PullConflictError(StageError):
    """The pull cannot place what it pulled (a name taken, content changed); nothing written."""


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
    """sha256 → video already in the corpus, hashing only files of a queued clip's size
    (hidden files, a pull's staged copies among them, are no videos)."""
    found: dict[str, Path] = {}
    if not videos.is_dir():
        return found
    for path in sorted(videos.rglob("*")):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.stat().st_size in sizes:
            found.setdefault(sha256_of(path), path)
    return found


@dataclass
class StagePlan:
    """What a pull will do to one corpus root, decided before anything is written."""

    root: Path
    copies: list[tuple[PulledClip, Path]]  # (clip, where its video goes)
    annotations: pd.DataFrame  # the whole new annotations.csv
    result: MergeResult


def plan_stage(root: Path, clips: Iterable[PulledClip], votes: pd.DataFrame) -> StagePlan:
    """Where ``clips`` go in ``root`` and what its annotations.csv becomes; writes nothing.

    ``votes`` has VOTE_COLUMNS with the queue's clip ids; they are rewritten to the stems the
    clips have in the corpus. Every new file name comes from data, so it must be one plain
    entry of ``videos/`` (:func:`emotions.corpus.confine.child`).
    """
    root = Path(root)
    videos = root / VIDEOS
    clips = list(clips)
    existing = _existing_by_hash(videos, {c.source.stat().st_size for c in clips})
    planned: set[Path] = set()
    stem_of: dict[str, str] = {}
    copies: list[tuple[PulledClip, Path]] = []
    matched = 0
    for clip in clips:
        if clip.clip_id in stem_of:
            raise PullConflictError(f"clip id {clip.clip_id} names two tasks; nothing pulled")
        if clip.sha256 in existing:
            here = existing[clip.sha256]
            matched += 1
        else:
            here = child(videos, clip.source.name, what="video name")
            if here in planned or os.path.lexists(here):
                here = child(videos, f"{clip.clip_id}{clip.source.suffix.lower()}", what="clip id")
            if here in planned or os.path.lexists(here):
                raise PullConflictError(
                    f"{here}: taken by other content; cannot place {clip.source}"
                )
            copies.append((clip, here))
            planned.add(here)
            existing[clip.sha256] = here
        stem_of[clip.clip_id] = here.stem
    unknown = set(votes["clip_id"]) - set(stem_of)
    if unknown:
        raise PullConflictError(f"votes for clip(s) without a video: {', '.join(sorted(unknown))}")
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
    n_replaced = int(replaced.sum()) if len(old) else 0
    result = MergeResult(root, len(copies), matched, len(new) - n_replaced, n_replaced)
    return StagePlan(root, copies, merged, result)


def _staged_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}{STAGED}")


def _remove_dead_stagings(folder: Path) -> None:
    """Staged files a killed pull left behind (its process is gone): never placed, so junk."""
    if not folder.is_dir():
        return
    for path in folder.glob(f".*{STAGED}"):
        pid = path.name[: -len(STAGED)].rsplit(".", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _copy_verified(source: Path, target: Path, sha256: str) -> None:
    """Copy ``source`` to ``target``, hashing what is copied: the bytes placed in the corpus
    are the ones the task names, even if the queued file changed since it was checked."""
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            digest.update(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    if digest.hexdigest() != sha256:
        raise PullConflictError(
            f"{source}: its content changed (sha256 {digest.hexdigest()[:16]}…, the task "
            f"says {sha256[:16]}…); nothing pulled"
        )


def apply_stages(plans: Sequence[StagePlan]) -> list[MergeResult]:
    """Carry out ``plans`` as one transaction: every video and every annotations.csv, or none.

    Everything is first written under hidden staged names (copies verified against their
    sha256), then put in place: videos by link (never over a file), annotations.csv last by
    rename. A failure at any point removes what was placed and puts the earlier
    annotations.csv back, so the corpora are as before the pull.
    """
    staged: list[Path] = []
    placed: list[Path] = []
    restore: list[tuple[Path, bytes | None]] = []
    try:
        tables: list[tuple[Path, Path]] = []
        for plan in plans:
            _remove_dead_stagings(plan.root / VIDEOS)
            _remove_dead_stagings(plan.root)
            for clip, final in plan.copies:
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = _staged_name(final)
                staged.append(tmp)
                _copy_verified(clip.source, tmp, clip.sha256)
            final = plan.root / ANNOTATIONS
            tmp = _staged_name(final)
            staged.append(tmp)
            plan.annotations.to_csv(tmp, index=False)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            tables.append((tmp, final))
        for plan in plans:
            for _, final in plan.copies:
                os.link(_staged_name(final), final)  # FileExistsError: placed meanwhile
                placed.append(final)
        for tmp, final in tables:
            before = final.read_bytes() if final.is_file() else None
            os.replace(tmp, final)
            restore.append((final, before))
    except BaseException:
        # Every step of the way back is tried, whatever another one raises.
        for final in placed:
            with contextlib.suppress(OSError):
                final.unlink(missing_ok=True)
        for final, earlier in restore:
            with contextlib.suppress(OSError):
                if earlier is None:
                    final.unlink(missing_ok=True)
                else:
                    atomic_write(final, lambda tmp, data=earlier: tmp.write_bytes(data))
        raise
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    for folder in {p.root for p in plans} | {p.root / VIDEOS for p in plans if p.copies}:
        fsync_folder(folder)
    return [plan.result for plan in plans]


def merge_stage(root: Path, clips: Iterable[PulledClip], votes: pd.DataFrame) -> MergeResult:
    """Put ``clips`` into ``root`` (created if need be) and their ``votes`` into
    annotations.csv: :func:`plan_stage` then :func:`apply_stages`, one transaction."""
    return apply_stages([plan_stage(root, clips, votes)])[0]
