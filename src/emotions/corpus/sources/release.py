"""The ``release`` layout: the eMotions download as its authors publish it.

::

    root/<Class>/<video_id>.<ext>      one folder per class (any spelling the taxonomy resolves)
    root/splits/classInd.txt           optional UCF101-style split lists (see splitlists.py);
    root/splits/trainlistNN.txt        the folder is the dataset param ``splits:`` and NN its
    root/splits/testlistNN.txt         ``split_index:``

It is the ``folder`` layout plus the lists: each clip carries the list that names it
(``official_split``), a listed clip without a file is reported, and the split folder itself is
never taken for a class. VideoEmotion-8 and Ekman-6 copies with lists use the same adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from emotions.corpus.confine import escape_reason
from emotions.corpus.sources import Candidate, Record, Reject
from emotions.corpus.sources.folder import FolderSource
from emotions.corpus.sources.splitlists import (
    DEFAULT_FOLDER,
    SplitLists,
    apply_lists,
    read_split_lists,
    split_folder,
    video_id_of,
)


def shown_path(root: Path, folder: Path) -> str:
    """A folder as quarantine entries name it: root-relative when it lies under the root."""
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(folder)


def load_lists(source, root: Path) -> tuple[SplitLists | None, list[Reject]]:
    """The split lists of ``source``'s options (None when there are none) and, when the params
    named a split folder that holds no list, the reject that says so."""
    folder, explicit = split_folder(root, source.options)
    shown = shown_path(root, folder)
    # The params may name a folder anywhere; the default one is part of the root.
    reason = None if explicit else escape_reason(root, folder, what="split folder")
    if reason is not None and os.path.lexists(folder):
        return None, [Reject(DEFAULT_FOLDER, reason)]
    lists = None
    if folder.is_dir():
        lists = read_split_lists(folder, source.options.split_index, source.class_key, shown)
    if lists is None and explicit:
        name = f"trainlist{source.options.split_index:02d}.txt"
        return None, [Reject(shown, f"missing file (the split folder has no {name} or test list)")]
    return lists, []


class ReleaseSource(FolderSource):
    name = "release"

    def scan(self, root: Path) -> Iterator[Record]:
        self._split_dir = split_folder(root, self.options)[0].resolve()
        lists, problems = load_lists(self, root)
        self.split_lists = lists
        yield from problems
        yield from apply_lists(super().scan(root), lists, self._key, self.class_key)

    def is_class_folder(self, folder: Path) -> bool:
        return folder.resolve() != self._split_dir

    def _key(self, candidate: Candidate) -> tuple[str, str]:
        return self.class_key(candidate.label or ""), video_id_of(
            PurePosixPath(candidate.path).name
        )
