"""Write trees of tiny but real-world-like clips, for tests that need files a phone could upload.

Real corpora mix codecs, containers, channel layouts, frame rates and file-name scripts, and
they always contain some junk: empty files, half-copied files, audio-only files, symlinks out
of the tree, the same clip filed under two labels. Each function here writes such files with
PyAV (through ``emotions.media.encode.write_clip`` wherever it can) and returns what a correct
ingest must make of them, so tests compare against expectations written next to the fixture.

Clips are 64×64 and about a second long so a whole tree builds in a few seconds.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emotions.media.encode import AUDIO_LAYOUTS, write_clip

SIZE = 64
# Keep encoders quiet and fast: these are fixtures, not quality tests.
QUIET_X265 = {"x265-params": "log-level=error"}
FAST_VP9 = {"deadline": "realtime", "cpu-used": "8"}


def encoder_available(name: str) -> bool:
    """Whether the installed PyAV/FFmpeg can encode with ``name`` (decoders do not count)."""
    try:
        av.codec.Codec(name, "w")
    except Exception:  # any failure means "cannot encode here"
        return False
    return True


def frames(seconds: float, fps: int, seed: int, size: int = SIZE) -> np.ndarray:
    """A textured moving picture unique to ``seed`` (so content and difference hashes differ)."""
    rng = np.random.default_rng(seed)
    count = max(1, round(seconds * fps))
    # Coarse random blocks give every seed its own layout of brighter and darker regions.
    blocks = rng.uniform(30, 220, size=(8, 8, 3))
    base = np.kron(blocks, np.ones((size // 8, size // 8, 1)))
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for t in range(count):
        picture = base + 20.0 * t / count
        # A bright square that moves: the middle picture differs from the first one.
        x0 = int((size - 16) * t / max(1, count - 1))
        picture[size - 12 : size - 4, x0 : x0 + 16] = 255
        out[t] = np.clip(picture, 0, 255).astype(np.uint8)
    return out


def tone(seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """A different sine per channel, (C, N) float32 in [-1, 1]."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float32) / sample_rate
    base = 220.0 + 40.0 * (seed % 7)
    return np.stack([0.3 * np.sin(2 * np.pi * (base + 55.0 * c) * t) for c in range(channels)])


def make_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    fps: int = 15,
    seed: int = 0,
    audio_channels: int | None = 2,
    sample_rate: int = 44100,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    silent: bool = False,
) -> Path:
    """One real clip; ``audio_channels=None`` writes no audio stream at all."""
    options = QUIET_X265 if video_codec == "libx265" else None
    if video_codec == "libvpx-vp9":
        options = FAST_VP9
    audio = None
    if audio_channels is not None:
        audio = tone(seconds, sample_rate, audio_channels, seed)
        if silent:
            audio = np.zeros_like(audio)
    return write_clip(
        path,
        frames(seconds, fps, seed),
        fps,
        audio,
        sample_rate,
        video_codec=video_codec,
        audio_codec=audio_codec,
        video_options=options,
    )


def make_rotated_clip(
    path: Path, *, degrees: int = 90, seconds: float = 1.0, seed: int = 0
) -> Path:
    """A phone-style clip whose display matrix says "rotate" (write_clip has no such option)."""
    fps = 15
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)
        for index, image in enumerate(frames(seconds, fps, seed)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0, sample_rate: int = 44100) -> Path:
    """An .m4a voice memo: a valid media file with no picture at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = tone(seconds, sample_rate, 1, seed=3)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = AUDIO_LAYOUTS[1]
        size = stream.codec_context.frame_size or 1024
        for pos in range(0, audio.shape[1], size):
            chunk = np.ascontiguousarray(audio[:, pos : pos + size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, pos
            frame.time_base = Fraction(1, sample_rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_image(path: Path, fmt: str, *, frames_n: int = 1, seed: int = 0) -> Path:
    """A picture file (Pillow ``fmt``: PNG, JPEG, GIF, WEBP, BMP, TIFF) under any name; with
    ``frames_n`` > 1 an animated one (GIF, PNG → APNG, WEBP)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.fromarray(image) for image in frames(1.0, frames_n, seed)]
    extra = {"save_all": True, "append_images": pictures[1:], "duration": 80, "loop": 0}
    pictures[0].save(path, format=fmt, **(extra if frames_n > 1 else {}))
    return path


