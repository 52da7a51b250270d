"""Is this a clip we accept? One answer, shared by ingest (quarantine) and serve (4xx).

A file can open, demux and even decode and still not be a clip: a PNG saved as ``.mp4`` opens
as a one-frame "video" of 0.04 s, a hostile header can declare a 16000×16000 picture or ten
hours, a screen grab can be 8×8 pixels. :func:`check_clip` judges the facts FFmpeg reports
about the video stream against the bounds in params.yaml (``ingest.duration_s``,
``ingest.fps``, ``ingest.min_frames``, ``ingest.min_side``, ``ingest.max_side``) and returns a
:class:`Refusal` with a stable, specific reason, or None.

A clip inside every one of those bounds can still cost minutes to decode: a 4096×4096 h264
file of 3600 black frames is 170 KB, and reaching its last sampled frame means decoding every
frame since its only keyframe. :func:`check_decode_cost` bounds that work
(``ingest.max_decode_pixels``): the pixels of every frame a decoder must decode to reach the
sampled ones, counted from the keyframe index before anything is decoded
(:func:`frames_to_decode`). ``emotions.media.decode.decode_clip`` applies it, so the cache, the
service and ``emotions predict`` refuse the same clips for the same reason.

It is called twice on the same file: once on the header alone (right after opening, before a
single picture is decoded, so an enormous declared frame or duration costs nothing) with the
facts the header does not give left as None, and once more on the measured facts after the
packets were counted. Ingest records the very values it checked, so the manifest's duration and
frame rate lie inside the bounds that validate checks again (validate reads the same
``ingest`` keys; there is one source of truth).

Images: any stream of an image codec read by an image demuxer (``png_pipe``, ``jpeg_pipe``,
``gif``, ``apng``, ...) is refused, and so is an image codec holding at most one frame in a
video container. Animated GIF/APNG/WebP are refused too ("animated image"): they are image
formats (palette colour, no sound, frame delays in 1/100 s, looping), not the camera video the
model was trained on, and a platform's "GIF" is served as MP4 anyway. Motion JPEG or PNG
*video* (many frames in AVI/MOV/MKV, as old cameras and screen recorders write) is a video
and is kept.

This module imports nothing heavy (not even PyAV): probe workers import it, and a spawned
worker must start fast.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# FFmpeg decoder names of picture formats. A stream of one of these with at most one frame is a
# still image, whatever the container says.
IMAGE_CODECS = frozenset(
    {
        "alias_pix", "apng", "bmp", "dds", "dpx", "exr", "gif", "hdr", "jpeg2000", "jpegls",
        "jpegxl", "ljpeg", "mjpeg", "pam", "pbm", "pcx", "pfm", "pgm", "pgmyuv", "phm", "photocd",
        "pictor", "png", "ppm", "psd", "qoi", "sgi", "sunrast", "targa", "tiff", "txd", "vbn",
        "webp", "xbm", "xpm", "xwd",
    }
)  # fmt: skip
# FFmpeg demuxers that read picture files (besides every "<format>_pipe" one).
IMAGE_DEMUXERS = frozenset({"image2", "gif", "apng", "webp", "image2pipe"})


class BoundsConfig(Protocol):
    """What :meth:`ClipBounds.of` reads (``emotions.config.IngestConfig`` has it)."""

    duration_s: tuple[float, float]
    fps: tuple[float, float]
    min_frames: int
    min_side: int
    max_side: int
    max_decode_pixels: int


@dataclass(frozen=True)
class ClipBounds:
    """The params' limits of an acceptable clip (inclusive), picklable for worker processes."""

    duration_s: tuple[float, float]
    fps: tuple[float, float]
    min_frames: int
    min_side: int
    max_side: int
    # Frames × pixels a decode may cost (check_decode_cost); None: params.yaml's default
    # (emotions.media.decode.decode_limit).
    max_decode_pixels: int | None = None

    @classmethod
    def of(cls, config: BoundsConfig) -> ClipBounds:
        return cls(
            duration_s=(float(config.duration_s[0]), float(config.duration_s[1])),
            fps=(float(config.fps[0]), float(config.fps[1])),
            min_frames=int(config.min_frames),
            min_side=int(config.min_side),
            max_side=int(config.max_side),
            max_decode_pixels=int(config.max_decode_pixels),
        )


@dataclass(frozen=True)
class StreamFacts:
    """What is known about the video stream; None where it is not known (yet)."""

    codec: str
    demuxer: str
    width: int
    height: int
    n_frames: int | None = None
    duration_s: float | None = None
    fps: float | None = None


# Refusal kinds: serve answers "not_video" (an image, sound only) with 415 and the others
# ("out_of_bounds": a video outside the params' limits; "undecodable": no video FFmpeg can
# read) with 422.
NOT_VIDEO = "not_video"
OUT_OF_BOUNDS = "out_of_bounds"
UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class Refusal:
    """Why the file is not a clip we accept, and which kind of reason it is."""

    reason: str
    kind: str = OUT_OF_BOUNDS


def is_image_demuxer(name: str) -> bool:
    """FFmpeg demuxer names may list aliases ("mov,mp4,m4a"); any image one counts."""
    return any(part in IMAGE_DEMUXERS or part.endswith("_pipe") for part in name.split(","))


