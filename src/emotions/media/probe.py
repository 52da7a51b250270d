"""Probe one media file: what it is, whether it is whole, and whether its picture decodes.

``probe_file`` runs inside a worker process (``emotions.media.workers.map_isolated``), one file per
task, so it is a top-level function over a small picklable task and imports only light modules
(PyAV, numpy, hashlib): a spawned worker must start fast, and a hostile file can hang or crash
only the worker it runs in. Every problem becomes a specific, human-readable quarantine reason
instead of an exception; reasons start with one of the prefixes in ``REASON_PREFIXES`` so reports
can count them.

Cost is kept close to a container read: the whole file is hashed and demuxed (no video decode
beyond the first picture), audio packets are decoded one by one (cheap, and the only way to
find a broken one), and one seek fetches a picture near the middle for the near-duplicate hash;
the frames decoded after that seek stay within ``ingest.max_decode_pixels`` (a clip of huge
frames after one keyframe would otherwise cost hundreds of them), past which the last one
decoded stands in for the middle.

A frame folder (``ProbeTask.frames``, layout ``frames``) is probed as one clip at the same cost:
every picture hashed and its signature checked, the first and the middle one decoded, and its
audio file decoded packet by packet; see :func:`_probe_frame_folder`.

Whether a file that reads fine is a clip we accept (not a still image, not 8×8 pixels, not ten
hours long) is :func:`emotions.media.clipcheck.check_clip`'s call, made on the header before
any picture is decoded and again on the counted packets; ``ProbeTask.bounds`` carries the
params' limits. The service runs the same checks through :func:`screen_file` (header and
packet count, no decoding) before it lets a decoder near an upload.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emotions.media import clipcheck, framefolder
from emotions.media.clipcheck import ClipBounds, PacketIndex, Refusal, StreamFacts, check_clip
from emotions.media.framefolder import FrameFolderError

MB = 1024 * 1024
HASH_CHUNK = 4 * MB
# A declared duration longer than the demuxed packets by more than this means bytes are missing.
TRUNCATION_GAP_S = 0.5
TRUNCATION_GAP_SHARE = 0.1
# Bound the decode work spent looking for the middle picture after a seek (one GOP is typical).
MAX_PACKETS_AFTER_SEEK = 600

REASON_PREFIXES = (
    "empty file",
    "too large",
    "truncated",
    "not a video",
    "no video stream",
    "undecodable",
    "unreadable",
    "unknown label",
    "missing file",
    "outside root",
    "label conflict",
    "duplicate of",
    "timeout",
    "worker crashed",
    "no annotations",
    "empty frame folder",
    *clipcheck.REASON_PREFIXES,
)

# Leading bytes of containers: a file that starts like one but does not open is damaged, not junk.
_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}
_SIGNATURES = {
    b"\x1a\x45\xdf\xa3": "Matroska/WebM",
    b"RIFF": "RIFF/AVI",
    b"FLV\x01": "FLV",
}


@dataclass(frozen=True)
class ProbeTask:
    """One file to probe: an absolute path (already checked to lie under the root) and a size cap."""

    path: str
    max_file_mb: float
    # A frame folder (layout ``frames``) instead of a file, and its frames per second or
    # "audio" (see emotions.media.framefolder).
    frames: bool = False
    fps: float | str = 30.0
    # The params' limits of an acceptable clip (ingest.duration_s, ...); None: only the rule
    # that a still image is not a clip applies.
    bounds: ClipBounds | None = None


@dataclass(frozen=True)
class ClipInfo:
    """Everything the manifest records about a file that passed the probe."""

    size_bytes: int
    sha256: str
    duration_s: float
    fps: float
    n_frames: int
    width: int
    height: int
    rotation: int
    video_codec: str
    visual_hash: str
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    audio_codec: str | None
    audio_bad_packets: int


@dataclass(frozen=True)
class ProbeResult:
    """Either ``info`` (the file is usable) or ``reason`` (why it goes to quarantine)."""

    info: ClipInfo | None = None
    reason: str | None = None


class _Reject(Exception):
    """Internal: stop probing with this quarantine reason (``kind`` as in clipcheck.Refusal)."""

    def __init__(self, reason: str, kind: str = clipcheck.UNDECODABLE) -> None:
        super().__init__(reason)
        self.kind = kind


def probe_file(task: ProbeTask) -> ProbeResult:
    """Probe ``task.path``; never raises for a bad file (the reason says what is wrong)."""
    # FFmpeg's own log lines about a broken file would only repeat the reason, once per packet.
    av.logging.set_level(None)
    try:
        path = Path(task.path)
        if task.frames:
            return ProbeResult(
                info=_probe_frame_folder(path, task.max_file_mb, task.fps, task.bounds)
            )
        return ProbeResult(info=_probe(path, task.max_file_mb, task.bounds))
    except FrameFolderError as reject:
        return ProbeResult(reason=str(reject))
    except _Reject as reject:
        return ProbeResult(reason=str(reject))
    except av.FFmpegError as error:
        return ProbeResult(reason=f"undecodable: {_message(error)}")
    except OSError as error:
        return ProbeResult(reason=f"unreadable: {error.strerror or error}")
    except Exception as error:  # a hostile file may trip anything; report it
        return ProbeResult(reason=f"undecodable: {type(error).__name__}: {error}")


def screen_file(path: str | Path, bounds: ClipBounds | None) -> Refusal | None:
    """The service's probe of an upload: None when it may be decoded, else why not.

    The same header and packet checks as :func:`probe_file` (one judge, ``check_clip``) at a
    fraction of its cost: nothing is hashed and nothing decoded, packets are only counted. A
    file that does not open gets the same reason ingest would quarantine it with.
    """
    return screen_and_index(path, bounds)[0]


def screen_and_index(
    path: str | Path, bounds: ClipBounds | None
) -> tuple[Refusal | None, PacketIndex | None]:
    """:func:`screen_file`, and the video's packet index read by the same scan (None when the
    file is refused), for ``decode_clip(index=...)``: a file of thousands of packets is then
    demuxed once, not once to screen and again to bound its decode cost."""
    av.logging.set_level(None)
    path = Path(path)
    try:
        size = os.stat(path).st_size
        if size == 0:
            return Refusal("empty file", clipcheck.UNDECODABLE), None
        try:
            container = av.open(str(path), metadata_errors="ignore")
        except av.FFmpegError as error:
            with open(path, "rb") as handle:
                head = handle.read(64)
            refusal = Refusal(_open_failure(path, head, size, error), clipcheck.UNDECODABLE)
            return refusal, None
        with container:
            video = _video_stream(container)
            _check_header(container, video, bounds)
            scan = _count_packets(container, video)
            _check_whole(video, scan, _declared(container))
            ctx = video.codec_context
            _check_measured(container, video, scan, int(ctx.width), int(ctx.height), bounds)
            index = PacketIndex.of(ctx.width, ctx.height, scan.packets)
    except _Reject as reject:
        return Refusal(str(reject), reject.kind), None
    except av.FFmpegError as error:
        return Refusal(f"undecodable: {_message(error)}", clipcheck.UNDECODABLE), None
    except OSError as error:
        refusal = Refusal(f"unreadable: {error.strerror or error}", clipcheck.UNDECODABLE)
        return refusal, None
    except Exception as error:  # a hostile file may trip anything; it is still a 4xx
        refusal = Refusal(f"undecodable: {type(error).__name__}: {error}", clipcheck.UNDECODABLE)
        return refusal, None
    return None, index


def difference_hash(grey: np.ndarray) -> str:
    """64-bit difference hash of a grey picture, as 16 hex digits.

    The picture is reduced to 8 rows × 9 columns by block means, and each bit says whether a
    cell is brighter than its left neighbour. Re-encodes, rescales and small colour shifts keep
    most bits, so the variants stage can keep near-duplicates in one split.
    """
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or grey.shape[0] < 8 or grey.shape[1] < 9:
        raise ValueError(f"need a 2-D picture of at least 8×9 pixels, got {grey.shape}")
    rows = np.array_split(np.arange(grey.shape[0]), 8)
    cols = np.array_split(np.arange(grey.shape[1]), 9)
    cells = np.array([[grey[np.ix_(r, c)].mean() for c in cols] for r in rows])
    bits = (cells[:, 1:] > cells[:, :-1]).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(hash_a: str, hash_b: str) -> int:
    """Number of differing bits between two hex difference hashes."""
    return (int(hash_a, 16) ^ int(hash_b, 16)).bit_count()


# --------------------------------------------------------------------------------------------
# The probe itself


def _probe(path: Path, max_file_mb: float, bounds: ClipBounds | None = None) -> ClipInfo:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise _Reject("not a video: not a regular file")
    size = info.st_size
    if size == 0:
        raise _Reject("empty file")
    if size > max_file_mb * MB:
        raise _Reject(f"too large ({size / MB:.1f} MB > {max_file_mb:g} MB limit)")
    # Hash first: the hash identifies the file whatever its fate, and reading it end to end is
    # also the cheapest proof that every byte is readable.
    sha256, head = _sha256(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise _Reject(_open_failure(path, head, size, error)) from None
    with container:
        return _probe_container(container, size, sha256, bounds)


def _sha256(path: Path) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    head = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            if not head:
                head = chunk[:64]
            digest.update(chunk)
    return digest.hexdigest(), head


def _message(error: BaseException) -> str:
    """FFmpeg's message without the errno and the file name it appends."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


