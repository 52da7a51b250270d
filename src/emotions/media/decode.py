"""Turn one video file into the model's inputs: T RGB frames and a log-mel spectrogram.

This is the only place that decides what a clip looks like to the model. The decode-once cache
(`preprocess`), the serving endpoint and `emotions predict` all call :func:`decode_clip`, so a
model never sees frames or features at serving time that were made differently from the ones it
was trained on.

Frames
    ``exact`` (default): decord, snippet sampling (:mod:`emotions.media.snippets`). The clip is
    split into S equal segments and each gives a run of L consecutive frames (L = 1: the middle
    frame), at J candidate positions per segment (J = 1: the centre), so the frames spread over
    the whole clip. decord scales in the decoder (its ``width``/``height``) and applies rotation
    metadata itself (a phone's portrait clip comes out upright). decord 0.6.0 rejects some output widths
    (72 and 48 among them: "DECORDArrayCopyFromTo: The size must exactly match"); then the clip is
    read at its native size and scaled with swscale through PyAV, and the width is remembered so
    the process does not try it again. If decord cannot read the file at all, PyAV decodes it.
    ``keyframe``: PyAV with ``skip_frame = "NONKEY"``, keeping the keyframe nearest to each
    segment centre. Only keyframes are decoded, about 15× cheaper on phone clips (GOP ~2 s),
    but positions snap to keyframes and a short clip with one keyframe repeats it T times.

Decode cost
    Before any frame is decoded, the frames the sampling needs, plus every frame a seek
    decodes from the keyframe before each of them, times the frame's pixels, must stay within
    ``max_decode_pixels`` (``ingest.max_decode_pixels``,
    :func:`emotions.media.clipcheck.check_decode_cost`), else :class:`DecodeTooCostly`. A small
    file can hold thousands of huge frames after one keyframe, which would hold a decoder for
    minutes while every bound on size, duration and rate is kept. The count comes from the
    video packets, read (not decoded) when the file is first opened: their number and their
    keyframe flags. The PyAV fallback, which decodes from the start, checks its own plan, and
    the PyAV paths count the frames they decode and stop at the limit. (decord's own keyframe
    list is not asked for: asking slows its next read by about a seventh.)

Every frame is resized so that its short side is ``resize`` and the centre square is kept; the
loader crops ``crop`` out of that square (randomly when training).

Frame folders
    A folder ``imgs/<Class>/<id>/`` of pictures (layout ``frames``) is one clip: the segment
    indices are taken over its sorted pictures, each chosen picture is decoded by PyAV to RGB
    and scaled by the same function as a video frame read at native size, and the audio is
    ``mp3/<Class>/<id>.*``.

Audio
    PyAV only (decord cannot read AC3 and has stereo and hang bugs, dmlc/decord #242, #373):
    mono 16 kHz through ``av.AudioResampler``; a packet that fails to decode is skipped and
    counted instead of failing the clip (the gap is dropped, so later audio shifts by one packet,
    ~64 ms for AAC at 16 kHz). Then Kaldi-compatible log-mel filterbanks (torchaudio) over the
    whole clip, put on the frames' time base: the ``target_frames`` rows are equal steps of the
    clip's duration, row i centred at (i + 0.5) / target_frames of it, as frame k of T sits at
    the centre of segment k. Longer audio is averaged down to those rows
    (``adaptive_avg_pool1d``), shorter audio is interpolated up (linear), so a 60 s clip's
    window "30-40 s" reads seconds 30-40 of sound, not seconds 3-4. Only where the audio stream
    ends before the picture are rows left at zero; ``audio_frames`` counts the rows that hold
    sound and the model masks tokens lying wholly past it.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from emotions.config import AudioFeatures, IngestConfig, PreprocessConfig
from emotions.media import framefolder
from emotions.media.clipcheck import ClipBounds, PacketIndex, check_decode_cost, frames_to_decode
from emotions.media.snippets import SnippetLayout

# swscale filter used whenever we scale ourselves; ffmpeg's `scale` filter (which decord uses
# inside its decoder) defaults to bicubic too, so both paths produce alike pixels.
INTERPOLATION = "BICUBIC"

# Output widths decord failed to produce in this process (see the module docstring).
_DECORD_BAD_WIDTHS: set[int] = set()

# What decode_clip allows when its caller passes no limit: params.yaml's default, so a caller
# that forgets the setting is bounded all the same.
DEFAULT_MAX_DECODE_PIXELS: int = IngestConfig.model_fields["max_decode_pixels"].default


def decode_limit(bounds: ClipBounds | None) -> int:
    """The decode budget the clip bounds set (``ingest.max_decode_pixels``), or the default
    when there are none: every decode is bounded, inside a project folder or not."""
    if bounds is None or bounds.max_decode_pixels is None:
        return DEFAULT_MAX_DECODE_PIXELS
    return bounds.max_decode_pixels


class DecodeError(ValueError):
    """The file cannot be turned into frames: not a video, no video stream, or undecodable."""


class DecodeTooCostly(DecodeError):
    """The clip is a readable video whose decoding would cost more than allowed; ``reason`` is
    :func:`emotions.media.clipcheck.check_decode_cost`'s, without the file name."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.reason = reason


