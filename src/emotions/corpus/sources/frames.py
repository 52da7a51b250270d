"""The ``frames`` layout: pre-extracted copies, one folder of pictures per clip.

::

    root/imgs/<Class>/<video_id>/000001.jpg …   (optional n_frames file)
    root/mp3/<Class>/<video_id>.mp3             (or .wav / .m4a; optional)
    root/splits/…                               optional split lists, as in ``release``

Each frame folder is one candidate (``frames=True``); the probe and the decoder read it through
``emotions.media.framefolder``. A file where a frame folder should be, and an audio file whose
frame folder is missing, are reported rather than skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from emotions.corpus.confine import is_under
from emotions.corpus.sources import Candidate, Record, Reject, Source, is_hidden
from emotions.corpus.sources.release import load_lists
from emotions.corpus.sources.splitlists import apply_lists, video_id_of
from emotions.media.framefolder import AUDIO_DIR, AUDIO_SUFFIXES, IMAGES_DIR


class FramesSource(Source):
    name = "frames"

    def scan(self, root: Path) -> Iterator[Record]:
        lists, problems = load_lists(self, root)
        self.split_lists = lists
        yield from problems
        yield from apply_lists(self._folders(root), lists, self._key, self.class_key)

    def _key(self, candidate: Candidate) -> tuple[str, str]:
        return self.class_key(candidate.label or ""), Path(candidate.path).name

    def _folders(self, root: Path) -> Iterator[Record]:
        images = root / IMAGES_DIR
        if not images.is_dir():
            yield Reject(
                IMAGES_DIR,
                f"missing file (the frames layout reads root/{IMAGES_DIR}/<Class>/<video_id>/)",
            )
            return
        found: set[tuple[str, str]] = set()
        for class_dir in _children(images):
            if not class_dir.is_dir():
                continue  # a README next to the class folders is no clip
            try:
                clips = _children(class_dir)
            except OSError as error:
                reason = f"unreadable: {error.strerror or error}"
                yield Reject(class_dir.relative_to(root).as_posix(), reason)
                continue
            for clip in clips:
                rel = clip.relative_to(root).as_posix()
                if clip.is_symlink() and not is_under(root, clip):
                    yield Reject(rel, "outside root (linked folder)")
                elif not clip.is_dir():
                    yield Reject(rel, "not a video: a file where a frame folder is expected")
                else:
                    found.add((class_dir.name, clip.name))
                    yield Candidate(rel, label=class_dir.name, frames=True)
        yield from _orphan_audio(root, found)


def _children(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not is_hidden(path.name))


def _orphan_audio(root: Path, found: set[tuple[str, str]]) -> Iterator[Reject]:
    """Audio files with no frame folder: most often a folder lost while copying."""
    audio = root / AUDIO_DIR
    if not audio.is_dir():
        return
    for class_dir in _children(audio):
        if not class_dir.is_dir():
            continue
        for path in _children(class_dir):
            if path.suffix.lower() not in AUDIO_SUFFIXES or not os.path.isfile(path):
                continue
            if (class_dir.name, video_id_of(path.name)) not in found:
                yield Reject(
                    path.relative_to(root).as_posix(),
                    f"missing file (audio without its frame folder "
                    f"{IMAGES_DIR}/{class_dir.name}/{video_id_of(path.name)})",
                )
