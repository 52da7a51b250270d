"""What the service refuses, and the one shape every refusal has.

Every client error is ``{"error": code, "detail": text}`` with a 4xx status: ``code`` is stable
for programs, ``detail`` is the sentence a person reads. The checks here are pure functions of
the upload's name, declared type and size, so they are the same in the service and in tests.

What the upload's *content* is, is judged by ingest's own rule (``emotions.media.clipcheck``,
run by ``emotions.media.probe.screen_file`` on the header and the packet count before any
decoding): not a video at all (a still or animated image, sound only) is 415; a video outside
the params' bounds (a declared 16000×16000 frame, ten hours, a single frame, 2 fps) is 422
``clip_out_of_bounds``, not 413, because 413 is the body-size limit the client can fix by
sending fewer bytes, while a 2 KB file declaring a huge picture is small and simply not a clip
we take; a file that does not decode is 422 ``undecodable_video``. A body that does not arrive
within ``serve.body_timeout_s`` is 408.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from emotions.config import ServeConfig
from emotions.media.clipcheck import NOT_VIDEO, OUT_OF_BOUNDS

MISSING_VIDEO = "missing_video"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
UNDECODABLE_VIDEO = "undecodable_video"
CLIP_OUT_OF_BOUNDS = "clip_out_of_bounds"
REQUEST_TIMEOUT = "request_timeout"
INTERNAL_ERROR = "internal_error"
MALFORMED_REQUEST = "malformed_request"
HEADERS_TOO_LARGE = "headers_too_large"
OVERLOADED = "overloaded"
TIMEOUT = "timeout"
CLIENT_CLOSED = "client_closed"
# The codes of refusals the service makes from a status alone (the framework's own 404, 405).
STATUS_CODES = {
    400: MALFORMED_REQUEST,
    404: "not_found",
    405: "method_not_allowed",
    408: REQUEST_TIMEOUT,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    422: MALFORMED_REQUEST,
    431: HEADERS_TOO_LARGE,
    499: CLIENT_CLOSED,
    500: INTERNAL_ERROR,
    503: OVERLOADED,
    504: TIMEOUT,
}


@dataclass(frozen=True)
class Rejection:
    """A request the service will not answer with a prediction."""

    status: int
    error: str
    detail: str

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}


def megabytes(size: float) -> str:
    return f"{size / (1024 * 1024):.2f} MB"


def missing_video() -> Rejection:
    return Rejection(
        400,
        MISSING_VIDEO,
        "no video: send the clip as the multipart/form-data file field 'video' "
        "(curl -F video=@clip.mp4 ...)",
    )


def malformed(detail: str) -> Rejection:
    """A request /predict cannot read (not multipart, no boundary, a broken body)."""
    return Rejection(400, MALFORMED_REQUEST, detail)


def wrong_fields(detail: str) -> Rejection:
    """A readable form without exactly one file field ``video``: the 400 names that field."""
    return Rejection(
        400,
        MISSING_VIDEO,
        f"{detail}; send the clip as the one file field 'video' (curl -F video=@clip.mp4 ...)",
    )


def headers_too_large(what: str) -> Rejection:
    return Rejection(431, HEADERS_TOO_LARGE, what)


def head_timeout(limit_s: float) -> Rejection:
    """The request head (line and headers) did not arrive in time (a half-open client)."""
    return Rejection(
        408,
        REQUEST_TIMEOUT,
        f"the request head did not arrive within {limit_s:g} s (serve.header_timeout_s)",
    )


def overloaded(limit: int) -> Rejection:
    return Rejection(
        503,
        OVERLOADED,
        f"{limit} request(s) already being processed by this worker (serve.max_concurrency); "
        "retry after the Retry-After seconds",
    )


def bodies_full(limit_bytes: int) -> Rejection:
    return Rejection(
        503,
        OVERLOADED,
        f"this worker already holds {limit_bytes / 2**20:g} MB of request bodies "
        "(serve.max_pending_body_mb); retry after the Retry-After seconds",
    )


def timed_out(limit_s: float) -> Rejection:
    return Rejection(
        504, TIMEOUT, f"the request was not answered within {limit_s:g} s (serve.timeout_s)"
    )


def client_closed() -> Rejection:
    """The client went away before an answer (nginx's 499): logged, never sent."""
    return Rejection(499, CLIENT_CLOSED, "the client closed the connection before the answer")


def too_large(size: int | None, limit: int) -> Rejection:
    """``size`` None: the body was streamed without a length and crossed the limit."""
    what = f"the request body ({megabytes(size)})" if size is not None else "the upload"
    return Rejection(
        413,
        PAYLOAD_TOO_LARGE,
        f"{what} exceeds the {megabytes(limit)} limit (serve.max_upload_mb)",
    )


def body_timeout(limit_s: float) -> Rejection:
    """The body did not arrive in time (a stalled or trickling client)."""
    return Rejection(
        408,
        REQUEST_TIMEOUT,
        f"the request body did not arrive within {limit_s:g} s (serve.body_timeout_s)",
    )


def refused_clip(name: str, reason: str, kind: str) -> Rejection:
    """An upload the probe judged not a clip we accept (``kind`` from clipcheck.Refusal)."""
    if kind == NOT_VIDEO:
        return Rejection(415, UNSUPPORTED_MEDIA_TYPE, f"{name}: {reason}")
    if kind == OUT_OF_BOUNDS:
        return Rejection(422, CLIP_OUT_OF_BOUNDS, f"{name}: {reason}")
    return Rejection(422, UNDECODABLE_VIDEO, f"{name}: {reason}")


def check_upload(
    filename: str, content_type: str | None, size: int | None, config: ServeConfig
) -> Rejection | None:
    """None when the upload may be decoded; otherwise why not (413 or 415).

    The extension decides first because it is what a user controls and sees; the part's
    declared content type must agree when the client sent one (curl and browsers do), so a
    text file renamed ``.mp4`` but declared ``text/plain`` is refused without decoding it.
    """
    limit = int(config.max_upload_mb * 1024 * 1024)
    if size is not None and size > limit:
        return too_large(size, limit)
    suffix = PurePosixPath(filename).suffix.lower()
    allowed = ", ".join(config.extensions)
    if suffix not in config.extensions:
        shown = f"'{suffix}'" if suffix else "no extension"
        return Rejection(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"{filename}: {shown} is not a supported video file type (allowed: {allowed})",
        )
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared and not any(fnmatch.fnmatch(declared, p) for p in config.content_types):
        return Rejection(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"{filename}: content type '{declared}' is not a video "
            f"(allowed: {', '.join(config.content_types)})",
        )
    return None
