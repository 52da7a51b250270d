"""Dataset adapters: how each on-disk layout names its clips and their labels.

An adapter only *lists*: it walks its layout and yields a ``Candidate`` per clip (path relative to
the root as found, label as given, platform, votes) or a ``Reject`` for something it can already
tell is unusable (a video nobody annotated, an annotated clip with no file). Everything that is
the same for every layout (path safety, label resolution against the taxonomy, probing,
duplicates) happens once, in ``emotions.stages.ingest``, so a new layout is one small module and
one line in ``LAYOUTS`` below.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from emotions.corpus.confine import is_under
from emotions.corpus.labels import normalise_label

if TYPE_CHECKING:
    from emotions.corpus.sources.splitlists import SplitLists

__all__ = [
    "COMMON_SYNONYMS",
    "LAYOUTS",
    "Candidate",
    "Record",
    "Reject",
    "Source",
    "SourceOptions",
    "available_layouts",
    "get_source",
    "is_hidden",
    "normalise_label",
    "walk_files",
]

# layout name → "module:Class". Imported lazily so listing layouts costs nothing.
LAYOUTS: dict[str, str] = {
    "emotions": "emotions.corpus.sources.emotions:EmotionsSource",
    "videoemotion8": "emotions.corpus.sources.videoemotion8:VideoEmotion8Source",
    "ekman6": "emotions.corpus.sources.ekman6:Ekman6Source",
    "folder": "emotions.corpus.sources.folder:FolderSource",
    "csv": "emotions.corpus.sources.csv:CsvSource",
    "release": "emotions.corpus.sources.release:ReleaseSource",
    "frames": "emotions.corpus.sources.frames:FramesSource",
}

# Words people use for the same class. Applied only when the label itself is not a class (nor a
# declared alias, see params.yaml `label_aliases`), so a taxonomy that has both "happiness" and
# "joy" keeps them apart. Targets are matched like labels, so "sadness" finds eMotions' "Sadness".
COMMON_SYNONYMS: dict[str, str] = {
    "happiness": "joy",
    "happy": "joy",
    "angry": "anger",
    "sad": "sadness",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "surprised": "surprise",
    "disgusted": "disgust",
    "trusting": "trust",
    # The adjectives of the released eMotions classes.
    "excited": "excitation",
    "relaxed": "relaxation",
    "tense": "tension",
}


@dataclass(frozen=True)
class Candidate:
    """A clip the layout names. ``votes`` (columns stage, annotator, label) replaces ``label``.

    ``official_split`` is the split list naming the clip ("train", "test"; None when no list
    does); ``frames`` marks a folder of pictures (layout ``frames``) instead of a media file.
    """

    path: str
    label: str | None
    platform: str | None = None
    votes: pd.DataFrame | None = None
    official_split: str | None = None
    frames: bool = False


@dataclass(frozen=True)
class Reject:
    """Something the layout names that cannot become a clip, with the quarantine reason.

    ``official_split`` is set when a split list names it, so ingest can count listed clips
    that are lost instead of letting them disappear from the official split unnoticed.
    """

    path: str
    reason: str
    official_split: str | None = None


Record = Candidate | Reject


@dataclass(frozen=True)
class SourceOptions:
    """The dataset params an adapter may read (see ``DatasetConfig``): where the split lists
    are, which of them, and the frame rate of frame folders."""

    splits: str | None = None
    split_index: int = 1
    fps: float | str = 30.0


class Source(ABC):
    """One on-disk layout.

    ``classes`` (the taxonomy, when the caller has one) lets an adapter match class names
    written in two places, e.g. a folder ``Sad`` and a split list's ``Sadness``, the way ingest
    will resolve them.
    """

    name: ClassVar[str]
    synonyms: ClassVar[Mapping[str, str]] = COMMON_SYNONYMS

    def __init__(
        self,
        options: SourceOptions | None = None,
        classes: Mapping[str, object] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.options = options or SourceOptions()
        self.classes = dict(classes or {})
        # params.yaml `label_aliases` of the taxonomy: split lists resolve through them too.
        self.aliases = dict(aliases or {})
        # Set by scan() in layouts with split lists: what the lists held (ingest reports it).
        self.split_lists: SplitLists | None = None

    def class_key(self, raw: object) -> str:
        """One spelling per class for matching names across files: the taxonomy class when
        ``raw`` resolves to one, else its normalised form after the synonyms."""
        resolved = self.resolve_label(raw, self.classes, self.aliases) if self.classes else None
        if resolved is not None:
            return resolved
        form = normalise_label(raw)
        return normalise_label(self.synonyms.get(form, form))

    @abstractmethod
    def scan(self, root: Path) -> Iterator[Record]:
        """Yield every candidate clip and every reject under ``root``; never modify ``root``."""

    def resolve_label(
        self,
        raw: object,
        classes: Mapping[str, object],
        aliases: Mapping[str, str] | None = None,
    ) -> str | None:
        """The taxonomy class ``raw`` names (exact key spelling), or None when it names none.

        In order: a class name, a declared alias (params.yaml ``label_aliases``: the user's
        word, so it outranks ours), then the adapter's built-in synonyms. All three are compared
        in ``normalise_label`` form, so "SAD", "sad" and "Sad " are one spelling.
        """
        by_form = {normalise_label(name): name for name in classes}
        form = normalise_label(raw)
        if form in by_form:
            return by_form[form]
        declared = {normalise_label(alias): target for alias, target in (aliases or {}).items()}
        for table in (declared, self.synonyms):
            target = table.get(form)
            if target is not None:
                return by_form.get(normalise_label(target))
        return None


def is_hidden(name: str) -> bool:
    """Dot-files (.DS_Store, editor and encoder left-overs) are never clips and never reported."""
    return name.startswith(".")


def walk_files(root: Path, folder: Path) -> Iterator[str | Reject]:
    """Every non-hidden file under ``folder`` as a root-relative POSIX path, in sorted order.

    Symlinked sub-folders are not descended (that is how loops and double counting happen); one
    that points out of the root is reported, since its content would otherwise be silently lost.
    Symlinked files are listed: the ingest stage resolves and checks them.
    """
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if is_hidden(name):
                continue
            sub = here / name
            if sub.is_symlink():
                if not is_under(root, sub):
                    yield Reject(sub.relative_to(root).as_posix(), "outside root (linked folder)")
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not is_hidden(name):
                yield (here / name).relative_to(root).as_posix()


def available_layouts() -> list[str]:
    return list(LAYOUTS)


def get_source(
    layout: str,
    options: SourceOptions | None = None,
    classes: Mapping[str, object] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Source:
    """An adapter instance for ``layout``; a ValueError names the known layouts."""
    try:
        target = LAYOUTS[layout]
    except KeyError:
        known = ", ".join(LAYOUTS)
        raise ValueError(f"unknown layout '{layout}' (known layouts: {known})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(options, classes, aliases)
