"""A clip stored as a folder of pictures: ``imgs/<Class>/<video_id>/000001.jpg …``.

Research copies of VideoEmotion-8, Ekman-6 and eMotions are passed around pre-extracted like
this, with the sound beside them at ``mp3/<Class>/<video_id>.mp3`` (or .wav/.m4a) and often an
``n_frames`` file holding the picture count. The probe and the decoder both read such a folder
through this module, so they agree on which files are the frames (sorted by name), where the
audio is, and what the folder's content hash is.

Pictures are decoded with PyAV (FFmpeg's mjpeg/png decoders), the same library and the same
scaler (swscale, bicubic) the video path uses, so a frame folder extracted from a video gives
the model the same arrays as the video, up to the JPEG error.

Every file read here (pictures, ``n_frames``, the sound) must stay under the layout's root
(the folder holding ``imgs/``) once its symlinks are resolved; one that leads out makes the
whole clip a ``FrameFolderError`` (``outside root (...)``), never a clip built from it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av

from emotions.corpus.confine import escape_reason

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".mp3", ".wav", ".m4a")
COUNT_FILE = "n_frames"
IMAGES_DIR = "imgs"
AUDIO_DIR = "mp3"
# Leading bytes of a picture file; anything else in a frame folder is not a readable frame.
_MAGIC = {".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".png": b"\x89PNG\r\n\x1a\n"}
HASH_VERSION = b"emotions-frame-folder-v1\n"


class FrameFolderError(ValueError):
    """A frame folder that cannot become a clip; the message is the quarantine reason."""


def layout_root(folder: Path) -> Path:
    """The root of the layout a frame folder ``<root>/imgs/<Class>/<id>`` belongs to."""
    parents = Path(folder).parents
    return parents[min(2, len(parents) - 1)]


def confined(folder: Path, path: Path, what: str) -> Path:
    """``path`` (a file of ``folder``'s clip), or FrameFolderError when it leads out of the
    layout root."""
    reason = escape_reason(layout_root(folder), path, what=what)
    if reason is not None:
        raise FrameFolderError(reason)
    return path


def frame_files(folder: Path) -> list[Path]:
    """The pictures of ``folder`` in frame order (sorted by name; hidden files never count)."""
    pictures = sorted(
        path
        for path in folder.iterdir()
        if not path.name.startswith(".") and path.suffix.lower() in PICTURE_SUFFIXES
    )
    return [path for path in pictures if confined(folder, path, f"frame {path.name}").is_file()]


def declared_count(folder: Path) -> int | None:
    """The count in the folder's ``n_frames`` file, or None when there is none (or it is junk)."""
    path = folder / COUNT_FILE
    if not os.path.lexists(path):
        return None
    confined(folder, path, COUNT_FILE)
    if not path.is_file():
        return None
    try:
        return int(path.read_text(encoding="utf-8", errors="replace").split()[0])
    except (ValueError, IndexError):
        return None


def audio_for(folder: Path) -> Path | None:
    """The sound of a frame folder ``…/imgs/<Class>/<id>``: ``…/mp3/<Class>/<id>.<ext>``."""
    class_dir = folder.parent
    base = class_dir.parent.parent / AUDIO_DIR / class_dir.name
    for suffix in AUDIO_SUFFIXES:
        for spelled in (suffix, suffix.upper()):
            candidate = base / f"{folder.name}{spelled}"
            if os.path.lexists(candidate):
                what = f"audio {AUDIO_DIR}/{class_dir.name}/{candidate.name}"
                if confined(folder, candidate, what).is_file():
                    return candidate
    return None


def file_sha256(path: Path) -> tuple[str, bytes, int]:
    """(hex digest, first 16 bytes, size) of one file, read once."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            if not size:
                head = chunk[:16]
            size += len(chunk)
            digest.update(chunk)
    return digest.hexdigest(), head, size


def looks_like_picture(path: Path, head: bytes) -> bool:
    return head.startswith(_MAGIC[path.suffix.lower()])


def content_sha256(frame_digests: list[str], audio_digest: str | None) -> str:
    """The folder's identity: the frames' hashes in order plus the audio's.

    File names and the ``n_frames`` file are left out, so renaming a folder or its pictures
    keeps the clip id, while changing, adding or reordering a picture changes it.
    """
    digest = hashlib.sha256(HASH_VERSION)
    for item in frame_digests:
        digest.update(item.encode("ascii") + b"\n")
    digest.update(b"audio " + (audio_digest or "none").encode("ascii"))
    return digest.hexdigest()


def read_picture(path: Path) -> av.VideoFrame:
    """One picture decoded by FFmpeg; FrameFolderError names the file when it does not decode."""
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise FrameFolderError(f"undecodable: frame {path.name} holds no picture")
            for frame in container.decode(video=0):
                return frame
    except av.FFmpegError as error:
        message = (getattr(error, "strerror", None) or str(error)).strip().splitlines()
        text = message[0] if message else type(error).__name__
        raise FrameFolderError(f"undecodable: frame {path.name}: {text}") from None
    raise FrameFolderError(f"undecodable: frame {path.name} decodes to no picture")


def audio_duration_s(path: Path) -> float | None:
    """Length of an audio file in seconds (container header, else the decoded samples)."""
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                return None
            if container.duration:
                return container.duration / av.time_base
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            rate = stream.codec_context.sample_rate
            return samples / rate if rate else None
    except av.FFmpegError:
        return None


def frame_rate(fps: float | str, n_frames: int, audio: Path | None) -> float:
    """Frames per second: the dataset's number, or with ``"audio"`` the picture count over the
    audio's duration (30, the usual extraction rate, when there is no usable audio)."""
    if fps != "audio":
        return float(fps)
    seconds = audio_duration_s(audio) if audio is not None else None
    return n_frames / seconds if seconds and seconds > 0 else 30.0
