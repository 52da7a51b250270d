"""decode_clip on real files written with PyAV: sampling, audio, damage, rotation, keyframes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from emotions.config import AudioFeatures, PreprocessConfig
from emotions.media.decode import DecodeError, decode_clip, segment_indices
from emotions.media.encode import write_clip

FPS = 10
N_FRAMES = 30  # 3 s
SR = 16000
CONFIG = PreprocessConfig(
    num_frames=4, resize=32, crop=24, audio=AudioFeatures(n_mels=32, target_frames=400)
)


def ramp_frames(n: int = N_FRAMES, height: int = 64, width: int = 48) -> np.ndarray:
    """Frame i is uniformly grey at 8*i (so a decoded frame says which one it was), with a
    white block top-left to show orientation."""
    frames = np.repeat((np.arange(n, dtype=np.uint8) * 8)[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (n, height, width, 3)))
    frames[:, :12, :12] = 255
    return frames


def tone(seconds: float, channels: int = 1, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat(0.3 * np.sin(2 * np.pi * 440 * t)[None], channels, axis=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("clips")
    frames = ramp_frames()
    paths = {
        "tone": write_clip(
            base / "tone.mp4", frames, FPS, tone(3.0, channels=2, rate=44100), 44100
        ),
        "silent": write_clip(base / "silent.mp4", frames, FPS, np.zeros((1, 3 * SR)), SR),
        "mute": write_clip(base / "mute.mp4", frames, FPS),
        "landscape": write_clip(
            base / "wide.mp4", ramp_frames(height=48, width=96), FPS, tone(3.0)
        ),
    }
    paths["rotated"] = _with_rotation(paths["tone"], base / "rotated.mp4", degrees=90)
    paths["corrupt_audio"] = _corrupt_audio_packet(paths["tone"], base / "corrupt.mp4")
    return paths


def _with_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """Remux the video stream with a display matrix, as phones write portrait clips."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        stream.set_display_rotation(degrees)
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def _corrupt_audio_packet(src: Path, dst: Path) -> Path:
    """Overwrite the bytes of one AAC packet in the middle of the file with noise."""
    with av.open(str(src)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.audio[0]) if p.size]
    pos, size = packets[len(packets) // 2]
    data = bytearray(src.read_bytes())
    data[pos : pos + size] = np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_exact_sampling_takes_segment_middles(clips):
    clip = decode_clip(clips["tone"], CONFIG)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.fbank.shape == (400, 32) and clip.fbank.dtype == np.float32
    expected = segment_indices(N_FRAMES, 4)
    assert expected.tolist() == [3, 11, 18, 26]
    # The bottom-right of each frame is the grey level 8*i of the source frame i.
    grey = clip.frames[:, -8:, -8:].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(grey, expected * 8, atol=4)
    np.testing.assert_allclose(clip.frame_times_s, expected / FPS, atol=1e-3)
    assert clip.duration_s == pytest.approx(3.0, abs=0.1)
    assert np.all((clip.frame_times_s >= 0) & (clip.frame_times_s <= clip.duration_s))


def test_decode_is_deterministic(clips):
    first, second = decode_clip(clips["tone"], CONFIG), decode_clip(clips["tone"], CONFIG)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.fbank, second.fbank)
    np.testing.assert_array_equal(first.frame_times_s, second.frame_times_s)


def test_audio_becomes_log_mel_on_the_clips_time_base(clips):
    clip = decode_clip(clips["tone"], CONFIG)
    # 3 s at a 10 ms shift: ~298 frames, stretched onto the 400 rows that span the clip's 3 s
    # (the frames' time base), so no row is padding when sound and picture end together.
    assert clip.has_audio and clip.audio_frames == 400
    assert clip.audio_s == pytest.approx(3.0, abs=0.05)
    valid = clip.fbank[: clip.audio_frames]
    assert np.isfinite(valid).all() and valid.std() > 1.0
    # A 440 Hz tone puts its energy in one low mel band, the same in every frame.
    peak = valid[10:-10].argmax(axis=1)
    assert len(set(peak.tolist())) == 1 and peak[0] < 16


def test_long_audio_is_pooled_to_target_frames(clips):
    short = PreprocessConfig(
        num_frames=4, resize=32, crop=24, audio=AudioFeatures(target_frames=100)
    )
    clip = decode_clip(clips["tone"], short)
    assert clip.fbank.shape == (100, 128) and clip.audio_frames == 100
    assert np.all(clip.fbank != 0)


def test_silent_track_is_audio_and_missing_track_is_not(clips):
    silent = decode_clip(clips["silent"], CONFIG)
    assert silent.has_audio and silent.audio_frames > 250
    assert silent.fbank[: silent.audio_frames].max() < -10  # log of the floor energy
    mute = decode_clip(clips["mute"], CONFIG)
    assert not mute.has_audio and mute.audio_frames == 0
    assert not mute.fbank.any() and mute.fbank.shape == (400, 32)
    assert mute.frames.shape == (4, 32, 32, 3)