@dataclass(frozen=True, eq=False)
class DecodedClip:
    """One clip as the model consumes it (before cropping and normalisation)."""

    # uint8 (J·T, R, R, 3), RGB, upright: J candidate views of T frames, view-major
    # (emotions.media.snippets; J = preprocess.positions, 1 by default)
    frames: np.ndarray
    # float32 (target_frames, n_mels) log-mel; row i covers seconds [i, i + 1) × span /
    # target_frames of the clip (span = duration_s), zeros beyond audio_frames
    fbank: np.ndarray
    audio_frames: int  # rows of fbank that hold sound; 0 when there is no usable audio
    has_audio: bool
    duration_s: float
    frame_times_s: np.ndarray  # float64 (J·T,) timestamps of the sampled frames, from clip start
    skipped_audio_packets: int = field(default=0)
    audio_s: float = field(default=0.0)  # seconds of sound decoded (0 without audio)

    @property
    def span_s(self) -> float:
        """The seconds both modalities' tensors cover: the clip's duration, or the audio's
        when the container reports none."""
        return self.duration_s if self.duration_s > 0 else self.audio_s


@dataclass(frozen=True)
class _Probe:
    width: int  # display orientation (after rotation)
    height: int
    rotation: int  # counter-clockwise degrees to turn a stored frame upright (multiple of 90)
    duration_s: float


def decode_clip(
    path: str | Path,
    config: PreprocessConfig,
    *,
    threads: int = 1,
    fps: float | str = 30.0,
    max_decode_pixels: int | None = DEFAULT_MAX_DECODE_PIXELS,
    index: PacketIndex | None = None,
) -> DecodedClip:
    """Decode ``path`` into T frames and a fixed-size log-mel, as configured.

    ``threads`` is the decoder's thread count: 1 in worker processes (they already fill the
    cores), more for a single request being served. Raises :class:`DecodeError` when the file
    has no decodable video, :class:`DecodeTooCostly` when reaching the sampled frames would
    decode more than ``max_decode_pixels`` (None: no limit); missing or broken audio is not an
    error (``has_audio`` is False). A folder is a frame folder (layout ``frames``); ``fps`` is
    then its frame rate. ``index``: the file's packet index when the caller has read it (the
    service's screening), so the cost check does not demux the file again.
    """
    path = Path(path)
    if path.is_dir():
        return _frame_folder_clip(path, config, fps)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    budget = _Budget(path, max_decode_pixels)
    check_here = max_decode_pixels is not None and index is None
    if max_decode_pixels is not None and index is not None:
        budget.check_plan(index, config)  # refused before the file is opened again
    probe = _probe(
        path,
        need_rotation=config.frame_sampling == "exact",
        check=(lambda read: budget.check_plan(read, config)) if check_here else None,
    )
    if config.frame_sampling == "keyframe":
        frames, times = _keyframe_frames(path, probe, config.num_frames, config.resize, budget)
    else:
        layout = SnippetLayout.of(config)
        frames, times = _exact_frames(path, probe, layout, config.resize, threads, budget)
    fbank, valid, skipped, audio_s = log_mel(path, config.audio, span_s=probe.duration_s)
    return DecodedClip(
        frames=frames,
        fbank=fbank,
        audio_frames=valid,
        has_audio=valid > 0,
        duration_s=probe.duration_s,
        frame_times_s=np.clip(times, 0.0, max(probe.duration_s, 0.0)),
        skipped_audio_packets=skipped,
        audio_s=audio_s,
    )