def _open_failure(path: Path, head: bytes, size: int, error: av.FFmpegError) -> str:
    """Tell a damaged container (it starts like one) from a file that never was a video."""
    message = _message(error)
    if head[4:8] in _BMFF_BOXES:
        overrun = _bmff_overrun(path, size)
        if overrun:
            return f"truncated: {overrun}"
        return f"undecodable: damaged MP4/MOV container ({message})"
    for magic, kind in _SIGNATURES.items():
        if head.startswith(magic):
            return f"undecodable: damaged {kind} container ({message})"
    return f"not a video: {message}"


def _bmff_overrun(path: Path, size: int) -> str | None:
    """Walk the top-level MP4 boxes; describe a box that runs past the end, or a missing index."""
    seen: list[str] = []
    offset = 0
    with open(path, "rb") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box_size = int.from_bytes(header[:4], "big")
            kind = header[4:8].decode("latin-1")
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                return None
            seen.append(kind)
            if offset + box_size > size:
                return f"'{kind}' box needs {offset + box_size} bytes, the file has {size}"
            offset += box_size
    if "moov" not in seen:
        return "no 'moov' index box (the file was cut before its index)"
    return None


def _video_stream(container):
    """The first real video stream (a cover picture is not one), or the reason there is none."""
    video = next(
        (
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ),
        None,
    )
    if video is None:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        if container.streams.video:
            raise _Reject("no video stream (only a cover picture)", clipcheck.NOT_VIDEO)
        raise _Reject(f"no video stream (streams: {', '.join(kinds)})", clipcheck.NOT_VIDEO)
    return video


