"""TSN-style snippet sampling: S segments × L consecutive frames, J cached positions each.

The authors of AV-CANet (docs/DESIGN.md, "How the authors train AV-CANet") cut a clip into 16
segments and take a run of 8 consecutive frames in each: a random run per segment while
training (temporal jitter), the centre run for evaluation. That is TSN's sampling (Wang et al.,
ECCV 2016). A decode-once cache cannot draw a fresh random position each epoch, so it keeps
``positions`` (J) candidate runs per segment, evenly spread over the segment, and training
picks one of them per segment and per epoch. J is odd so that the middle candidate sits
exactly at the segment centre: the evaluation view, the same frames that a J = 1 cache (and
so the service, which decodes that view alone) holds.

A view is S runs of L frames in time order, T = S·L frames: what the model takes. The cache
stores J views one after another, (J·T, R, R, 3), view-major; ``positions = 1`` and
``snippet_frames = 1`` are plain segment sampling (the middle frame of T equal segments).

Runs stay inside the clip: a run that would cross an end is shifted in; a clip with fewer
frames than L loops (the authors loop-pad short clips). Where a segment holds at least L
frames, every frame of snippet k lies in the seconds [k, k + 1) × duration / S that the audio
of window k covers (:func:`emotions.serve.predictor.window_sources`); in a shorter clip the runs of
neighbouring segments overlap, centred as near their segment as the clip allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SnippetLayout:
    """How a clip's frames are sampled and laid out in the cache."""

    segments: int  # S: equal time segments of the clip
    length: int  # L: consecutive frames per segment (one snippet)
    positions: int = 1  # J: candidate runs per segment held by the cache (odd)

    def __post_init__(self) -> None:
        if self.segments < 1 or self.length < 1 or self.positions < 1:
            raise ValueError(f"snippet layout needs positive sizes, got {self}")
        if self.positions % 2 == 0:
            raise ValueError(
                f"positions must be odd (the middle one is the evaluation's centre view), "
                f"got {self.positions}"
            )

    @classmethod
    def of(cls, config) -> SnippetLayout:
        """The layout a ``PreprocessConfig`` describes (num_frames = S·L)."""
        length = config.snippet_frames
        return cls(config.num_frames // length, length, config.positions)

    @property
    def view_frames(self) -> int:
        """T = S·L: frames of one view, what the model takes."""
        return self.segments * self.length

    @property
    def cached_frames(self) -> int:
        """J·T: frames the cache holds per clip."""
        return self.positions * self.view_frames

    @property
    def centre(self) -> int:
        """The candidate at the segment centre (the evaluation view)."""
        return self.positions // 2

    def indices(self, n_frames: int) -> np.ndarray:
        """Frame indices (J, S, L) into a clip of ``n_frames`` frames.

        Candidate j of segment k is the run of L frames centred at (k + (j + 0.5) / J) ×
        n_frames / S; with L = J = 1 this is the middle frame of each segment.
        """
        if n_frames < 1:
            raise ValueError("a clip needs at least one frame")
        j = np.arange(self.positions)[:, None]
        k = np.arange(self.segments)[None, :]
        centres = (k + (j + 0.5) / self.positions) * n_frames / self.segments  # J S
        if n_frames >= self.length:
            starts = np.floor(centres - (self.length - 1) / 2).astype(np.int64)
            starts = np.clip(starts, 0, n_frames - self.length)
            return starts[..., None] + np.arange(self.length)
        looped = np.arange(self.length) % n_frames  # shorter than one run: loop the clip
        return np.broadcast_to(looped, (self.positions, self.segments, self.length)).copy()

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A training choice: one candidate per segment (S,), uniform."""
        return rng.integers(0, self.positions, size=self.segments)

    def fixed(self, position: int) -> np.ndarray:
        """The same candidate in every segment (S,): the view of an evaluation pass."""
        if not 0 <= position < self.positions:
            raise ValueError(f"position {position} outside 0..{self.positions - 1}")
        return np.full(self.segments, position, dtype=np.int64)

    def view_positions(self, views: int) -> list[int]:
        """``views`` evenly shifted candidates for test-time averaging; 1 view is the centre.

        Views split the J candidates into ``views`` equal shares and take each share's middle
        (for views = J, every candidate)."""
        if not 1 <= views <= self.positions:
            raise ValueError(
                f"{views} evaluation views need as many cached positions per segment "
                f"(preprocess.positions is {self.positions})"
            )
        return [int((v + 0.5) * self.positions / views) for v in range(views)]

    def frame_rows(self, choice: np.ndarray) -> np.ndarray:
        """Rows (T,) of the cached (J·T, ...) frames that make the view ``choice`` (S,)."""
        choice = np.asarray(choice, dtype=np.int64)
        base = choice * self.view_frames + np.arange(self.segments) * self.length  # S
        return (base[:, None] + np.arange(self.length)).reshape(-1)

    def select(self, frames, choice: np.ndarray):
        """The view ``choice`` of one clip's cached frames (J·T first) → (T, ...).

        Frames already holding one view (T rows: a J = 1 cache, or a clip decoded for the
        centre view alone) are returned as they are."""
        if len(frames) == self.view_frames:
            return frames
        if len(frames) != self.cached_frames:
            raise ValueError(
                f"{len(frames)} frames fit neither one view ({self.view_frames}) nor the "
                f"cache's {self.positions} positions ({self.cached_frames})"
            )
        rows = self.frame_rows(choice)
        if isinstance(frames, np.ndarray):
            return frames[rows]  # a memmap row: reads only these frames
        import torch

        return frames[torch.from_numpy(rows)]
