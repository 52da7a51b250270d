"""Ekman-6 (Xu et al., 2016): one folder per Ekman basic emotion.

Folders are "anger", "disgust", "fear", "joy", "sadness", "surprise", the classes of the
``ekman6`` taxonomy in params.yaml (pair this layout with ``taxonomy: ekman6``); copies of the
set circulate with Ekman's own wording ("happiness") and with capitals, so both are accepted.

Copies that come with UCF101-style split lists (``splits/trainlistNN.txt`` …) get their
official train/test membership from them, as in the ``release`` layout this adapter extends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from emotions.corpus.sources import COMMON_SYNONYMS
from emotions.corpus.sources.release import ReleaseSource

CLASSES = ("anger", "disgust", "fear", "joy", "sadness", "surprise")


class Ekman6Source(ReleaseSource):
    name = "ekman6"
    dataset_classes = CLASSES
    synonyms: ClassVar[Mapping[str, str]] = {
        **COMMON_SYNONYMS,
        "happiness": "joy",
        "enjoyment": "joy",
        "surprize": "surprise",
    }
