"""VideoEmotion-8 (Jiang et al., AAAI 2014): one folder per Plutchik class.

The published tree names its folders with capitals ("Anger", "Anticipation", "Disgust", "Fear",
"Joy", "Sadness", "Surprise", "Trust"), and so does the ``videoemotion8`` taxonomy in
params.yaml (the one to pair with this layout: ``taxonomy: videoemotion8``). Labels are matched
case- and separator-insensitively, and the common words for the same feelings map onto
Plutchik's names.

Copies that come with UCF101-style split lists (``splits/trainlistNN.txt`` …) get their
official train/test membership from them, as in the ``release`` layout this adapter extends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from emotions.corpus.sources import COMMON_SYNONYMS
from emotions.corpus.sources.release import ReleaseSource

CLASSES = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust")


class VideoEmotion8Source(ReleaseSource):
    name = "videoemotion8"
    dataset_classes = CLASSES
    synonyms: ClassVar[Mapping[str, str]] = {
        **COMMON_SYNONYMS,
        # Plutchik's milder and stronger intensities of the same primary emotion.
        "interest": "anticipation",
        "vigilance": "anticipation",
        "expectation": "anticipation",
        "acceptance": "trust",
        "admiration": "trust",
        "serenity": "joy",
        "ecstasy": "joy",
        "annoyance": "anger",
        "rage": "anger",
        "apprehension": "fear",
        "terror": "fear",
        "pensiveness": "sadness",
        "grief": "sadness",
        "distraction": "surprise",
        "amazement": "surprise",
        "boredom": "disgust",
        "loathing": "disgust",
    }