def make_still_in_container(path: Path, codec: str = "mjpeg", *, n: int = 1, seed: int = 0):
    """``n`` pictures of an image (or any) codec in a real video container (.avi, .mov, .mp4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pix_fmt = {"mjpeg": "yuvj420p", "png": "rgb24"}.get(codec, "yuv420p")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = SIZE
        stream.pix_fmt = pix_fmt
        for index, image in enumerate(frames(n / 25, 25, seed)[:n]):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_vfr_clip(path: Path, *, seed: int = 0) -> Path:
    """A phone-style variable frame rate clip: 30 frames 30, 50 and 100 ms apart (1.75 s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = frames(1.5, 20, seed)
    gaps = np.tile([30, 50, 100], len(images))[: len(images)]
    stamps = np.concatenate([[0], np.cumsum(gaps)[:-1]])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, stamp in zip(images, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(stamp), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_sized_clip(path: Path, width: int, height: int, *, seconds: float = 1.0, fps: int = 15):
    """A clip of any (even) size and rate, no audio: odd shapes, tiny pictures, slow rates."""
    side = -(-max(width, height) // 8) * 8  # frames() draws in 8×8 blocks
    images = frames(seconds, fps, seed=width * 7 + height, size=side)
    return write_clip(path, np.ascontiguousarray(images[:, :height, :width]), fps, None, 16000)


def declare_frame_size(path: Path, side: int) -> Path:
    """A Matroska FFV1 clip whose header declares ``side``×``side`` pixels (4 frames of 256×256
    really): what a hostile upload does to make the decoder allocate gigabytes per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=15)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        for index in range(4):
            image = np.full((256, 256, 3), 40 * index, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 15)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    for element in (b"\xb0\x82\x01\x00", b"\xba\x82\x01\x00"):  # PixelWidth, PixelHeight = 256
        at = data.find(element)
        assert at >= 0, "PixelWidth/PixelHeight not found"
        data[at + 2 : at + 4] = struct.pack(">H", side)
    path.write_bytes(bytes(data))
    return path


def declare_duration(path: Path, seconds: float, *, seed: int = 0) -> Path:
    """A real 1 s Matroska clip whose header says it lasts ``seconds`` (its Duration element)."""
    make_clip(path, seed=seed, audio_channels=None)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration, an 8-byte float in milliseconds
    assert at >= 0, "Duration element not found"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    path.write_bytes(bytes(data))
    return path


def corrupt_one_audio_packet(path: Path, index: int = 3) -> int:
    """Overwrite the payload of the ``index``-th audio packet in place; returns its byte offset.

    Phones and broken uploaders produce exactly this: one bad audio packet in an otherwise
    fine file. The offset comes from demuxing (``packet.pos``), so only audio bytes change.
    """
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(audio=0) if p.size and p.pos is not None]
    target = packets[min(index, len(packets) - 1)]
    garbage = np.random.default_rng(index).integers(0, 256, target.size, dtype=np.uint8)
    garbage[:2] = 0xFF  # an impossible bitstream start for AAC's first syntax elements
    with open(path, "r+b") as handle:
        handle.seek(target.pos)
        handle.write(garbage.tobytes())
    return int(target.pos)


def zero_video_packets(path: Path) -> Path:
    """Blank every video packet's payload in place: the file demuxes but no picture decodes."""
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.pos is not None]
    with open(path, "r+b") as handle:
        for pos, size in spans:
            handle.seek(pos)
            handle.write(bytes(size))
    return path


def truncate_half(source: Path, target: Path) -> Path:
    """A half-copied file: the first half of ``source``'s bytes."""
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


@dataclass(frozen=True)
class Kept:
    """What ingest must report for a good clip."""

    label: str
    duration_s: float
    has_audio: bool
    fps: float
    audio_channels: int | None = None
    rotation: int = 0


@dataclass
class RealWorldTree:
    """A folder-per-class root plus the expected outcome of every file in it."""

    root: Path
    outside: Path
    kept: dict[str, Kept] = field(default_factory=dict)
    # path (relative to root, POSIX) → reason prefix
    quarantined: dict[str, str] = field(default_factory=dict)
    # files that must appear nowhere (hidden files, encoder left-overs)
    ignored: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)


# The codec combinations beyond h264 + AAC that real uploads bring, as `make_clip` arguments;
# the tree and the probe tests both draw on this one table.
CODEC_CASES: dict[str, dict] = {
    "hevc_mp3_mono": dict(
        seconds=1.5,
        fps=12,
        video_codec="libx265",
        audio_codec="libmp3lame",
        audio_channels=1,
        sample_rate=24000,
    ),
    "mpeg4_ac3_51": dict(
        seconds=1.2,
        fps=10,
        video_codec="mpeg4",
        audio_codec="ac3",
        audio_channels=6,
        sample_rate=48000,
    ),
    "vp9_opus": dict(video_codec="libvpx-vp9", audio_codec="libopus", sample_rate=48000),
}


def build_realworld_tree(base: Path) -> RealWorldTree:
    """Write ``base/root`` (folder-per-class, emotions6 classes) and ``base/outside``.

    Good clips cover h264/hevc/mpeg4/vp9 in mp4/mkv/webm, aac/mp3/ac3/opus audio, mono, stereo
    and 5.1, a silent track, a broken audio packet, no audio track, a rotation matrix, 120 fps
    HEVC and non-ASCII names. Broken files cover every quarantine reason a folder tree can
    produce. A fixture whose encoder is missing is skipped and named in ``skipped``.
    """
    root, outside = base / "root", base / "outside"
    tree = RealWorldTree(root=root, outside=outside)
    root.mkdir(parents=True)
    outside.mkdir(parents=True)

    def good(rel: str, label: str, *, needs: tuple[str, ...] = (), rotation: int = 0, **kw) -> None:
        missing = [name for name in needs if not encoder_available(name)]
        if missing:
            tree.skipped.append(f"{rel} (no encoder: {', '.join(missing)})")
            return
        seconds, fps = kw.get("seconds", 1.0), kw.get("fps", 15)
        channels = kw.get("audio_channels", 2)
        if rotation:
            make_rotated_clip(root / rel, degrees=rotation, seconds=seconds, seed=kw["seed"])
            channels = None
        else:
            make_clip(root / rel, **kw)
        tree.kept[rel] = Kept(
            label=label,
            duration_s=round(seconds * fps) / fps,
            has_audio=channels is not None,
            fps=float(fps),
            audio_channels=channels,
            rotation=rotation,
        )

    good("Tension/h264_aac_stereo.mp4", "Tension", needs=("libx264", "aac"), seed=1)
    good(
        "Excitation/hevc_mp3_mono.mkv",
        "Excitation",
        needs=("libx265", "libmp3lame"),
        seed=2,
        **CODEC_CASES["hevc_mp3_mono"],
    )
    good(
        "Fear/mpeg4_ac3_51.mp4",
        "Fear",
        needs=("mpeg4", "ac3"),
        seed=3,
        **CODEC_CASES["mpeg4_ac3_51"],
    )
    good(
        "Sadness/vp9_opus.webm",
        "Sadness",
        needs=("libvpx-vp9", "libopus"),
        seed=4,
        **CODEC_CASES["vp9_opus"],
    )
    good("Neutral/silent_track.mp4", "Neutral", needs=("libx264", "aac"), seed=5, silent=True)
    good("Relaxation/no_audio.mp4", "Relaxation", needs=("libx264",), seed=6, audio_channels=None)
    good("Excitation/rotated_90.mp4", "Excitation", needs=("libx264",), seed=7, rotation=90)
    good(
        "Fear/hevc_120fps.mp4",
        "Fear",
        needs=("libx265", "aac"),
        seed=8,
        fps=120,
        video_codec="libx265",
        audio_channels=1,
        sample_rate=16000,
    )
    good("Tension/紧张_clip.mp4", "Tension", needs=("libx264", "aac"), seed=9, seconds=2.0)
    good("Excitation/fréude.mp4", "Excitation", needs=("libx264", "aac"), seed=10, audio_channels=1)
    # Odd shapes and timing a phone or an editor writes are clips too.
    make_vfr_clip(root / "Neutral/variable_rate.mp4", seed=18)
    tree.kept["Neutral/variable_rate.mp4"] = Kept("Neutral", 1.75, False, round(30 / 1.75, 4))
    make_sized_clip(root / "Fear/odd_98x54.mp4", 98, 54, seconds=2.0, fps=24)
    tree.kept["Fear/odd_98x54.mp4"] = Kept("Fear", 2.0, False, 24.0)
    good(
        "Tension/corrupt_audio_packet.mp4",
        "Tension",
        needs=("libx264", "aac"),
        seed=11,
        seconds=2.0,
    )
    if "Tension/corrupt_audio_packet.mp4" in tree.kept:
        corrupt_one_audio_packet(root / "Tension/corrupt_audio_packet.mp4")

    # Same content, same label: the first by path order is kept, the copy is a duplicate.
    good("Sadness/original.mp4", "Sadness", seed=12, audio_channels=1)
    shutil.copyfile(root / "Sadness/original.mp4", root / "Sadness/original_copy.mp4")
    tree.quarantined["Sadness/original_copy.mp4"] = "duplicate of Sadness/original.mp4"
    # Same content under two labels: nobody can say which is right, both go.
    make_clip(root / "Tension/shared.mp4", seed=13)
    shutil.copyfile(root / "Tension/shared.mp4", root / "Excitation/shared.mp4")
    tree.quarantined["Tension/shared.mp4"] = (
        "label conflict: same content labelled 'Tension' and 'Excitation'"
    )
    tree.quarantined["Excitation/shared.mp4"] = (
        "label conflict: same content labelled 'Excitation' and 'Tension'"
    )

    (root / "Tension/empty.mp4").write_bytes(b"")
    tree.quarantined["Tension/empty.mp4"] = "empty file"
    truncate_half(root / "Tension/h264_aac_stereo.mp4", root / "Sadness/truncated.mp4")
    tree.quarantined["Sadness/truncated.mp4"] = "truncated"
    make_clip(outside / "whole.mkv", seed=14, seconds=2.0)
    truncate_half(outside / "whole.mkv", root / "Neutral/truncated.mkv")
    tree.quarantined["Neutral/truncated.mkv"] = "truncated"
    rng = np.random.default_rng(0)
    (root / "Neutral/random_bytes.mp4").write_bytes(rng.integers(0, 256, 50_000).astype(np.uint8))
    tree.quarantined["Neutral/random_bytes.mp4"] = "not a video"
    (root / "Relaxation/notes.mp4").write_text(
        "shot list\n1. smile\n2. frown\n" * 50, encoding="utf-8"
    )
    tree.quarantined["Relaxation/notes.mp4"] = "not a video"
    (root / "Relaxation/readme.txt").write_text("clips of relaxation\n", encoding="utf-8")
    tree.quarantined["Relaxation/readme.txt"] = "not a video"
    zero_video_packets(
        make_clip(root / "Relaxation/zeroed_video.mp4", seed=17, audio_channels=None)
    )
    tree.quarantined["Relaxation/zeroed_video.mp4"] = "undecodable"
    make_audio_only(root / "Fear/voice_memo.m4a")
    tree.quarantined["Fear/voice_memo.m4a"] = "no video stream"
    make_clip(outside / "escapee.mp4", seed=15)
    os.symlink(
        os.path.relpath(outside / "escapee.mp4", root / "Tension"), root / "Tension/escape.mp4"
    )
    tree.quarantined["Tension/escape.mp4"] = "outside root"
    make_clip(root / "contempt/smirk.mp4", seed=16)
    tree.quarantined["contempt/smirk.mp4"] = "unknown label 'contempt'"

    # Not clips, though they open as "videos": pictures, a single frame, the params' bounds.
    for rel, fmt, count, reason in (
        ("Excitation/screenshot.mp4", "PNG", 1, "still image (png codec, 1 frame)"),
        ("Fear/photo.mov", "JPEG", 1, "still image (mjpeg codec, 1 frame)"),
        ("Neutral/sticker.webm", "WEBP", 1, "still image (webp codec, 1 frame)"),
        ("Sadness/scan.mkv", "TIFF", 1, "still image (tiff codec, 1 frame)"),
        ("Relaxation/icon.avi", "BMP", 1, "still image (bmp codec, 1 frame)"),
        ("Tension/meme.mp4", "GIF", 12, "animated image (gif codec, 12 frames)"),
        ("Tension/apng.mp4", "PNG", 6, "animated image (apng codec, 6 frames)"),
    ):
        write_image(root / rel, fmt, frames_n=count, seed=len(rel))
        tree.quarantined[rel] = reason
    make_still_in_container(root / "Fear/one_jpeg_frame.avi", "mjpeg", seed=19)
    tree.quarantined["Fear/one_jpeg_frame.avi"] = "still image (mjpeg codec, 1 frame)"
    make_still_in_container(root / "Fear/one_frame.mp4", "libx264", seed=20)
    tree.quarantined["Fear/one_frame.mp4"] = "too few frames: 1 < 4"
    make_sized_clip(root / "Sadness/blink.mp4", 64, 64, seconds=0.2, fps=30)
    tree.quarantined["Sadness/blink.mp4"] = "duration 0.2 s outside [0.5, 600] s"
    make_sized_clip(root / "Sadness/slideshow.mp4", 64, 64, seconds=4.0, fps=2)
    tree.quarantined["Sadness/slideshow.mp4"] = "frame rate 2 fps outside [5, 240] fps"
    make_sized_clip(root / "Neutral/thumbnail.mp4", 16, 16)
    tree.quarantined["Neutral/thumbnail.mp4"] = "too small: 16×16 px"
    declare_frame_size(root / "Neutral/huge_header.mkv", 16000)
    tree.quarantined["Neutral/huge_header.mkv"] = "frame too large: 16000×16000 px"
    declare_frame_size(root / "Neutral/impossible_header.mkv", 30000)
    tree.quarantined["Neutral/impossible_header.mkv"] = "undecodable: the video stream declares"
    declare_duration(root / "Relaxation/ten_hours.mkv", 36000, seed=21)
    tree.quarantined["Relaxation/ten_hours.mkv"] = "duration 36000 s outside [0.5, 600] s"
    make_audio_only(root / "Fear/voice_memo.mp4")
    tree.quarantined["Fear/voice_memo.mp4"] = "no video stream (streams: audio)"

    (root / "Excitation/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    tree.ignored.add("Excitation/.DS_Store")
    (root / "README.md").write_text("a folder per class\n", encoding="utf-8")
    tree.ignored.add("README.md")
    return tree


def tree_digest(root: Path) -> dict[str, tuple[int, float, str]]:
    """Every entry under ``root`` (not following links) → (size, mtime, sha256 or link target)."""
    import hashlib

    digest: dict[str, tuple[int, float, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            info = full.lstat()
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                digest[rel] = (info.st_size, info.st_mtime, os.readlink(full))
            elif full.is_file():
                sha = hashlib.sha256(full.read_bytes()).hexdigest()
                digest[rel] = (info.st_size, info.st_mtime, sha)
            else:
                digest[rel] = (0, info.st_mtime, "dir")
    return digest


def write_emotions_layout(
    root: Path,
    ballots: dict[str, list[tuple[int, str]]],
    *,
    platforms: dict[str, str] | None = None,
    videos: tuple[str, ...] | None = None,
) -> Path:
    """An ``emotions``-layout root: ``videos/<id>.mp4``, ``annotations.csv``, ``meta.csv``.

    ``ballots`` maps a clip id to its votes as (stage, label); ``videos`` lists the ids that get
    a video file (default: every id in ``ballots``), so tests can leave some out or add extras.
    """
    ids = list(ballots) if videos is None else list(videos)
    for seed, clip_id in enumerate(ids, start=100):
        make_clip(
            root / "videos" / f"{clip_id}.mp4", seed=seed, audio_channels=1, sample_rate=16000
        )
    lines = ["clip_id,stage,annotator,label"]
    for clip_id, votes in ballots.items():
        lines += [f"{clip_id},{stage},a{i},{label}" for i, (stage, label) in enumerate(votes)]
    (root / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if platforms:
        rows = ["clip_id,platform", *(f"{k},{v}" for k, v in platforms.items())]
        (root / "meta.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def build_realworld_tree_in_child(base: Path, *, attempts: int = 2) -> RealWorldTree:
    """:func:`build_realworld_tree` run by a fresh interpreter (see the ``tree`` fixture).

    A child killed by a signal (a native encoder's crash, which is not what any test checks)
    is retried once on a clean folder; a child that fails any other way fails at once, with
    its stderr.
    """
    import pickle
    import subprocess
    import sys

    script = (
        "import pickle, sys; from pathlib import Path; from realworld import build_realworld_tree;"
        " tree = build_realworld_tree(Path(sys.argv[1]));"
        " Path(sys.argv[2]).write_bytes(pickle.dumps(tree))"
    )
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    for attempt in range(1, attempts + 1):
        work = base / f"attempt{attempt}"
        out = base / f"tree{attempt}.pickle"
        result = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", script, str(work), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode == 0:
            return pickle.loads(out.read_bytes())
        if result.returncode > 0 or attempt == attempts:
            raise RuntimeError(
                f"building the real-world tree failed (exit {result.returncode}):\n"
                f"{result.stderr[-4000:]}"
            )
        print(
            f"real-world tree: child died of signal {-result.returncode}, retrying:\n"
            f"{result.stderr[-2000:]}",
            file=sys.stderr,
        )
    raise AssertionError("unreachable")


# Files of the tree that every entry point refuses before decoding, with the probe's reason:
# (file, HTTP status the service answers, its error code, the reason its detail starts with).
HOSTILE = [
    # (file in the real-world tree, status, error code, the probe's reason in the detail)
    (
        "Excitation/screenshot.mp4",
        415,
        "unsupported_media_type",
        "still image (png codec, 1 frame)",
    ),
    ("Tension/meme.mp4", 415, "unsupported_media_type", "animated image (gif codec, 12 frames)"),
    ("Fear/voice_memo.mp4", 415, "unsupported_media_type", "no video stream (streams: audio)"),
    ("Neutral/huge_header.mkv", 422, "clip_out_of_bounds", "frame too large: 16000×16000 px"),
    ("Relaxation/ten_hours.mkv", 422, "clip_out_of_bounds", "duration 36000 s outside"),
    ("Fear/one_frame.mp4", 422, "clip_out_of_bounds", "too few frames: 1 < 4"),
    (
        "Neutral/impossible_header.mkv",
        422,
        "undecodable_video",
        "undecodable: the video stream declares no",
    ),
]
