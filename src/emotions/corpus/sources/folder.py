"""The ``folder`` layout: one sub-folder per class, clips anywhere inside it.

``root/<class>/**/<clip>``; the label is the top folder's name as written on disk. Files lying
directly in the root (a README, a licence) belong to no class and are not clips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emotions.corpus.sources import Candidate, Record, Reject, Source, is_hidden, walk_files


class FolderSource(Source):
    name = "folder"
    # The classes the published dataset uses (documentation and tests; the taxonomy decides).
    dataset_classes: tuple[str, ...] = ()

    def scan(self, root: Path) -> Iterator[Record]:
        for folder in sorted(root.iterdir()):
            if is_hidden(folder.name) or not folder.is_dir() or not self.is_class_folder(folder):
                continue
            for item in walk_files(root, folder):
                if isinstance(item, Reject):
                    yield item
                else:
                    yield Candidate(item, label=self.label_of(folder.name))

    def is_class_folder(self, folder: Path) -> bool:
        """Whether a top-level folder holds a class (layouts with a split folder say no to it)."""
        return True

    def label_of(self, folder_name: str) -> str:
        """The label a class folder gives; subclasses may clean dataset-specific spellings."""
        return folder_name
