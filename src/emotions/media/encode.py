"""Write video clips with PyAV (no system ffmpeg needed).

The sample-corpus generator, the benchmarks and the tests all make real files through this one
function, so every clip the pipeline sees in development is decoded by the same code that reads
real-world uploads.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    gop: int | None = None,
    pix_fmt: str = "yuv420p",
    video_options: dict[str, str] | None = None,
    audio_bit_rate: int | None = None,
) -> Path:
    """Encode ``frames`` (T, H, W, 3 uint8 RGB) and optional ``audio`` (C, N float in [-1, 1]).

    Video and audio are interleaved by timestamp so the result streams like a phone upload.
    The file is written under a temporary name and renamed, so a crash never leaves a
    half-written clip that looks complete.
    """
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if audio is not None:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if audio.shape[0] not in AUDIO_LAYOUTS:
            raise ValueError(f"audio must have 1, 2 or 6 channels, got {audio.shape[0]}")
    height, width = frames.shape[1:3]
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(tmp), mode="w") as container:
            video = container.add_stream(video_codec, rate=fps)
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
            options = {"g": str(gop or 2 * fps)}
            options.update(video_options or {})
            video.codec_context.options = options
            audio_stream = None
            if audio is not None:
                audio_stream = container.add_stream(audio_codec, rate=sample_rate)
                audio_stream.layout = AUDIO_LAYOUTS[audio.shape[0]]
                if audio_bit_rate:
                    audio_stream.bit_rate = audio_bit_rate
            _encode_interleaved(container, video, audio_stream, frames, fps, audio, sample_rate)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode_interleaved(container, video, audio_stream, frames, fps, audio, sample_rate) -> None:
    audio_format = None
    frame_size = 1024
    if audio_stream is not None:
        audio_format = audio_stream.codec_context.format.name
        frame_size = audio_stream.codec_context.frame_size or 1024
    audio_pos = 0
    for index, image in enumerate(frames):
        vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vframe.pts = index
        vframe.time_base = Fraction(1, fps)
        container.mux(video.encode(vframe))
        if audio_stream is None:
            continue
        until = min(audio.shape[1], round((index + 1) * sample_rate / fps))
        while audio_pos + frame_size <= until or (
            index == len(frames) - 1 and audio_pos < audio.shape[1]
        ):
            chunk = audio[:, audio_pos : audio_pos + frame_size]
            container.mux(
                audio_stream.encode(_audio_frame(chunk, audio_format, audio_pos, sample_rate))
            )
            audio_pos += chunk.shape[1]
    container.mux(video.encode(None))
    if audio_stream is not None:
        container.mux(audio_stream.encode(None))


def _audio_frame(chunk: np.ndarray, fmt: str, pts: int, sample_rate: int) -> av.AudioFrame:
    layout = AUDIO_LAYOUTS[chunk.shape[0]]
    clipped = np.clip(chunk, -1.0, 1.0)
    if fmt in ("s16", "s16p"):
        data = (clipped * 32767).astype(np.int16)
    elif fmt in ("s32", "s32p"):
        data = (clipped * 2147483647).astype(np.int32)
    else:
        data = clipped.astype(np.float32)
    if not fmt.endswith("p"):
        # Packed formats interleave channels in a single plane: (1, N * C).
        data = data.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    return frame


def write_blank_clip(
    path: str | Path, side: int, n_frames: int, fps: int = 30, *, gop: int | None = None
) -> Path:
    """A silent h264 clip of ``n_frames`` black ``side``×``side`` frames; ``gop`` None puts a
    single keyframe at the start.

    The shape of a cheap attack on a decoder: a few hundred KB that holds thousands of huge
    frames behind one keyframe, inside every bound on size, duration and rate. Frames are
    built in the encoder's own pixel format, so even 4096² frames encode quickly.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    interval = str(gop or n_frames + 1)
    try:
        with av.open(str(tmp), mode="w") as container:
            video = container.add_stream("libx264", rate=fps)
            video.width = video.height = side
            video.pix_fmt = "yuv420p"
            video.codec_context.options = {
                "preset": "ultrafast",
                "crf": "51",
                "g": interval,
                "keyint_min": interval,
                "sc_threshold": "0",
            }
            frame = av.VideoFrame(side, side, "yuv420p")
            for plane, value in zip(frame.planes, (16, 128, 128), strict=True):
                np.frombuffer(plane, dtype=np.uint8)[:] = value
            for index in range(n_frames):
                frame.pts = index
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
