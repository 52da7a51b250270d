"""Picture and sound cues of the synthetic corpus, designed so that only fusion names the class.

Every class owns one cell of a grid (visual group × audio group). The picture shows only the
visual group (colour, shape and motion of a moving object on a noisy background) and the sound
only the audio group (pitch, rhythm and timbre of a tone over noise). Classes that share a
visual group look alike and classes that share an audio group sound alike, so a video-only or
audio-only model is capped well below a model that combines both. Everything else about a clip
(position, speed, background, brightness, loudness, noise, duration) is drawn independently of
the class, so it carries no label information.

A conflict clip shows, for one contiguous time span, another group in one modality (a decoy):
locally the pair then names a different class, while the true cue holds in the other windows.
That is the case a local, per-window fusion is meant to handle.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Modality = Literal["visual", "audio"]
Cell = tuple[int, int]

SHAPES = ("disc", "square", "diamond")
MOTIONS = ("bounce", "orbit")
# Tone band: low enough to sit well inside a 16 kHz log-mel, wide enough for clearly separate groups.
LOW_HZ, HIGH_HZ = 300.0, 2400.0
PULSE_HZ = 4.0


@dataclass(frozen=True)
class CueDesign:
    """Which (visual group, audio group) cells each class owns."""

    classes: tuple[str, ...]
    n_visual: int
    n_audio: int
    cells: Mapping[str, tuple[Cell, ...]]

    def class_of(self, cell: Cell) -> str | None:
        """The class owning a cell, or None for an unused cell of the grid."""
        for name, owned in self.cells.items():
            if cell in owned:
                return name
        return None

    def groups(self, modality: Modality) -> dict[int, list[str]]:
        """Group index → classes showing that group in ``modality``."""
        axis = 0 if modality == "visual" else 1
        out: dict[int, list[str]] = {}
        for name in self.classes:
            for cell in self.cells[name]:
                members = out.setdefault(cell[axis], [])
                if name not in members:
                    members.append(name)
        return dict(sorted(out.items()))

    def single_modality_cap(self, modality: Modality) -> float:
        """Best accuracy reachable from one modality's group alone, for balanced classes.

        Each class's clips spread evenly over its cells; knowing only the group, the best guess
        is the class with the most mass in that group.
        """
        axis = 0 if modality == "visual" else 1
        mass: dict[int, dict[str, float]] = {}
        for name in self.classes:
            owned = self.cells[name]
            for cell in owned:
                share = mass.setdefault(cell[axis], {})
                share[name] = share.get(name, 0.0) + 1.0 / (len(self.classes) * len(owned))
        return sum(max(share.values()) for share in mass.values())

    def to_json(self) -> dict:
        return {
            "n_visual": self.n_visual,
            "n_audio": self.n_audio,
            "cells": {name: [list(cell) for cell in self.cells[name]] for name in self.classes},
            "visual_groups": {str(k): v for k, v in self.groups("visual").items()},
            "audio_groups": {str(k): v for k, v in self.groups("audio").items()},
            "video_only_cap": round(self.single_modality_cap("visual"), 4),
            "audio_only_cap": round(self.single_modality_cap("audio"), 4),
        }


def design_for(classes: Sequence[str]) -> CueDesign:
    """Lay ``classes`` out on a near-square grid so neither axis alone identifies a class.

    With K classes the grid has ceil(sqrt K) visual groups and ceil(K / that) audio groups
    (6 classes: 3 × 2, so video alone reaches at most 50 % and audio alone 33 %). Two classes
    cannot be split that way, so they use an XOR layout: each owns two diagonal cells and
    either modality alone is at chance.
    """
    names = tuple(classes)
    if len(names) < 2:
        raise ValueError(f"need at least 2 classes, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names repeat: {list(names)}")
    if len(names) == 2:
        cells = {names[0]: ((0, 0), (1, 1)), names[1]: ((0, 1), (1, 0))}
        return CueDesign(names, 2, 2, cells)
    n_visual = math.ceil(math.sqrt(len(names)))
    n_audio = math.ceil(len(names) / n_visual)
    cells = {name: ((i % n_visual, i // n_visual),) for i, name in enumerate(names)}
    return CueDesign(names, n_visual, n_audio, cells)


@dataclass(frozen=True)
class VisualCue:
    hue: float  # 0..1
    shape: str
    motion: str


@dataclass(frozen=True)
class AudioCue:
    freq_hz: float
    pulse_hz: float  # 0 = steady tone
    harmonics: int


def visual_cue(group: int, n_groups: int) -> VisualCue:
    """Evenly spaced hues, plus shape and motion as redundant cues of the same group."""
    return VisualCue(
        hue=group / n_groups, shape=SHAPES[group % len(SHAPES)], motion=MOTIONS[group % 2]
    )


def audio_cue(group: int, n_groups: int, sample_rate: int) -> AudioCue:
    """Log-spaced pitches; alternate groups are pulsed and carry a different timbre."""
    high = min(HIGH_HZ, 0.3 * sample_rate)
    freqs = np.geomspace(LOW_HZ, high, n_groups) if n_groups > 1 else np.array([LOW_HZ])
    return AudioCue(
        freq_hz=float(freqs[group]),
        pulse_hz=PULSE_HZ if group % 2 else 0.0,
        harmonics=1 + group % 3,
    )


@dataclass(frozen=True)
class Conflict:
    """One modality shows ``decoy_group`` (another class's cue) from start_s to end_s."""

    modality: Modality
    decoy_class: str
    decoy_group: int
    start_s: float
    end_s: float


def group_schedule(
    group: int, conflict: Conflict | None, modality: Modality, times: np.ndarray
) -> np.ndarray:
    """The group a modality shows at each time point."""
    out = np.full(times.shape, group, dtype=np.int64)
    if conflict is not None and conflict.modality == modality:
        out[(times >= conflict.start_s) & (times < conflict.end_s)] = conflict.decoy_group
    return out


def n_frames_for(duration_s: float, fps: int) -> int:
    return max(2, round(duration_s * fps))


def make_clip(
    class_name: str,
    rng: np.random.Generator,
    *,
    design: CueDesign,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    sample_rate: int = 16000,
    cell: Cell | None = None,
    conflict: Conflict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one clip: frames (T, H, W, 3) uint8 and mono audio (1, N) float32.

    ``cell`` picks one of the class's cells (drawn from ``rng`` when omitted). Audio length
    matches the frames exactly, so the file's two streams end together. Memory is the whole
    frame array: a 15 s 720×1280 30 fps clip is about 1.2 GB.
    """
    owned = design.cells[class_name]
    if cell is None:
        cell = owned[int(rng.integers(len(owned)))]
    elif cell not in owned:
        raise ValueError(f"cell {cell} does not belong to class '{class_name}' ({owned})")
    n_frames = n_frames_for(duration_s, fps)
    frame_times = np.arange(n_frames) / fps
    visual = group_schedule(cell[0], conflict, "visual", frame_times)
    frames = render_frames(visual, design.n_visual, rng, width=width, height=height, fps=fps)
    n_samples = round(n_frames * sample_rate / fps)
    sample_times = np.arange(n_samples) / sample_rate
    audio_groups = group_schedule(cell[1], conflict, "audio", sample_times)
    audio = render_audio(audio_groups, design.n_audio, rng, sample_rate=sample_rate)
    return frames, audio[None, :]


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect a straight path between two walls (a bouncing ball)."""
    span = max(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _trajectory(
    motion: str,
    rng: np.random.Generator,
    times: np.ndarray,
    side: float,
    centre: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Object centre per frame, kept inside the central square that a centre crop keeps."""
    half = 0.28 * side
    cx, cy = centre
    if motion == "bounce":
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.25, 0.7) * side
        x0, y0 = rng.uniform(-half, half, size=2)
        xs = _fold(x0 + speed * np.cos(angle) * times, -half, half)
        ys = _fold(y0 + speed * np.sin(angle) * times, -half, half)
    else:
        radius = rng.uniform(0.1, 0.22) * side
        omega = rng.uniform(1.5, 3.5) * rng.choice([-1.0, 1.0])
        phase = rng.uniform(0, 2 * np.pi)
        ox, oy = rng.uniform(-half + radius, half - radius, size=2) if half > radius else (0, 0)
        xs = ox + radius * np.cos(omega * times + phase)
        ys = oy + radius * np.sin(omega * times + phase)
    return cx + xs, cy + ys


def _shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance-like value: negative inside the shape, about 1 per pixel at the edge."""
    if shape == "disc":
        return np.sqrt(dx * dx + dy * dy) - radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * radius
    return (np.abs(dx) + np.abs(dy)) / math.sqrt(2) - 0.85 * radius


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static, nearly grey, blotchy texture: it compresses well and competes with no cue."""
    base = rng.uniform(50, 170)
    block = max(2, min(height, width) // 12)
    coarse = rng.normal(0, rng.uniform(6, 24), (height // block + 1, width // block + 1))
    coarse = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
    fine = rng.normal(0, rng.uniform(2, 7), (height, width))
    luma = (base + coarse + fine).astype(np.float32)
    tint = 1.0 + rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    return luma[:, :, None] * tint[None, None, :]


def render_frames(
    groups: np.ndarray,
    n_groups: int,
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    fps: int,
) -> np.ndarray:
    """Draw the object of ``groups[t]`` on frame t over a per-clip random background."""
    times = np.arange(len(groups)) / fps
    side = float(min(width, height))
    centre = (width / 2.0, height / 2.0)
    background = _background(rng, height, width)
    gain = rng.uniform(0.75, 1.15)
    drift_hz, drift_phase = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    gains = gain * (1.0 + 0.04 * np.sin(2 * np.pi * drift_hz * times + drift_phase))
    radius = 0.2 * side * rng.uniform(0.85, 1.15)
    looks: dict[int, tuple[VisualCue, np.ndarray, np.ndarray, np.ndarray]] = {}
    for group in sorted(set(groups.tolist())):
        cue = visual_cue(group, n_groups)
        hue = (cue.hue + rng.uniform(-0.025, 0.025)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 0.95), rng.uniform(0.75, 1.0))
        colour = np.array(rgb, dtype=np.float32) * 255.0
        xs, ys = _trajectory(cue.motion, rng, times, side, centre)
        looks[group] = (cue, colour, xs, ys)
    frames = np.empty((len(groups), height, width, 3), dtype=np.uint8)
    pad = math.ceil(radius * 1.3) + 2
    for t, group in enumerate(groups.tolist()):
        cue, colour, xs, ys = looks[group]
        image = background.copy()
        cx, cy = xs[t], ys[t]
        x0, x1 = max(0, int(cx) - pad), min(width, int(cx) + pad + 1)
        y0, y1 = max(0, int(cy) - pad), min(height, int(cy) + pad + 1)
        if x1 > x0 and y1 > y0:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            alpha = np.clip(0.5 - _shape_distance(cue.shape, xx - cx, yy - cy, radius), 0, 1)
            patch = image[y0:y1, x0:x1]
            image[y0:y1, x0:x1] = patch + alpha[:, :, None] * (colour - patch)
        np.multiply(image, gains[t], out=image)
        frames[t] = np.clip(image, 0, 255)
    return frames


def _tone(
    cue: AudioCue, rng: np.random.Generator, times: np.ndarray, sample_rate: int
) -> np.ndarray:
    freq = cue.freq_hz * rng.uniform(0.96, 1.04)
    signal = np.zeros_like(times)
    weight_sum = 0.0
    for k in range(1, cue.harmonics + 1):
        if k * freq >= 0.45 * sample_rate:
            break
        weight = 0.6 ** (k - 1)
        signal += weight * np.sin(2 * np.pi * k * freq * times + rng.uniform(0, 2 * np.pi))
        weight_sum += weight
    signal /= max(weight_sum, 1e-6)
    if cue.pulse_hz > 0:
        rate = cue.pulse_hz * rng.uniform(0.85, 1.15)
        # A soft square wave: on/off with ~10 ms ramps, no clicks.
        gate = np.sin(2 * np.pi * rate * times + rng.uniform(0, 2 * np.pi))
        envelope = np.clip(0.5 + 3.0 * gate, 0.0, 1.0)
    else:
        envelope = 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * times)
    return signal * envelope


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    return np.convolve(x, np.ones(width) / width, mode="same")


def render_audio(
    groups: np.ndarray, n_groups: int, rng: np.random.Generator, *, sample_rate: int
) -> np.ndarray:
    """The tone of ``groups[i]`` at sample i, cross-faded at switches, over low-passed noise."""
    times = np.arange(len(groups)) / sample_rate
    mix = np.zeros(len(groups))
    present = sorted(set(groups.tolist())) if len(groups) else []
    fade = max(1, sample_rate // 100)
    for group in present:
        tone = _tone(audio_cue(group, n_groups, sample_rate), rng, times, sample_rate)
        mask = (groups == group).astype(np.float64)
        if len(present) > 1:
            mask = _smooth(mask, fade)
        mix += mask * tone
    loudness = rng.uniform(0.12, 0.4)
    noise = _smooth(rng.standard_normal(len(groups)), 4)
    noise *= rng.uniform(0.003, 0.02) / max(float(np.std(noise)), 1e-9)
    edge = np.minimum(1.0, np.minimum(times, times[::-1]) / 0.02) if len(times) else times
    audio = loudness * mix * edge + noise
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
