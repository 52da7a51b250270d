"""The ``video`` field of ``POST /predict``: an uploaded file that keeps its name and type.

BentoML turns a ``Path`` field into a temporary file with a random name and forgets the part's
declared content type, but the response must name the file the client sent (``path`` in the
`emotions predict` contract) and the type check needs the declared type. ``UploadedVideo`` is a
``Path`` (so BentoML still treats the field as a multipart file) with its own pydantic schema:
it streams the part into a request-private folder, without reading it into memory, and
remembers the name, the declared type and the size.

Where: ``<tmp>/emotions-uploads/<worker pid>/``, not BentoML's shared request folder, so a
worker killed mid-request leaves its uploads in a folder named after a dead process, which
:func:`clean_orphans` removes when a worker starts (a crash used to leave them for good).

The client's file name is data, never a path: it is reduced to a base name with no folders
and no control or invisible format characters (a ``\r\n`` or an ANSI escape would forge log
lines, a right-to-left override would disguise the extension), and that sanitised name is what
the answer's ``path``, the prediction log and error details show. On disk the upload is
``video<ext>`` in a fresh private folder, the extension reduced to letters and digits.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from emotions.atomic import process_alive

logger = logging.getLogger("emotions.serve")

UPLOAD_ROOT = "emotions-uploads"  # under the system's temporary folder
_COPY_CHUNK = 1024 * 1024
_MAX_NAME = 200
_SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,15}")


def _visible(char: str) -> str:
    """Control, format (bidi overrides, zero-width), surrogate and unassigned characters → _."""
    return "_" if unicodedata.category(char).startswith("C") else char


def clean_filename(raw: str | None) -> str:
    """The base name a client sent, safe to show and log: no folders, no control or format
    characters (each becomes ``_``), bounded length; "upload" when nothing is left."""
    name = (raw or "").replace("\\", "/").replace("\x00", "")
    name = "".join(_visible(char) for char in name)
    name = PurePosixPath(name).name.strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode("utf-8")) > _MAX_NAME:
        suffix = PurePosixPath(name).suffix[:16]
        stem = name.encode("utf-8")[: _MAX_NAME - len(suffix.encode("utf-8"))]
        name = stem.decode("utf-8", errors="ignore") + suffix
    return name


def stored_name(filename: str) -> str:
    """The on-disk name of an upload: ``video`` plus its extension when that is plain
    letters and digits (decoders pick a demuxer by content, the extension only helps)."""
    suffix = PurePosixPath(filename).suffix.lower()
    return "video" + (suffix if _SAFE_SUFFIX.fullmatch(suffix) else "")


def upload_root() -> Path:
    return Path(tempfile.gettempdir()) / UPLOAD_ROOT


def worker_folder() -> Path:
    """This process's folder of uploads in progress."""
    folder = upload_root() / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def clean_orphans(root: Path | None = None) -> tuple[int, int]:
    """Remove the upload folders of processes that are gone (and any left under this
    process's id by an earlier one): ``(files, bytes)`` removed."""
    root = upload_root() if root is None else root
    files = size = 0
    if not root.is_dir():
        return 0, 0
    for folder in root.iterdir():
        if not folder.is_dir() or not folder.name.isdigit():
            continue
        pid = int(folder.name)
        if pid != os.getpid() and process_alive(pid):
            continue
        for path in folder.rglob("*"):
            if path.is_file():
                files += 1
                size += path.stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
    if files:
        logger.warning("removed %d orphaned upload(s), %d bytes, under %s", files, size, root)
    return files, size


class UploadedVideo(type(Path())):  # PosixPath: Path itself cannot be subclassed before 3.12
    """A received upload on local disk; ``filename`` is the client's name for it."""

    filename: str
    content_type: str | None
    size: int

    @classmethod
    def save(
        cls, stream: Any, filename: str | None, content_type: str | None, folder: str | None
    ) -> UploadedVideo:
        """Copy ``stream`` (a binary file object) to ``<new dir>/video<ext>``; the client's
        name, cleaned, is kept as ``filename`` only."""
        name = clean_filename(filename)
        target = Path(tempfile.mkdtemp(prefix="upload-", dir=folder)) / stored_name(name)
        if hasattr(stream, "seek"):
            stream.seek(0)
        with open(target, "wb") as out:
            shutil.copyfileobj(stream, out, _COPY_CHUNK)
            size = out.tell()
        video = cls(target)
        video.filename = name
        video.content_type = content_type or None
        video.size = size
        return video

    def discard(self) -> None:
        """Delete the saved file and its private folder (the request folder may be reused)."""
        shutil.rmtree(self.parent, ignore_errors=True)

    @classmethod
    def _validate(cls, value: Any) -> UploadedVideo:
        from starlette.datastructures import UploadFile

        if isinstance(value, UploadedVideo):
            return value
        if isinstance(value, UploadFile):
            return cls.save(value.file, value.filename, value.content_type, str(worker_folder()))
        raise ValueError("'video' must be a file upload (multipart/form-data)")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="json-unless-none"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        # "type": "file" is what BentoML's UI, OpenAPI and Python client read as "upload".
        return {"type": "file", "format": "video", "content_type": "video/*"}
