"""The cache's on-disk format: file names, dtypes and the completeness marker.

The preprocess stage writes it; the training dataset, the predictor and the monitor read it.
Every name lives here so a reader never imports the writer.

    frames.npy     uint8   (N, J·T, R, R, 3) (cache_format raw; J candidate views of T frames,
                   emotions.media.snippets; J = preprocess.positions)
    shards/*.bin   one JPEG per frame        (cache_format jpeg, emotions.cache.shards)
    fbank.npy      float16 (N, target_frames, n_mels)
    index.parquet  clip_id, row, label, has_audio, audio_frames, duration_s, audio_s, path
    stats.json     fbank mean/std (train split), shapes, config, counts, failures
    failures.csv   clip_id, path, reason (clips left out of the index)
    _COMPLETE      written last; readers refuse a directory without it

The fbank's rows are equal steps of the clip's ``duration_s`` (the frames' time base);
``audio_frames`` counts those holding sound and ``audio_s`` is the sound's length. The log-mel is
stored as float16: its values lie within about ±30 and float16 keeps them to ~0.01, two orders
below the std of the normalised features, while halving the largest part of the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emotions.errors import StageError
from emotions.media.snippets import SnippetLayout

FRAMES = "frames.npy"


FBANK = "fbank.npy"


INDEX = "index.parquet"


STATS = "stats.json"


FAILURES = "failures.csv"


COMPLETE = "_COMPLETE"


FBANK_DTYPE = np.float16


class CacheError(StageError):
    """A cache directory is missing, incomplete or inconsistent."""


def require_complete(cache_dir: str | Path) -> Path:
    """Return ``cache_dir`` if it holds a finished cache, else raise :class:`CacheError`."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise CacheError(f"{cache_dir}: no cache here (run `emotions preprocess` first)")
    if not (cache_dir / COMPLETE).is_file():
        raise CacheError(
            f"{cache_dir}: incomplete cache (no {COMPLETE} marker; a preprocess run was "
            "interrupted or is still writing) — rerun preprocess"
        )
    return cache_dir


SHARDS = "shards"


def cache_layout(stats: dict[str, Any]) -> SnippetLayout:
    """The snippet layout a cache was written with (stats.json's config and frame shape).

    A cache written before snippets existed holds one view of segment-centre frames."""
    config = stats.get("config") or {}
    cached = int(stats["shapes"]["frames"][1])
    length = int(config.get("snippet_frames", 1))
    positions = int(config.get("positions", 1))
    view = cached // positions
    if view * positions != cached or view % length:
        raise CacheError(
            f"cached frames per clip ({cached}) do not fit {positions} positions × "
            f"snippets of {length} frames (stats.json)"
        )
    return SnippetLayout(view // length, length, positions)
