"""UCF101-style split lists, as eMotions, VideoEmotion-8 and Ekman-6 copies ship them.

::

    <splits>/classInd.txt      "<index> <Class>" per line, 1-based
    <splits>/trainlistNN.txt   "Class/video_id" or "Class/video_id <index>", extension optional
    <splits>/testlistNN.txt    the same

``NN`` is the split index (``01`` for the first of several official splits). One module reads
them for every layout that has them (``release``, ``frames``, ``videoemotion8``, ``ekman6``),
so a list means the same thing whatever shape the clips are stored in. Lists are the authors'
and are never rewritten: a malformed line, an index that disagrees with ``classInd.txt`` or an
entry listed twice becomes a quarantine entry naming the file and line, and an entry without
a clip becomes a ``missing file`` entry, so none of them vanishes silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from emotions.corpus.confine import escape_reason
from emotions.corpus.sources import Candidate, Record, Reject, SourceOptions

CLASS_INDEX = "classInd.txt"
SPLITS = ("train", "test")
DEFAULT_FOLDER = "splits"
# An entry's suffix is dropped only when it is a media extension: ids may contain dots.
MEDIA_SUFFIXES = frozenset(
    {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp"}
    | {".mp3", ".wav", ".m4a", ".aac", ".flac", ".ogg"}
)


@dataclass(frozen=True)
class ListEntry:
    """One line of a train or test list."""

    split: str  # "train" | "test"
    class_name: str  # as written
    video_id: str  # without a media extension
    written: str  # the entry as written, "Class/video_id.mp4"
    where: str  # "trainlist01.txt:12"


@dataclass
class SplitLists:
    """What a split folder holds for one split index."""

    folder: Path
    index: int
    classes: dict[int, str] = field(default_factory=dict)
    entries: list[ListEntry] = field(default_factory=list)
    problems: list[Reject] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {split: sum(e.split == split for e in self.entries) for split in SPLITS}


def list_name(split: str, index: int) -> str:
    return f"{split}list{index:02d}.txt"


def split_folder(root: Path, options: SourceOptions) -> tuple[Path, bool]:
    """(the split folder, whether the params named it). Relative paths are taken from the root."""
    if options.splits is None:
        return root / DEFAULT_FOLDER, False
    folder = Path(options.splits).expanduser()
    return (folder if folder.is_absolute() else root / folder), True


def video_id_of(name: str) -> str:
    """The id a file or list entry names: its last path part without a media extension."""
    last = PurePosixPath(name).name
    suffix = PurePosixPath(last).suffix
    return last[: -len(suffix)] if suffix.lower() in MEDIA_SUFFIXES else last


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def read_split_lists(
    folder: Path, index: int, class_key: Callable[[str], str], shown: str
) -> SplitLists | None:
    """Parse ``folder`` for split ``index``; None when it holds neither list.

    ``class_key`` maps a class name to the spelling used for matching (the adapter's), so
    ``Sad`` in a list and a folder ``Sadness`` are one class; ``shown`` is the folder as
    quarantine entries name it.
    """
    lists = SplitLists(folder=folder, index=index)
    paths = {split: folder / list_name(split, index) for split in SPLITS}
    index_file = folder / CLASS_INDEX
    # A list linked out of its folder is reported and not read (emotions.corpus.confine).
    escaped = set()
    for path in (*paths.values(), index_file):
        reason = escape_reason(folder, path, what=f"split list {path.name}")
        if reason is not None and os.path.lexists(path):
            lists.problems.append(Reject(f"{shown}/{path.name}", reason))
            escaped.add(path)
    paths = {split: path for split, path in paths.items() if path not in escaped}
    if not any(path.is_file() for path in paths.values()):
        return lists if lists.problems else None
    if index_file not in escaped and index_file.is_file():
        for number, line in _lines(index_file):
            match = re.fullmatch(r"(\d+)\s+(.+)", line)
            if match is None:
                lists.problems.append(
                    Reject(
                        f"{shown}/{CLASS_INDEX}:{number}",
                        f"unreadable: split list line {line!r} is not '<index> <Class>'",
                    )
                )
                continue
            lists.classes[int(match.group(1))] = match.group(2).strip()
    seen: dict[tuple[str, str], str] = {}
    for split, path in paths.items():
        if not path.is_file():
            continue
        for number, line in _lines(path):
            where = f"{path.name}:{number}"
            entry, problem = _parse_entry(split, line, where, lists.classes, class_key)
            if problem is not None:
                lists.problems.append(Reject(f"{shown}/{where}", f"unreadable: {problem}"))
                continue
            assert entry is not None
            key = (class_key(entry.class_name), entry.video_id)
            if key in seen:
                lists.problems.append(
                    Reject(
                        f"{shown}/{where}",
                        f"unreadable: split list entry {entry.written!r} is already listed at "
                        f"{seen[key]}; the first listing counts",
                    )
                )
                continue
            seen[key] = where
            lists.entries.append(entry)
    return lists


def _parse_entry(
    split: str,
    line: str,
    where: str,
    classes: dict[int, str],
    class_key: Callable[[str], str],
) -> tuple[ListEntry | None, str | None]:
    tokens = line.split()
    number: int | None = None
    if len(tokens) > 1 and tokens[-1].isdigit():
        number = int(tokens[-1])
        tokens = tokens[:-1]
    written = " ".join(tokens).replace("\\", "/").strip("/")
    parts = [part for part in written.split("/") if part]
    if len(parts) < 2:
        return None, f"split list line {line!r} is not 'Class/video_id'"
    entry = ListEntry(split, parts[0], video_id_of(parts[-1]), written, where)
    if number is not None and classes:
        named = classes.get(number)
        if named is None or class_key(named) != class_key(entry.class_name):
            said = f"'{named}'" if named is not None else "no class"
            return None, (
                f"split list line {line!r}: index {number} is {said} in {CLASS_INDEX}, "
                f"not '{entry.class_name}'"
            )
    return entry, None


def apply_lists(
    records: Iterable[Record],
    lists: SplitLists | None,
    key_of: Callable[[Candidate], tuple[str, str]],
    class_key: Callable[[str], str],
) -> Iterator[Record]:
    """``records`` with each candidate's ``official_split`` set from ``lists``, then a
    ``missing file`` reject per listed entry that no candidate matched, then the lists'
    problems. Without lists the records pass through unchanged."""
    if lists is None:
        yield from records
        return
    wanted = {(class_key(e.class_name), e.video_id): e for e in lists.entries}
    matched: set[tuple[str, str]] = set()
    for record in records:
        if isinstance(record, Candidate):
            key = key_of(record)
            entry = wanted.get(key)
            if entry is not None:
                matched.add(key)
                record = replace(record, official_split=entry.split)
        yield record
    for key, entry in wanted.items():
        if key not in matched:
            yield Reject(
                entry.written,
                f"missing file (listed in {entry.where}, no such clip)",
                official_split=entry.split,
            )
    yield from lists.problems