def test_corrupt_audio_packet_is_skipped_not_fatal(clips):
    clean = decode_clip(clips["tone"], CONFIG)
    damaged = decode_clip(clips["corrupt_audio"], CONFIG)
    assert damaged.skipped_audio_packets >= 1
    assert damaged.has_audio and damaged.audio_frames >= clean.audio_frames - 10
    np.testing.assert_array_equal(damaged.frames, clean.frames)


def test_landscape_is_resized_on_its_short_side_and_centre_cropped(clips):
    clip = decode_clip(clips["landscape"], CONFIG)
    assert clip.frames.shape == (4, 32, 32, 3)
    # The white block sits in the left quarter of a 96-wide frame: it is cropped away.
    assert clip.frames[:, :6, :6].mean() < 250


def test_rotation_metadata_is_applied(clips):
    upright = decode_clip(clips["tone"], CONFIG)
    for sampling in ("exact", "keyframe"):
        config = CONFIG.model_copy(update={"frame_sampling": sampling})
        turned = decode_clip(clips["rotated"], config)
        reference = decode_clip(clips["tone"], config).frames
        # set_display_rotation(90) means "show it turned 90° counter-clockwise".
        diff = np.abs(np.rot90(reference, 1, axes=(1, 2)).astype(int) - turned.frames)
        assert diff.mean() < 2, sampling
    assert not np.array_equal(upright.frames, turned.frames)


def test_keyframe_sampling_snaps_to_keyframes(clips):
    config = CONFIG.model_copy(update={"frame_sampling": "keyframe"})
    clip = decode_clip(clips["tone"], config)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.has_audio
    # write_clip puts a keyframe every 2*fps frames: at 0 s and 2 s in a 3 s clip. Segment
    # centres 0.375, 1.125, 1.875, 2.625 s snap to the nearest of them.
    np.testing.assert_allclose(clip.frame_times_s, [0.0, 2.0, 2.0, 2.0], atol=1e-3)
    grey = clip.frames[:, -8:, -8:].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(grey, clip.frame_times_s * FPS * 8, atol=4)


def test_default_resize_of_72_works_around_decord_width_bug(clips):
    """decord 0.6.0 cannot scale to a width of 72 (the default resize); the fallback must."""
    config = PreprocessConfig(num_frames=3, audio=AudioFeatures(target_frames=50))
    clip = decode_clip(clips["tone"], config)
    assert clip.frames.shape == (3, 72, 72, 3)
    grey = clip.frames[:, -8:, -8:].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(grey, segment_indices(N_FRAMES, 3) * 8, atol=4)


def test_undecodable_input_raises_decode_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(DecodeError, match=r"junk\.mp4"):
        decode_clip(junk, CONFIG)
    with pytest.raises(DecodeError, match="no such file"):
        decode_clip(tmp_path / "absent.mp4", CONFIG)
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=SR)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = SR
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(DecodeError, match="no video stream"):
        decode_clip(audio_only, CONFIG)


def test_segment_indices_repeat_frames_of_short_clips():
    assert segment_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert segment_indices(100, 4).tolist() == [12, 37, 62, 87]


def test_real_world_tree_decodes_or_fails_clearly(tmp_path):
    """Every clip ingest keeps (hevc, vp9/opus, mpeg4/ac3 5.1, 120 fps, rotation, non-ASCII
    names, a broken audio packet) decodes in both modes; files that are not videos raise."""
    from realworld import build_realworld_tree

    tree = build_realworld_tree(tmp_path)
    for sampling in ("exact", "keyframe"):
        config = CONFIG.model_copy(update={"frame_sampling": sampling})
        for rel, kept in tree.kept.items():
            clip = decode_clip(tree.root / rel, config)
            assert clip.frames.shape == (4, 32, 32, 3), (sampling, rel)
            assert clip.has_audio == kept.has_audio, (sampling, rel)
            assert clip.duration_s == pytest.approx(kept.duration_s, abs=0.1), (sampling, rel)
            assert (clip.audio_frames > 0) == kept.has_audio
        unreadable = ["empty.mp4", "random_bytes.mp4", "notes.mp4", "readme.txt"]
        for rel, reason in tree.quarantined.items():
            if Path(rel).name in unreadable or reason in ("undecodable", "no video stream"):
                with pytest.raises(DecodeError):
                    decode_clip(tree.root / rel, config)
    if "Tension/corrupt_audio_packet.mp4" in tree.kept:
        clip = decode_clip(tree.root / "Tension/corrupt_audio_packet.mp4", CONFIG)
        assert clip.skipped_audio_packets >= 1
