"""Is a ``POST /predict`` body one multipart form with exactly one file field ``video``?

BentoML's form parser answers 500 for forms it cannot read (no boundary, a binary field under
another name, thousands of fields), and for a *text* field ``video`` it would download the URL
the text names. So the gate (:mod:`emotions.serve.gate`) checks the received body here first,
with the same parser Starlette uses (python-multipart), streaming, and refuses everything but
one file part ``video`` with a 400 that names the field. Nothing is stored: parts are only
counted and their headers read.
"""

from __future__ import annotations

from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from emotions.serve.limits import Rejection, malformed, wrong_fields

FIELD = "video"
MAX_PARTS = 8  # far above the one part we take; beyond it the form is refused unread
MAX_PART_HEADERS = 8 * 1024  # bytes of one part's headers (a 15,000-character file name)
_CHUNK = 1 << 20


class _Parts:
    """Callbacks of python-multipart: each part's name and whether it is a file."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, bool]] = []
        self.problem: str | None = None
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._size = 0

    def part_begin(self) -> None:
        self._headers, self._size = {}, 0
        if len(self.parts) >= MAX_PARTS:
            self.problem = f"more than {MAX_PARTS} form fields"

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self._grow(end - start)

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._grow(end - start)

    def header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self.parts.append((name, b"filename" in options))

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > MAX_PART_HEADERS:
            self.problem = f"a form part's headers exceed {MAX_PART_HEADERS} bytes"


def check_form(content_type: str | None, body: IO[bytes]) -> Rejection | None:
    """None when ``body`` (rewound afterwards) is a form with one file field ``video``."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1") or "no content type"
        return wrong_fields(f"the body is {shown}, not multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        return malformed("multipart/form-data without a boundary")
    parts = _Parts()
    callbacks = {
        "on_part_begin": parts.part_begin,
        "on_header_field": parts.header_field,
        "on_header_value": parts.header_value,
        "on_header_end": parts.header_end,
        "on_headers_finished": parts.headers_finished,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        body.seek(0)
        while parts.problem is None and (chunk := body.read(_CHUNK)):
            parser.write(chunk)
        if parts.problem is None:
            parser.finalize()
    except (FormParserError, ValueError) as error:
        return malformed(f"unreadable multipart body: {error}")
    finally:
        body.seek(0)
    if parts.problem is not None:
        return malformed(parts.problem)
    return _judge(parts.parts)


def _judge(parts: list[tuple[str, bool]]) -> Rejection | None:
    videos = [is_file for name, is_file in parts if name == FIELD]
    others = sorted({name for name, _ in parts if name != FIELD})
    if not videos:
        got = f"fields {', '.join(repr(n) for n in others)}" if others else "no field"
        return wrong_fields(f"no field '{FIELD}' (got {got})")
    if len(videos) > 1:
        return wrong_fields(f"{len(videos)} fields '{FIELD}'")
    if not videos[0]:
        return wrong_fields(f"the field '{FIELD}' is text, not a file")
    if others:
        return wrong_fields(f"unexpected field(s) {', '.join(repr(n) for n in others)}")
    return None