# --------------------------------------------------------------------------- probing


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise DecodeError(f"{path.name}: cannot open as a media file ({error})") from None


def _probe(
    path: Path,
    *,
    need_rotation: bool,
    check: Callable[[PacketIndex], None] | None = None,
) -> _Probe:
    """Size, rotation, duration and rate of the first video stream.

    FFmpeg exposes the display matrix only on decoded frames, so the rotation costs decoding
    the first frame (a few ms); keyframe sampling reads it from its own frames instead.
    ``check`` gets the packet index first, before that frame is decoded.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError(f"{path.name}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        duration = _duration_s(container, stream)
        if check is not None:
            check(_packet_index(container, stream))
            try:
                container.seek(0)
            except av.error.FFmpegError:  # not seekable: read the first frame afresh
                return _probe(path, need_rotation=need_rotation)
        rotation = 0
        if need_rotation:
            try:
                first = next(container.decode(stream), None)
            except av.error.FFmpegError as error:
                raise DecodeError(f"{path.name}: video does not decode ({error})") from None
            if first is None:
                raise DecodeError(f"{path.name}: video stream has no frames")
            rotation = _quarter_turns(first.rotation) * 90
            width, height = first.width, first.height
    if width <= 0 or height <= 0:
        raise DecodeError(f"{path.name}: video stream has no frame size")
    if rotation % 180:
        width, height = height, width
    return _Probe(width, height, rotation, duration)


def _packet_index(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> PacketIndex:
    """Frame count and keyframe positions of ``stream``, from its packets alone. A damaged
    tail ends the index."""
    packets: list[tuple[int | None, bool]] = []
    try:
        for packet in container.demux(stream):
            if packet.size:
                packets.append((packet.pts, bool(packet.is_keyframe)))
    except av.error.FFmpegError:
        pass  # a cut file: the decoders stop where the packets stop too
    return PacketIndex.of(stream.codec_context.width, stream.codec_context.height, packets)


class _Budget:
    """The pixels a clip may cost to decode (``max_decode_pixels``), judged before decoding
    from an index and counted while a PyAV path decodes."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.limit = limit
        self.spent = 0

    def check(self, width: int, height: int, frames: int, what: str = "sampled") -> None:
        refusal = check_decode_cost(width, height, frames, self.limit, what=what)
        if refusal is not None:
            raise DecodeTooCostly(self.path, refusal.reason)

    def check_plan(self, index: PacketIndex, config: PreprocessConfig) -> None:
        """Refuse before decoding when the sampling's frames, with what their seeks decode
        from the keyframe before each, are over the limit."""
        if index.n_frames == 0:
            return  # nothing to decode: the decoder says what is wrong
        if config.frame_sampling == "keyframe":
            frames = _keyframes_read(index.keyframes, index.n_frames, config.num_frames)
        else:
            targets = SnippetLayout.of(config).indices(index.n_frames).reshape(-1)
            frames = frames_to_decode(index.keyframes, targets.tolist())
        self.check(index.width, index.height, frames)

    def spend(self, frame: av.VideoFrame) -> None:
        """Count one decoded frame; stop the decoder once the clip is over the limit."""
        self.spent += 1
        self.check(frame.width, frame.height, self.spent, what="decoded")


def _keyframes_read(keyframes: tuple[int, ...], n_frames: int, num: int) -> int:
    """Keyframes the keyframe sampling decodes: every one up to the last segment centre, and
    the first after it (where it stops)."""
    last_centre = (num - 0.5) / num * n_frames
    return min(len(keyframes), bisect_right(keyframes, last_centre) + 1) or 1


