"""One time base for picture and sound (issue 12, part 1).

Frames are segment centres over the whole clip; the log-mel must cover the same seconds, so a
timeline window's picture and sound come from the same part of the clip whatever its length.
Clips are real files (tiny: 32×32 px, 5 fps) written with the project's encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emotions.config import PreprocessConfig
from emotions.media.decode import decode_clip
from emotions.media.encode import write_clip
from emotions.models.avcanet import audio_token_valid
from emotions.serve.predictor import Predictor, window_sources

RATE = 16000
FPS = 5
SIZE = 32
CONFIG = PreprocessConfig(num_frames=8, resize=32, crop=32)


def clip(path: Path, seconds: float, *, loud_from: float = 0.0, audio_s: float | None = None):
    """A clip of ``seconds`` whose tone is silent before ``loud_from`` s and whose sound lasts
    ``audio_s`` s (default: as long as the picture); ``audio_s=0`` writes no audio stream."""
    count = round(seconds * FPS)
    frames = np.full((count, SIZE, SIZE, 3), 90, dtype=np.uint8)
    frames[:, :, :, 0] = np.linspace(0, 255, count, dtype=np.uint8)[:, None, None]
    audio = None
    length = seconds if audio_s is None else audio_s
    if length > 0:
        t = np.arange(round(length * RATE), dtype=np.float32) / RATE
        audio = (0.4 * np.sin(2 * np.pi * 440.0 * t) * (t >= loud_from))[None].astype(np.float32)
    return write_clip(path, frames, FPS, audio, RATE)


@pytest.mark.parametrize("seconds", [3.0, 15.0, 60.0])
def test_sound_rows_come_from_the_frames_seconds(tmp_path, seconds):
    """The tone starts at 3/4 of the clip: the fbank turns loud at 3/4 of its rows, where the
    frames' last quarter is, not at 3/4 of the first 4 s."""
    decoded = decode_clip(clip(tmp_path / "c.mp4", seconds, loud_from=0.75 * seconds), CONFIG)
    rows = CONFIG.audio.target_frames
    assert decoded.has_audio and decoded.audio_frames == rows
    assert abs(decoded.audio_s - seconds) < 0.1
    energy = decoded.fbank.mean(axis=1)
    onset = int(np.argmax(energy > (energy.min() + energy.max()) / 2))
    step = rows / (seconds * 100)  # rows per 10 ms fbank frame (pooling or stretching)
    assert abs(onset - 0.75 * rows) <= max(2.0, 3 * step), onset
    frame_fraction = decoded.frame_times_s / seconds
    assert frame_fraction.min() < 0.15 and frame_fraction.max() > 0.85  # frames span it too


@pytest.mark.parametrize("seconds", [3.0, 15.0, 60.0])
def test_each_windows_sound_is_its_picture(tmp_path, seconds):
    decoded = decode_clip(clip(tmp_path / "c.mp4", seconds), CONFIG)
    sources = window_sources(decoded, 4)
    assert sources[0][0][0] == 0.0
    assert abs(sources[-1][0][1] - seconds) < 0.25
    tolerance = max(1 / FPS, seconds / CONFIG.audio.target_frames, 0.01) + 0.05
    for video_s, audio_s in sources:
        assert audio_s is not None
        assert np.allclose(video_s, audio_s, atol=tolerance), (video_s, audio_s)


def test_sound_shorter_than_picture_is_padding_and_masked(tmp_path):
    decoded = decode_clip(clip(tmp_path / "c.mp4", 8.0, audio_s=4.0), CONFIG)
    rows = CONFIG.audio.target_frames
    assert abs(decoded.audio_frames - rows / 2) <= 3
    assert not decoded.fbank[decoded.audio_frames :].any()
    sources = window_sources(decoded, 4)
    # The sound ends at 4 s (AAC adds a few ms): the third window keeps only that sliver.
    assert [a for _, a in sources[:2]] == [[0.0, 2.0], [2.0, 4.0]]
    assert sources[2][1] is None or sources[2][1][1] - 4.0 < 0.1
    assert sources[3][1] is None
    # Tokens lying wholly past the sound become the missing token; the others are kept.
    centres = (torch.arange(10, dtype=torch.float32) + 0.5) / 10
    sound = torch.tensor([decoded.audio_frames, rows // 2, rows])
    valid = audio_token_valid(centres, sound, rows)
    assert valid[0].tolist() == [True] * 6 + [False] * 4  # token 5 holds the 4.0-4.04 s sliver
    assert valid[1].tolist() == [True] * 5 + [False] * 5
    assert valid[2].all()


def test_a_clip_without_audio_has_no_sound_seconds(tmp_path):
    decoded = decode_clip(clip(tmp_path / "c.mp4", 6.0, audio_s=0), CONFIG)
    assert not decoded.has_audio and decoded.audio_frames == 0
    sources = window_sources(decoded, 3)
    assert [a for _, a in sources] == [None] * 3
    assert abs(sources[-1][0][1] - 6.0) < 0.25


@pytest.mark.slow
def test_predict_timeline_names_both_sources(model_dir: Path, tmp_path):
    """Through the trained model: 3, 15, 60 s and a silent-stream-less clip all answer, every
    window with video_s == audio_s (or audio_s None without audio)."""
    predictor = Predictor(model_dir)
    paths = [clip(tmp_path / f"{s:g}.mp4", s) for s in (3.0, 15.0, 60.0)]
    paths.append(clip(tmp_path / "mute.mp4", 5.0, audio_s=0))
    answers = list(predictor.predict_files(paths))
    for path, seconds, answer in zip(paths, (3.0, 15.0, 60.0, 5.0), answers, strict=True):
        assert "error" not in answer, answer
        timeline = answer["timeline"]
        assert timeline[0]["video_s"][0] == 0.0
        assert abs(timeline[-1]["video_s"][1] - seconds) < 0.25, path
        for window in timeline:
            assert window["video_s"] == [window["start_s"], window["end_s"]]
            if path.name == "mute.mp4":
                assert window["audio_s"] is None
            else:
                assert np.allclose(window["audio_s"], window["video_s"], atol=0.25)