def header_frame_rate(path: str | Path) -> float | None:
    """The average frame rate the container header declares for the clip's video stream (the
    same stream the probe reads: a cover picture is skipped), without decoding; None when the
    file does not open, has no video stream or declares no rate. For players that need a
    rate up front (Label Studio's frame counter), where the probe's measured rate is not kept."""
    try:
        with av.open(str(path)) as container:
            rate = _video_stream(container).average_rate
    except (av.FFmpegError, OSError, _Reject):
        return None
    return float(rate) if rate and rate > 0 else None


def _declared(container) -> float | None:
    return container.duration / av.time_base if container.duration else None


def _check(facts: StreamFacts, bounds: ClipBounds | None) -> None:
    refusal = check_clip(facts, bounds)
    if refusal is not None:
        raise _Reject(refusal.reason, refusal.kind)


def _check_header(container, video, bounds: ClipBounds | None) -> None:
    """Refuse from the header alone, before a picture is decoded: no frame size (FFmpeg
    leaves it at 0 when the declared one is beyond what it can allocate), or facts the header
    already gives (frame size, declared duration, rate and frame count) outside the bounds."""
    ctx = video.codec_context
    if not ctx.width or not ctx.height:
        raise _Reject("undecodable: the video stream declares no usable frame size")
    declared = _declared(container)
    rate = video.average_rate
    _check(
        StreamFacts(
            codec=ctx.codec.canonical_name,
            demuxer=container.format.name,
            width=int(ctx.width),
            height=int(ctx.height),
            n_frames=int(video.frames) if video.frames and video.frames > 0 else None,
            duration_s=declared if declared and declared > 0 else None,
            fps=float(rate) if rate and rate > 0 else None,
        ),
        bounds,
    )