def _duration_s(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _quarter_turns(rotation: float) -> int:
    return round(rotation / 90) % 4


def segment_indices(n_frames: int, num: int) -> np.ndarray:
    """Middle frame of each of ``num`` equal segments of ``n_frames`` (repeats when short):
    the snippet layout with one frame and one position per segment."""
    return SnippetLayout(num, 1).indices(n_frames).reshape(-1)


def _scaled_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the short side equal to ``short`` and the aspect kept."""
    scale = short / min(width, height)
    return max(short, round(width * scale)), max(short, round(height * scale))


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[-3:-1]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size, :]


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size``, centre square, through swscale."""
    height, width = image.shape[:2]
    out_w, out_h = _scaled_size(width, height, size)
    if (out_w, out_h) != (width, height):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        image = frame.to_ndarray(
            width=out_w, height=out_h, format="rgb24", interpolation=INTERPOLATION
        )
    return _centre_square(image, size)


# --------------------------------------------------------------------------- exact (decord)


def _exact_frames(
    path: Path, probe: _Probe, layout: SnippetLayout, size: int, threads: int, budget: _Budget
) -> tuple[np.ndarray, np.ndarray]:
    try:
        return _decord_frames(path, probe, layout, size, threads)
    except DecodeError:
        raise
    except Exception as decord_error:  # decord raises DECORDError and RuntimeErrors
        try:
            return _pyav_exact_frames(path, layout, size, threads, budget)
        except DecodeTooCostly:
            raise
        except DecodeError as pyav_error:
            raise DecodeError(f"{pyav_error}; decord: {_first_line(decord_error)}") from None


def _decord_frames(
    path: Path, probe: _Probe, layout: SnippetLayout, size: int, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    import decord

    out_w, out_h = _scaled_size(probe.width, probe.height, size)
    if out_w in _DECORD_BAD_WIDTHS:
        return _decord_native(path, layout, size, threads)
    reader = decord.VideoReader(str(path), width=out_w, height=out_h, num_threads=threads)
    indices = _decord_indices(path, reader, layout)
    try:
        batch = _decord_batch(reader, indices)
    except decord.DECORDError as error:
        if "size must exactly match" not in str(error):
            raise
        _DECORD_BAD_WIDTHS.add(out_w)
        del reader
        return _decord_native(path, layout, size, threads)
    times = _decord_times(reader, indices)
    return np.ascontiguousarray(_centre_square(batch, size)), times


def _decord_native(
    path: Path, layout: SnippetLayout, size: int, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    import decord

    reader = decord.VideoReader(str(path), num_threads=threads)
    indices = _decord_indices(path, reader, layout)
    batch = _decord_batch(reader, indices)
    frames = np.stack([_resize_rgb(image, size) for image in batch])
    return frames, _decord_times(reader, indices)


def _decord_indices(path: Path, reader, layout: SnippetLayout) -> list[int]:
    if len(reader) == 0:
        raise DecodeError(f"{path.name}: video stream has no frames")
    return layout.indices(len(reader)).reshape(-1).tolist()


def _decord_batch(reader, indices: list[int]) -> np.ndarray:
    """The frames at ``indices``, read in ascending order: decord seeks back for an index
    below the last one, so the J views of a cache (each spanning the clip) would decode the
    clip J times over."""
    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    return reader.get_batch(unique.tolist()).asnumpy()[inverse]


def _decord_times(reader, indices: list[int]) -> np.ndarray:
    stamps = reader.get_frame_timestamp(indices)[:, 0].astype(np.float64)
    return stamps - float(reader.get_frame_timestamp(0)[0])


def _pyav_exact_frames(
    path: Path, layout: SnippetLayout, size: int, threads: int, budget: _Budget
) -> tuple[np.ndarray, np.ndarray]:
    """Snippet sampling with PyAV alone: count packets, then decode and keep the chosen frames.

    It decodes every frame up to the last one it keeps (no seeks), so that is its plan."""
    with _open(path) as container:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size)
        if count == 0:
            raise DecodeError(f"{path.name}: video stream has no frames")
        wanted = layout.indices(count).reshape(-1)
        wanted_set, last_wanted = set(wanted.tolist()), int(wanted.max())
        context = stream.codec_context
        budget.check(context.width, context.height, last_wanted + 1)
        container.seek(0)
        stream.thread_count = threads
        chosen: dict[int, tuple[np.ndarray, float]] = {}
        start: float | None = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                budget.spend(frame)
                start = frame.time if start is None else start
                if index in wanted_set:
                    chosen[index] = (
                        _upright_rgb(frame, size),
                        (frame.time or 0.0) - (start or 0.0),
                    )
                if index >= last_wanted:
                    break
        except av.error.FFmpegError as error:
            if not chosen:
                raise DecodeError(f"{path.name}: video does not decode ({error})") from None
    if not chosen:
        raise DecodeError(f"{path.name}: no video frame could be decoded")
    # A file that ends early repeats its last good frame rather than failing.
    last = max(chosen)
    picks = [chosen.get(int(i), chosen[last]) for i in wanted]
    return np.stack([p[0] for p in picks]), np.array([p[1] for p in picks], dtype=np.float64)


def _upright_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    """A PyAV frame scaled (short side ``size``), centre square, rotated upright."""
    out_w, out_h = _scaled_size(frame.width, frame.height, size)
    image = frame.to_ndarray(width=out_w, height=out_h, format="rgb24", interpolation=INTERPOLATION)
    square = _centre_square(image, size)
    turns = _quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(square, turns) if turns else square)


# --------------------------------------------------------------------------- keyframes (PyAV)


def _keyframe_frames(
    path: Path, probe: _Probe, num: int, size: int, budget: _Budget
) -> tuple[np.ndarray, np.ndarray]:
    """The keyframe nearest each segment centre, decoding keyframes only.

    Keyframes arrive in time order, so one pass keeps, per centre, the nearest one seen so far
    and converts a frame only when it becomes somebody's nearest: memory stays O(T).
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        start = (
            float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        )
        span = probe.duration_s if probe.duration_s > 0 else math.inf
        centres = (np.arange(num) + 0.5) * (span / num if math.isfinite(span) else 0.0)
        best_gap = np.full(num, np.inf)
        best: list[tuple[np.ndarray, float] | None] = [None] * num
        try:
            for frame in container.decode(stream):
                budget.spend(frame)
                time = (frame.time if frame.time is not None else 0.0) - start
                gaps = np.abs(centres - time)
                closer = gaps < best_gap
                if closer.any():
                    image = _upright_rgb(frame, size)
                    best_gap[closer] = gaps[closer]
                    for i in np.flatnonzero(closer):
                        best[i] = (image, time)
                elif time > centres[-1]:
                    break
        except av.error.FFmpegError as error:
            if all(b is None for b in best):
                raise DecodeError(f"{path.name}: video does not decode ({error})") from None
    if any(b is None for b in best):
        raise DecodeError(f"{path.name}: no keyframe could be decoded")
    return (
        np.stack([b[0] for b in best]),  # type: ignore[index]
        np.array([b[1] for b in best], dtype=np.float64),  # type: ignore[index]
    )


# --------------------------------------------------------------------------- frame folders


def _frame_folder_clip(folder: Path, config: PreprocessConfig, fps: float | str) -> DecodedClip:
    """A frame folder through the video path's steps: segment sampling over the pictures
    (every picture is a keyframe, so both samplings pick the same ones), each picture as RGB
    at its own size and then :func:`_resize_rgb`, the very scaling and centre square that
    decord's native-size path applies to video frames; audio from the file beside it."""
    try:
        files = framefolder.frame_files(folder)
        if not files:
            raise DecodeError(f"{folder.name}: empty frame folder (no pictures)")
        wanted = SnippetLayout.of(config).indices(len(files)).reshape(-1)
        pictures: dict[int, np.ndarray] = {}
        for index in dict.fromkeys(int(i) for i in wanted):
            picture = framefolder.read_picture(files[index]).to_ndarray(format="rgb24")
            pictures[index] = np.ascontiguousarray(_resize_rgb(picture, config.resize))
    except framefolder.FrameFolderError as error:
        raise DecodeError(f"{folder.name}: {error}") from None
    audio = framefolder.audio_for(folder)
    rate = framefolder.frame_rate(fps, len(files), audio)
    a = config.audio
    duration = len(files) / rate
    fbank, valid, skipped = np.zeros((a.target_frames, a.n_mels), dtype=np.float32), 0, 0
    audio_s = 0.0
    if audio is not None:
        # an unreadable audio file is a clip without audio, as for a video
        with contextlib.suppress(DecodeError):
            fbank, valid, skipped, audio_s = log_mel(audio, config.audio, span_s=duration)
    return DecodedClip(
        frames=np.stack([pictures[int(i)] for i in wanted]),
        fbank=fbank,
        audio_frames=valid,
        has_audio=valid > 0,
        duration_s=duration,
        frame_times_s=wanted.astype(np.float64) / rate,
        skipped_audio_packets=skipped,
        audio_s=audio_s,
    )


# --------------------------------------------------------------------------- audio


def log_mel(
    path: str | Path, audio: AudioFeatures, *, span_s: float = 0.0
) -> tuple[np.ndarray, int, int, float]:
    """Kaldi log-mel of the first audio stream on the clip's time base.

    Returns (fbank, rows holding sound, skipped packets, seconds of sound). The fbank is always
    (target_frames, n_mels) float32 and covers ``span_s`` seconds (the clip's duration; the
    audio's own length when it is 0) in equal rows: the whole audio is analysed at the
    configured 10 ms hop and then resampled along time onto the rows its seconds occupy
    (pooled when longer, interpolated when shorter); rows past the audio's end stay zero.
    No audio stream, or too little decodable audio for one analysis window, gives 0 rows.
    """
    target = audio.target_frames
    fbank = np.zeros((target, audio.n_mels), dtype=np.float32)
    wave, skipped = _mono_wave(Path(path), audio)
    window = round(audio.sample_rate * audio.frame_length_ms / 1000)
    if wave is None or wave.size < window:
        return fbank, 0, skipped, 0.0
    audio_s = wave.size / audio.sample_rate
    if audio.features == "looped_mfcc":  # looped: every row holds sound (emotions.media.mfcc)
        from emotions.media.mfcc import looped_mfcc

        fbank[:] = looped_mfcc(wave, audio.sample_rate, target, audio.n_mels)
        return fbank, target, skipped, audio_s
    import torch
    from torchaudio.compliance import kaldi

    features = kaldi.fbank(
        torch.from_numpy(wave)[None],
        num_mel_bins=audio.n_mels,
        frame_shift=audio.frame_shift_ms,
        frame_length=audio.frame_length_ms,
        sample_frequency=audio.sample_rate,
        htk_compat=True,
        window_type="hanning",
        dither=0.0,
    )
    span = span_s if span_s > 0 else audio_s
    valid = audio_rows(target, audio_s, span)
    fbank[:valid] = resample_time(features, valid).numpy()
    return fbank, valid, skipped, audio_s


def audio_rows(target_frames: int, audio_s: float, span_s: float) -> int:
    """Rows of a ``target_frames`` fbank spanning ``span_s`` that ``audio_s`` of sound fills
    (at least 1 for any sound, so a clip with audio never reads as silent)."""
    if audio_s <= 0 or span_s <= 0:
        return 0
    return max(1, min(target_frames, round(target_frames * min(audio_s, span_s) / span_s)))


def resample_time(features, rows: int):
    """(frames, mels) → (rows, mels): average pooling when shrinking (every input frame counts,
    nothing is skipped), linear interpolation when stretching."""
    import torch.nn.functional as F

    x = features.T.unsqueeze(0)  # 1 M F
    if x.shape[-1] == rows:
        return features
    if x.shape[-1] > rows:
        y = F.adaptive_avg_pool1d(x, rows)
    else:
        y = F.interpolate(x, size=rows, mode="linear", align_corners=False)
    return y[0].T.contiguous()


def _mono_wave(path: Path, audio: AudioFeatures) -> tuple[np.ndarray | None, int]:
    """Mono float32 samples of the whole first audio stream at the configured rate."""
    with _open(path) as container:
        if not container.streams.audio:
            return None, 0
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=audio.sample_rate)
        chunks: list[np.ndarray] = []
        skipped = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # the container is cut or damaged from here on: keep what we have
            try:
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            except (av.error.FFmpegError, ValueError):
                skipped += 1
        try:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError):
            pass
    if not chunks:
        return None, skipped
    return np.concatenate(chunks).astype(np.float32, copy=False), skipped


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
