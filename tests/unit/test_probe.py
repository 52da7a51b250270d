"""The probe on real files: what it reads from good clips, and the reason it gives for bad ones."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from realworld import (
    CODEC_CASES,
    corrupt_one_audio_packet,
    encoder_available,
    frames,
    make_audio_only,
    make_clip,
    make_rotated_clip,
    truncate_half,
    zero_video_packets,
)

from emotions.config import IngestConfig
from emotions.media.clipcheck import REASON_PREFIXES as CLIP_REASONS
from emotions.media.clipcheck import ClipBounds, Refusal
from emotions.media.encode import write_clip
from emotions.media.probe import (
    REASON_PREFIXES,
    ClipInfo,
    ProbeTask,
    difference_hash,
    hamming,
    probe_file,
    screen_file,
)

ENCODERS = ("libx264", "libx265", "mpeg4", "libvpx-vp9", "aac", "libmp3lame", "ac3", "libopus")
MISSING = [name for name in ENCODERS if not encoder_available(name)]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"PyAV lacks encoders: {MISSING}")


def probe(path: Path, max_file_mb: float = 512.0):
    return probe_file(ProbeTask(str(path), max_file_mb))


def info_of(path: Path) -> ClipInfo:
    result = probe(path)
    assert result.reason is None, result.reason
    assert result.info is not None
    return result.info


def reason_of(path: Path, max_file_mb: float = 512.0) -> str:
    result = probe(path, max_file_mb)
    assert result.info is None, f"{path.name} unexpectedly passed"
    assert result.reason and result.reason.startswith(REASON_PREFIXES), result.reason
    return result.reason


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    made = {
        "h264": make_clip(d / "h264_aac.mp4", seed=1),
        "hevc": make_clip(d / "hevc_mp3.mkv", seed=2, **CODEC_CASES["hevc_mp3_mono"]),
        "mpeg4": make_clip(d / "mpeg4_ac3.mp4", seed=3, **CODEC_CASES["mpeg4_ac3_51"]),
        "vp9": make_clip(d / "vp9_opus.webm", seed=4, **CODEC_CASES["vp9_opus"]),
        "hevc120": make_clip(
            d / "hevc_120.mp4", seed=5, fps=120, video_codec="libx265", audio_channels=1
        ),
        "silent": make_clip(d / "silent.mp4", seed=6, silent=True),
        "mute": make_clip(d / "mute.mp4", seed=7, audio_channels=None),
        "rotated": make_rotated_clip(d / "rotated.mp4", degrees=90, seed=8),
        "unicode": make_clip(d / "愤怒_fréude.mp4", seed=9, audio_channels=1),
        "long": make_clip(d / "long.mkv", seed=10, seconds=2.0),
    }
    made["bad_audio"] = make_clip(d / "bad_audio.mp4", seed=11, seconds=2.0)
    corrupt_one_audio_packet(made["bad_audio"])
    made["zeroed"] = zero_video_packets(make_clip(d / "zeroed.mp4", seed=12, audio_channels=None))
    made["cut_mp4"] = truncate_half(made["h264"], d / "cut.mp4")
    made["cut_mkv"] = truncate_half(made["long"], d / "cut.mkv")
    made["m4a"] = make_audio_only(d / "memo.m4a")
    made["empty"] = d / "empty.mp4"
    made["empty"].write_bytes(b"")
    made["random"] = d / "random.mp4"
    made["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 40_000).astype(np.uint8))
    made["text"] = d / "text.mp4"
    made["text"].write_text("not a video\n" * 100, encoding="utf-8")
    return made


def test_reads_every_field_of_a_phone_style_clip(clips):
    info = info_of(clips["h264"])
    data = clips["h264"].read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert info.duration_s == pytest.approx(1.0, abs=0.15)
    assert info.fps == pytest.approx(15.0)
    assert info.n_frames == 15
    assert (info.width, info.height, info.rotation) == (64, 64, 0)
    assert info.video_codec == "h264"
    assert info.has_audio and info.audio_codec == "aac"
    assert (info.audio_sample_rate, info.audio_channels) == (44100, 2)
    assert info.audio_bad_packets == 0
    assert len(info.visual_hash) == 16 and int(info.visual_hash, 16) >= 0


@pytest.mark.parametrize(
    ("name", "video", "audio", "rate", "channels", "fps", "n_frames", "duration"),
    [
        ("hevc", "hevc", "mp3", 24000, 1, 12.0, 18, 1.5),
        ("mpeg4", "mpeg4", "ac3", 48000, 6, 10.0, 12, 1.2),
        ("vp9", "vp9", "opus", 48000, 2, 15.0, 15, 1.0),
        ("hevc120", "hevc", "aac", 44100, 1, 120.0, 120, 1.0),
        ("unicode", "h264", "aac", 44100, 1, 15.0, 15, 1.0),
    ],
)
def test_codec_container_and_layout_matrix(
    clips, name, video, audio, rate, channels, fps, n_frames, duration
):
    info = info_of(clips[name])
    assert (info.video_codec, info.audio_codec) == (video, audio)
    assert (info.audio_sample_rate, info.audio_channels) == (rate, channels)
    assert info.fps == pytest.approx(fps)
    assert info.n_frames == n_frames
    assert info.duration_s == pytest.approx(duration, abs=0.15)
    assert info.has_audio


def test_audio_presence_silence_and_a_broken_packet(clips):
    silent = info_of(clips["silent"])
    assert silent.has_audio  # a silent track is still a track
    mute = info_of(clips["mute"])
    assert not mute.has_audio
    assert (mute.audio_sample_rate, mute.audio_channels, mute.audio_codec) == (None, None, None)
    bad = info_of(clips["bad_audio"])
    assert bad.has_audio
    assert bad.audio_bad_packets >= 1
    assert bad.duration_s == pytest.approx(2.0, abs=0.15)


def test_rotation_from_the_display_matrix(clips):
    assert info_of(clips["rotated"]).rotation == 90


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("empty", "empty file"),
        ("cut_mp4", "truncated"),
        ("cut_mkv", "truncated"),
        ("random", "not a video"),
        ("text", "not a video"),
        ("m4a", "no video stream"),
        ("zeroed", "undecodable"),
    ],
)
def test_broken_files_get_a_specific_reason(clips, name, prefix):
    assert reason_of(clips[name]).startswith(prefix)


def test_size_limit_and_unreadable_paths(clips, tmp_path):
    reason = reason_of(clips["h264"], max_file_mb=0.001)
    assert reason.startswith("too large (") and "MB > 0.001 MB limit" in reason
    assert reason_of(tmp_path).startswith("not a video: not a regular file")
    assert reason_of(tmp_path / "gone.mp4").startswith("unreadable")


def test_difference_hash_bits():
    ramp = np.tile(np.arange(90, dtype=np.float32), (40, 1))  # brighter to the right
    assert difference_hash(ramp) == "f" * 16
    assert difference_hash(ramp[:, ::-1]) == "0" * 16
    assert hamming("f" * 16, "0" * 16) == 64
    with pytest.raises(ValueError):
        difference_hash(np.zeros((4, 4)))


def test_visual_hash_survives_a_re_encode_but_tells_clips_apart(clips, tmp_path):
    same_frames = write_clip(
        tmp_path / "again.mkv", frames(1.0, 15, seed=1), 15, video_codec="mpeg4"
    )
    original = info_of(clips["h264"])
    reencoded = info_of(same_frames)
    assert reencoded.sha256 != original.sha256
    assert hamming(original.visual_hash, reencoded.visual_hash) <= 6
    others = [info_of(clips[name]).visual_hash for name in ("hevc", "mpeg4", "vp9", "silent")]
    assert min(hamming(original.visual_hash, h) for h in others) > 10


def test_probe_module_stays_light():
    # Workers import the probe by reference; pulling in torch or pandas would cost every worker.
    code = "import sys, emotions.media.probe; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_screen_and_ingest_probe_judge_alike(tree):
    """One judge (emotions.media.clipcheck): the service's header-and-packets screen refuses
    exactly the files ingest's probe refuses for not being a clip, with the same reason, and
    passes every clip ingest keeps, without decoding a picture."""
    bounds = ClipBounds.of(IngestConfig())
    judged = 0
    for rel in sorted(tree.kept) + sorted(tree.quarantined):
        path = tree.root / rel
        if not path.is_file() or path.is_symlink():
            continue
        probed = probe_file(ProbeTask(str(path), 512.0, bounds=bounds))
        screened = screen_file(path, bounds)
        if rel in tree.kept:
            assert probed.reason is None and screened is None, (rel, screened)
        elif probed.reason and probed.reason.startswith(CLIP_REASONS):
            assert screened is not None and screened.reason == probed.reason, rel
            judged += 1
    assert judged >= 14
    memo = screen_file(tree.root / "Fear/voice_memo.mp4", bounds)
    assert memo == Refusal("no video stream (streams: audio)", "not_video")
    assert screen_file(tree.root / "Tension/meme.mp4", bounds).kind == "not_video"
    assert screen_file(tree.root / "Relaxation/ten_hours.mkv", bounds).kind == "out_of_bounds"
    assert screen_file(tree.root / "Neutral/random_bytes.mp4", bounds).kind == "undecodable"


def test_clip_bounds_apply_only_when_given(tree):
    """Without bounds (a bare ProbeTask) only the image rule applies: a still image is never a
    clip, a 0.2 s clip is one."""
    assert reason_of(tree.root / "Excitation/screenshot.mp4") == "still image (png codec, 1 frame)"
    assert probe(tree.root / "Sadness/blink.mp4").reason is None
    bounds = ClipBounds.of(IngestConfig(duration_s=(0.1, 600.0)))
    assert probe_file(ProbeTask(str(tree.root / "Sadness/blink.mp4"), 512.0, bounds=bounds)).info
