"""The ``video`` field of ``POST /predict``: an uploaded file that keeps its name and type.

BentoML turns a ``Path`` field into a temporary file with a random name and forgets the part's
declared content type, but the response must name the file the client sent (``path`` in the
`emotions predict` contract) and the type check needs the declared type. ``UploadedVideo`` is a
``Path`` (so BentoML still treats the field as a multipart file) with its own pydantic schema:
it streams the part into a request-private folder under its original base name, without
reading it into memory, and remembers the name, the declared type and the size.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

_COPY_CHUNK = 1024 * 1024
_MAX_NAME = 200


def clean_filename(raw: str | None) -> str:
    """The base name a client sent, safe to create: no folders, no NULs, bounded length."""
    name = (raw or "").replace("\\", "/").replace("\x00", "")
    name = PurePosixPath(name).name.strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode("utf-8")) > _MAX_NAME:
        suffix = PurePosixPath(name).suffix[:16]
        stem = name.encode("utf-8")[: _MAX_NAME - len(suffix.encode("utf-8"))]
        name = stem.decode("utf-8", errors="ignore") + suffix
    return name


def _request_dir() -> str | None:
    """BentoML's per-request temporary folder (emptied when the request ends), if in one."""
    import bentoml

    try:
        return bentoml.Context().temp_dir
    except LookupError:  # not inside a request (e.g. validated directly in a test)
        return None


class UploadedVideo(type(Path())):  # PosixPath: Path itself cannot be subclassed before 3.12
    """A received upload on local disk; ``filename`` is the client's name for it."""

    filename: str
    content_type: str | None
    size: int

    @classmethod
    def save(
        cls, stream: Any, filename: str | None, content_type: str | None, folder: str | None
    ) -> UploadedVideo:
        """Copy ``stream`` (a binary file object) to ``<new dir>/<clean filename>``."""
        name = clean_filename(filename)
        target = Path(tempfile.mkdtemp(prefix="upload-", dir=folder)) / name
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
            return cls.save(value.file, value.filename, value.content_type, _request_dir())
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