def _measured(container, video, scan: _Scan) -> tuple[float, float, int]:
    """(duration, fps, frame count) as the manifest records them."""
    duration = _duration(video, scan, _declared(container))
    fps = _fps(video, scan, duration)
    n_frames = video.frames if video.frames and video.frames > 0 else scan.video_packets
    return float(duration), float(fps), int(n_frames)


def _check_measured(
    container, video, scan: _Scan, width: int, height: int, bounds: ClipBounds | None
) -> tuple[float, float, int]:
    duration, fps, n_frames = _measured(container, video, scan)
    facts = StreamFacts(
        codec=video.codec_context.codec.canonical_name,
        demuxer=container.format.name,
        width=width,
        height=height,
        n_frames=n_frames,
        # Rounded as the manifest records them, so validate sees exactly what was checked.
        duration_s=round(duration, 4),
        fps=round(fps, 4),
    )
    _check(facts, bounds)
    return duration, fps, n_frames


def _probe_container(
    container, size: int, sha256: str, bounds: ClipBounds | None = None
) -> ClipInfo:
    video = _video_stream(container)
    _check_header(container, video, bounds)
    audio = container.streams.audio[0] if container.streams.audio else None

    scan = _demux(container, video, audio)
    declared = _declared(container)
    _check_whole(video, scan, declared)
    if scan.first_frame is None:
        raise _Reject(
            f"undecodable: {scan.video_error or 'no picture decodes from the video stream'}"
        )

    ctx = video.codec_context
    width = int(ctx.width or scan.first_frame.width)
    height = int(ctx.height or scan.first_frame.height)
    duration, fps, n_frames = _check_measured(container, video, scan, width, height, bounds)
    limit = bounds.max_decode_pixels if bounds is not None else None
    most = MAX_PACKETS_AFTER_SEEK if limit is None else limit // max(1, width * height)
    middle = _middle_frame(container, video, duration, max(1, min(MAX_PACKETS_AFTER_SEEK, most)))
    middle = middle or scan.first_frame
    grey = middle.reformat(width=36, height=32, format="gray").to_ndarray()
    return ClipInfo(
        size_bytes=size,
        sha256=sha256,
        duration_s=round(duration, 4),
        fps=round(fps, 4),
        n_frames=n_frames,
        width=width,
        height=height,
        rotation=_rotation(video, scan.first_frame),
        video_codec=ctx.codec.canonical_name,
        visual_hash=difference_hash(grey),
        has_audio=audio is not None and scan.audio_frames > 0,
        audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
        audio_channels=_channels(audio),
        audio_codec=audio.codec_context.codec.canonical_name if audio is not None else None,
        audio_bad_packets=scan.audio_bad_packets,
    )


@dataclass
class _Scan:
    video_packets: int = 0
    audio_packets: int = 0
    audio_frames: int = 0
    audio_bad_packets: int = 0
    end_s: float | None = None
    first_frame: av.VideoFrame | None = None
    video_error: str | None = None
    demux_error: str | None = None
    # (pts, is keyframe) of each non-empty video packet: the PacketIndex (only the screening's
    # packet count fills it).
    packets: list[tuple[int | None, bool]] = field(default_factory=list)


def _demux(container, video, audio) -> _Scan:
    """Read every packet once: count, find where the data ends, decode audio and one picture."""
    scan = _Scan()
    streams = [video] if audio is None else [video, audio]
    start = container.start_time / av.time_base if container.start_time else 0.0
    try:
        for packet in container.demux(*streams):
            if packet.size == 0 and packet.pts is None:
                continue  # the empty packet demux yields at the end of each stream
            if packet.pts is not None and packet.time_base:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - start
                scan.end_s = end if scan.end_s is None else max(scan.end_s, end)
            if packet.stream is video:
                scan.video_packets += 1
                if scan.first_frame is None:
                    scan.first_frame = _decode_one(video, packet, scan)
            else:
                scan.audio_packets += 1
                try:
                    scan.audio_frames += len(audio.decode(packet))
                except av.FFmpegError:
                    scan.audio_bad_packets += 1  # one broken packet must not cost the clip
    except av.FFmpegError as error:
        scan.demux_error = _message(error)
    if scan.first_frame is None and scan.video_packets:
        scan.first_frame = _decode_one(video, None, scan)  # drain decoders that hold frames back
    if audio is not None:
        try:
            scan.audio_frames += len(audio.decode(None))
        except av.FFmpegError:
            scan.audio_bad_packets += 1
    return scan