def _num(value: float) -> str:
    """Numbers as a person writes them: 0.04, 600, 0.0004, 36000, 17.1429."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") or value == 0 else f"{value:.2g}"


def _range(bounds: tuple[float, float]) -> str:
    return f"[{_num(bounds[0])}, {_num(bounds[1])}]"


def check_clip(
    facts: StreamFacts, bounds: ClipBounds | None, *, picture_files: bool = False
) -> Refusal | None:
    """The first reason ``facts`` are not a clip we accept, or None.

    Order: what the file is (an image), then what would be expensive to decode (the frame
    size), then the counts a person can check (frames, duration, rate, size). ``bounds`` None
    applies only the image rule. ``picture_files``: a frame folder, made of pictures by design,
    so the image rule does not apply to it.
    """
    frames = facts.n_frames
    if not picture_files and facts.codec in IMAGE_CODECS:
        image_file = is_image_demuxer(facts.demuxer)
        if frames is not None and frames > 1 and image_file:
            return Refusal(
                f"animated image ({facts.codec} codec, {frames} frames): an image format, "
                "not a video",
                kind=NOT_VIDEO,
            )
        if frames is not None and frames <= 1:
            plural = "" if frames == 1 else "s"
            return Refusal(
                f"still image ({facts.codec} codec, {frames} frame{plural})", kind=NOT_VIDEO
            )
        if frames is None:
            # A picture codec whose frames are not counted yet (a PNG's header): whether it is
            # a still image decides first (415), so its bounds wait for the counted facts.
            return None
    if bounds is None:
        return None
    if facts.width > 0 and facts.height > 0 and max(facts.width, facts.height) > bounds.max_side:
        return Refusal(
            f"frame too large: {facts.width}×{facts.height} px, a side over "
            f"{bounds.max_side} px (ingest.max_side)"
        )
    if frames is not None and frames < bounds.min_frames:
        return Refusal(f"too few frames: {frames} < {bounds.min_frames} (ingest.min_frames)")
    lo, hi = bounds.duration_s
    if facts.duration_s is not None and not lo <= facts.duration_s <= hi:
        return Refusal(
            f"duration {_num(facts.duration_s)} s outside {_range(bounds.duration_s)} s "
            "(ingest.duration_s)"
        )
    lo, hi = bounds.fps
    if facts.fps is not None and not lo <= facts.fps <= hi:
        return Refusal(
            f"frame rate {_num(facts.fps)} fps outside {_range(bounds.fps)} fps (ingest.fps)"
        )
    if facts.width > 0 and facts.height > 0 and min(facts.width, facts.height) < bounds.min_side:
        return Refusal(
            f"too small: {facts.width}×{facts.height} px, the shorter side under "
            f"{bounds.min_side} px (ingest.min_side)"
        )
    return None


@dataclass(frozen=True)
class PacketIndex:
    """What a video stream's packets say before anything is decoded: frame size, frame count
    and the keyframes' frame indices (display order). Read once by the service's screening and
    handed to the decoder's cost check, which would otherwise demux the file a second time."""

    width: int
    height: int
    n_frames: int
    keyframes: tuple[int, ...]

    @classmethod
    def of(
        cls, width: int | None, height: int | None, packets: Sequence[tuple[int | None, bool]]
    ) -> PacketIndex:
        """From the (pts, is keyframe) of each non-empty packet, in demux order. Frames are
        numbered in display order (packets sorted by pts, as decord numbers them); a stream
        without timestamps keeps the packets' order."""
        if all(pts is not None for pts, _ in packets):
            order = sorted(range(len(packets)), key=lambda i: (packets[i][0], i))
        else:
            order = list(range(len(packets)))
        keyframes = tuple(rank for rank, i in enumerate(order) if packets[i][1])
        return cls(int(width or 0), int(height or 0), len(packets), keyframes)


def frames_to_decode(keyframes: Sequence[int], targets: Iterable[int]) -> int:
    """How many frames a decoder decodes to deliver ``targets`` (frame indices, display
    order), given the indices of the keyframes.

    The targets are read in ascending order (``decode_clip`` asks for them so); each is reached
    by decoding forward from the frame last delivered when no keyframe lies between them, else
    from the last keyframe at or before it (a seek). That is the union of the spans
    [keyframe before t, t]: what any decoder must decode, since a frame needs its whole chain
    of references back to a keyframe. A target before the first keyframe counts from frame 0.
    """
    keys = sorted(set(keyframes))
    total, previous = 0, -1
    for target in sorted(set(int(t) for t in targets)):
        at = bisect_right(keys, target) - 1
        key = keys[at] if at >= 0 else 0
        total += target - max(key - 1, previous)
        previous = target
    return total


def check_decode_cost(
    width: int, height: int, frames: int, limit: int | None, *, what: str = "sampled"
) -> Refusal | None:
    """A refusal when decoding ``frames`` frames of ``width``×``height`` pixels would cost more
    than ``limit`` pixels (``ingest.max_decode_pixels``; None: no limit), else None."""
    pixels = int(width) * int(height) * int(frames)
    if limit is None or pixels <= limit:
        return None
    return Refusal(
        f"too costly to decode: {frames} frames of {width}×{height} px to reach the {what} "
        f"ones, {pixels / 1e9:.3g} Gpx over {_num(limit / 1e9)} Gpx "
        "(ingest.max_decode_pixels)"
    )


# Reason prefixes of check_clip and check_decode_cost, for counting them
# (emotions.media.probe.REASON_PREFIXES).
REASON_PREFIXES = (
    "still image",
    "animated image",
    "frame too large",
    "too few frames",
    "duration",
    "frame rate",
    "too small",
    "too costly to decode",
)
