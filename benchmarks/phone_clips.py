"""Phone-like test clips shared by the benchmarks: portrait h264 at 30 fps, 2 s GOP, 44.1 kHz AAC.

A block texture scrolling sideways gives the encoder real motion to code (a flat frame would
make decoding unrealistically cheap); the tone's pitch differs per clip so clips are distinct.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotions.media.encode import write_clip

FPS = 30
AUDIO_RATE = 44100


def write_phone_clip(
    path: Path,
    index: int,
    seconds: float,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    noisy_right: bool = False,
) -> None:
    """One clip at ``path``; ``noisy_right`` puts noise in the right channel (real stereo)."""
    width, height = size
    count = round(seconds * FPS)
    blocks = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    base = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))
    frames = np.stack([np.roll(base, 3 * t, axis=1) for t in range(count)])
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    tone = np.sin(2 * np.pi * (220 + 40 * index) * t)
    right = rng.standard_normal(t.size) * 0.3 if noisy_right else tone
    audio = 0.2 * np.stack([tone, right])
    write_clip(path, frames, FPS, audio, AUDIO_RATE, gop=2 * FPS)