def _count_packets(container, video) -> _Scan:
    """Demux the video stream without decoding: its packet count and where its data ends."""
    scan = _Scan()
    start = container.start_time / av.time_base if container.start_time else 0.0
    # The stream's time base as a float, once: Fraction arithmetic on every packet weighs on
    # a file of thousands of packets (benchmarks/README.md, attack.py).
    seconds_per_tick = float(video.time_base) if video.time_base else None
    try:
        for packet in container.demux(video):
            if packet.size == 0 and packet.pts is None:
                continue
            if packet.pts is not None and seconds_per_tick:
                end = (packet.pts + (packet.duration or 0)) * seconds_per_tick - start
                scan.end_s = end if scan.end_s is None else max(scan.end_s, end)
            scan.video_packets += 1
            if packet.size:
                scan.packets.append((packet.pts, bool(packet.is_keyframe)))
    except av.FFmpegError as error:
        scan.demux_error = _message(error)
    return scan


def _decode_one(video, packet, scan: _Scan) -> av.VideoFrame | None:
    try:
        frames = video.decode(packet)
    except av.FFmpegError as error:
        scan.video_error = _message(error)
        return None
    return frames[0] if frames else None


def _check_whole(video, scan: _Scan, declared: float | None) -> None:
    """Bytes missing from the end show as fewer packets or an earlier end than the header says."""
    if scan.demux_error:
        where = f" after {scan.end_s:.2f} s" if scan.end_s is not None else ""
        raise _Reject(f"truncated: reading stopped{where}: {scan.demux_error}")
    if scan.video_packets == 0:
        raise _Reject("truncated: the video stream has no packets")
    expected = video.frames or 0
    if expected > 0 and scan.video_packets < expected - max(1, 0.02 * expected):
        raise _Reject(f"truncated: {scan.video_packets} of {expected} video frames present")
    if declared and scan.end_s is not None:
        gap = declared - scan.end_s
        if gap > max(TRUNCATION_GAP_S, TRUNCATION_GAP_SHARE * declared):
            raise _Reject(
                f"truncated: data ends at {scan.end_s:.2f} s of a declared {declared:.2f} s"
            )


def _duration(video, scan: _Scan, declared: float | None) -> float:
    if declared and declared > 0:
        return declared
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if scan.end_s:
        return scan.end_s
    rate = video.average_rate or video.guessed_rate
    return scan.video_packets / float(rate) if rate else 0.0


def _fps(video, scan: _Scan, duration: float) -> float:
    """The average rate FFmpeg measured; else frames over seconds, which beats FFmpeg's
    guessed rate (for variable-rate Matroska that is the time base, e.g. 1000 fps)."""
    if video.average_rate and video.average_rate > 0:
        return float(video.average_rate)
    if scan.video_packets > 1 and duration > 0:
        return scan.video_packets / duration
    for rate in (video.guessed_rate, video.base_rate):
        if rate and rate > 0:
            return float(rate)
    return 0.0


def _channels(audio) -> int | None:
    if audio is None:
        return None
    layout = audio.codec_context.layout
    return int(layout.nb_channels) if layout is not None else int(audio.codec_context.channels)


def _rotation(video, frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation in degrees, normalised to 0, 90, 180 or 270."""
    degrees = 0
    try:
        degrees = round(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        degrees = 0
    if not degrees:
        tag = (video.metadata or {}).get("rotate")
        if tag:
            try:
                # The old "rotate" tag is clockwise; the display matrix is counter-clockwise.
                degrees = -int(float(tag))
            except ValueError:
                degrees = 0
    return degrees % 360


def _middle_frame(
    container, video, duration: float, max_packets: int = MAX_PACKETS_AFTER_SEEK
) -> av.VideoFrame | None:
    """The picture at (or just after) the middle of the clip, decoding at most ``max_packets``
    after the seek (then the last one decoded), or None when seeking fails."""
    if duration <= 0 or not video.time_base:
        return None
    base = video.start_time or 0
    target_s = duration / 2
    try:
        container.seek(base + int(Fraction(target_s) / video.time_base), stream=video)
        chosen = None
        for count, packet in enumerate(container.demux(video)):
            if count >= max_packets:
                break
            try:
                frames = video.decode(packet)
            except av.FFmpegError:
                continue
            for frame in frames:
                chosen = frame
                if (
                    frame.time is not None
                    and frame.time - base * video.time_base >= target_s - 1e-3
                ):
                    return frame
        return chosen
    except av.FFmpegError:
        return None


# --------------------------------------------------------------------------------------------
# Frame folders (layout ``frames``)

# A declared picture count above the pictures present by more than this means frames are lost.
MISSING_FRAMES_SHARE = 0.02


def _probe_frame_folder(
    folder: Path, max_file_mb: float, fps: float | str, bounds: ClipBounds | None = None
) -> ClipInfo:
    """A folder of pictures (plus its audio file, if any) as one clip.

    Every picture is hashed and its leading bytes checked (a renamed or zeroed file fails);
    the first and the middle picture are decoded, which proves the format and gives the size
    and the near-duplicate hash, the same two reads a video probe makes.
    """
    files = framefolder.frame_files(folder)
    if not files:
        raise _Reject(
            "empty frame folder (no " + "/".join(framefolder.PICTURE_SUFFIXES) + " pictures)"
        )
    digests: list[str] = []
    bad: list[str] = []
    size = 0
    for path in files:
        digest, head, length = framefolder.file_sha256(path)
        size += length
        digests.append(digest)
        if not framefolder.looks_like_picture(path, head):
            bad.append(path.name)
    if bad:
        raise _Reject(
            f"undecodable: {len(bad)} of {len(files)} frames are not pictures "
            f"(e.g. {', '.join(bad[:3])})"
        )
    declared = framefolder.declared_count(folder)
    if declared is not None and len(files) < declared - max(1, MISSING_FRAMES_SHARE * declared):
        raise _Reject(f"truncated: {len(files)} of {declared} frames (n_frames) present")
    audio_path = framefolder.audio_for(folder)
    audio = _probe_audio(audio_path) if audio_path is not None else None
    audio_digest = None
    if audio_path is not None:
        audio_digest, _, audio_size = framefolder.file_sha256(audio_path)
        size += audio_size
    if size > max_file_mb * MB:
        raise _Reject(f"too large ({size / MB:.1f} MB > {max_file_mb:g} MB limit)")
    first = framefolder.read_picture(files[0])
    rate = framefolder.frame_rate(fps, len(files), audio_path if audio else None)
    refusal = check_clip(
        StreamFacts(
            codec=_picture_codec(files[0]),
            demuxer="frames",
            width=int(first.width),
            height=int(first.height),
            n_frames=len(files),
            duration_s=round(len(files) / rate, 4),
            fps=round(rate, 4),
        ),
        bounds,
        picture_files=True,
    )
    if refusal is not None:
        raise _Reject(refusal.reason, refusal.kind)
    middle = framefolder.read_picture(files[len(files) // 2]) if len(files) > 2 else first
    grey = middle.reformat(width=36, height=32, format="gray").to_ndarray()
    return ClipInfo(
        size_bytes=size,
        sha256=framefolder.content_sha256(digests, audio_digest),
        duration_s=round(len(files) / rate, 4),
        fps=round(rate, 4),
        n_frames=len(files),
        width=int(first.width),
        height=int(first.height),
        rotation=0,
        video_codec=_picture_codec(files[0]),
        visual_hash=difference_hash(grey),
        has_audio=audio is not None and audio.frames > 0,
        audio_sample_rate=audio.sample_rate if audio is not None else None,
        audio_channels=audio.channels if audio is not None else None,
        audio_codec=audio.codec if audio is not None else None,
        audio_bad_packets=audio.bad_packets if audio is not None else 0,
    )


@dataclass(frozen=True)
class _AudioScan:
    sample_rate: int
    channels: int | None
    codec: str
    frames: int
    bad_packets: int


def _probe_audio(path: Path) -> _AudioScan | None:
    """Decode an audio file packet by packet; None when it does not open or has no audio."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError:
        return None
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        frames = bad = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames += len(stream.decode(packet))
                except av.FFmpegError:
                    bad += 1
        except av.FFmpegError:
            bad += 1
        ctx = stream.codec_context
        return _AudioScan(
            sample_rate=int(ctx.sample_rate),
            channels=_channels(stream),
            codec=ctx.codec.canonical_name,
            frames=frames,
            bad_packets=bad,
        )


def _picture_codec(path: Path) -> str:
    return "png" if path.suffix.lower() == ".png" else "mjpeg"
