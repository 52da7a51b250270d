"""Limits on the connection itself, below ASGI: request heads, half-open clients, closing.

Some attacks never become an ASGI request, so no middleware can see them: uvicorn's httptools
protocol (what BentoML 1.4 runs, with no way to configure it) accepts a request head of any
size (a 100 MB header was read to the end), never times out a head that stops half-way (a
thousand half-open sockets stayed open until the file limit broke the server), and closes a
``Connection: close`` request whose body it did not read, so the client gets a reset instead of
the 413 already sent (Python's urllib). :class:`GuardedHttpToolsProtocol` is that protocol with:

- head limits: more than ``serve.max_header_kb`` of request line and headers, or more than
  ``serve.max_headers`` headers, is answered 431 and closed, counted as the bytes arrive, so an
  endless header costs at most the limit;
- a head timeout: a head not complete within ``serve.header_timeout_s`` of the connection (or of
  the previous answer, on a kept-alive one) is answered 408 and closed (silently when nothing
  was sent at all);
- a connection bound: at ``serve.max_connections`` open connections (per worker, and never
  within 256 of the file limit, which :func:`install` raises as far as needed and allowed), a new
  connection first closes the oldest one still waiting for its head, so half-open sockets
  cannot take the descriptors that good clients, the log and the decoders need (one limit per
  client address would refuse every client behind one proxy, and a test's good client on
  loopback);
- a lingering close: a connection closed while the client is still sending a body is first
  half-closed (the answer and a FIN go out) and read to its end, for at most ``LINGER_S`` and
  ``BODY_LINGER_BYTES`` (``HEAD_LINGER_BYTES`` after a refused head), as nginx does, so the
  client reads the answer instead of a reset.

Refusals made here are logged through the service's :class:`~emotions.serve.accounting.Accountant`.

:func:`install` points uvicorn's ``http: auto`` at this class: BentoML builds uvicorn's
``Config`` itself, after importing the service, and passes no ``http`` choice, so uvicorn's
registry of protocol names is the one place to choose the protocol from inside a service.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from emotions.serve.accounting import Accountant
from emotions.serve.limits import Rejection, head_timeout, headers_too_large

LINGER_S = 5.0
# Bytes read and dropped while lingering: after a refused head (431, 408) a client that still
# sends is hostile, so 1 MiB; after an answered request, enough for an over-limit upload.
HEAD_LINGER_BYTES = 1 << 20
BODY_LINGER_BYTES = 256 << 20
_PROTOCOL = "emotions.serve.httpguard:GuardedHttpToolsProtocol"


FD_RESERVE = 256  # descriptors kept for the log, uploads, decoder pipes, the model


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int


def file_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit towards ``wanted`` (as far as the hard limit
    allows) and return the connections it leaves room for."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < target:
        new = target if hard == resource.RLIM_INFINITY else min(target, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


def install(limits: ConnectionLimits, accountant: Accountant | None) -> None:
    """Make uvicorn (in this process) serve HTTP/1.1 with :class:`GuardedHttpToolsProtocol`."""
    from dataclasses import replace

    from uvicorn import config

    limits = replace(limits, max_connections=file_limit(limits.max_connections))
    GuardedHttpToolsProtocol.limits = limits
    GuardedHttpToolsProtocol.accountant = accountant
    config.HTTP_PROTOCOLS["auto"] = _PROTOCOL
    config.HTTP_PROTOCOLS["httptools"] = _PROTOCOL


class _TooManyHeaders(Exception):
    pass


class _GentleTransport:
    """The real transport, except that ``close()`` lingers while a request body is arriving."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_gently()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits, a head timeout and a lingering close."""

    limits: ClassVar[ConnectionLimits | None] = None
    accountant: ClassVar[Accountant | None] = None
    # Open connections of this process, oldest first; the value says "still in its head".
    _open: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lingering = False
        self._linger_budget = BODY_LINGER_BYTES
        self._raw: asyncio.Transport | None = None
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_GentleTransport(transport, self))  # type: ignore[arg-type]
        limits = self.limits
        if limits is not None and len(self._open) >= limits.max_connections:
            waiting = next((c for c in self._open if c._in_head), None)
            if waiting is None:
                self._refuse_connection(limits.max_connections)
                return
            waiting._shed(limits.max_connections)
        self._open[self] = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.pop(self, None)
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            # The answer is out; the rest of the body is read and dropped, up to a budget.
            self._linger_budget -= len(data)
            if self._linger_budget < 0 and self._raw is not None:
                self._raw.close()
            return
        self._unset_keepalive_if_required()
        limits = self.limits
        while data:
            if self._in_head and limits is not None:
                allowance = limits.max_head_bytes - self._head_bytes
                if allowance <= 0:
                    self._refuse_head(headers_too_large(self._too_large(limits)))
                    return
                piece, data = data[:allowance], data[allowance:]
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            if not self._feed(piece):
                return

    def _feed(self, data: bytes) -> bool:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _TooManyHeaders) or self._too_many():
                limit = self.limits.max_headers if self.limits else 0
                self._refuse_head(
                    headers_too_large(f"more than {limit} headers (serve.max_headers)")
                )
            else:
                self._refuse_head(Rejection(400, "malformed_request", "invalid HTTP request"))
            return False
        except httptools.HttpParserError:
            self._refuse_head(Rejection(400, "malformed_request", "invalid HTTP request"))
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _too_many(self) -> bool:
        return self.limits is not None and self._header_count > self.limits.max_headers

    def _too_large(self, limits: ConnectionLimits) -> str:
        return f"the request head exceeds {limits.max_head_bytes // 1024} KiB (serve.max_header_kb)"

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._too_many():
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._arm_head_timer()

    # -- refusals and closing ----------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self.limits is None:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.close_gently()  # an idle connection: nothing was asked, nothing to answer
            return
        self._refuse_head(head_timeout(self.limits.header_timeout_s if self.limits else 0.0))

    def _refuse_head(self, rejection: Rejection, *, linger: bool = True) -> None:
        """Answer a refused head (no ASGI request exists), log it, and close: gently (the
        client may still be sending it) unless ``linger`` is off."""
        if self._raw is None or self._raw.is_closing() or self.lingering:
            return
        body = json.dumps(rejection.body(), separators=(",", ":")).encode("utf-8")
        self._raw.write(
            b"".join(
                [
                    STATUS_LINE[rejection.status],
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self._log(rejection)
        if not linger:
            self._raw.close()
            return
        self._in_body = True  # whatever the client still sends is read and dropped
        self._linger_budget = HEAD_LINGER_BYTES
        self.close_gently()

    def _refuse_connection(self, limit: int) -> None:
        """Every open connection is busy with a request: this one is closed unanswered."""
        self._log(_too_many(limit))
        if self._raw is not None:
            self._raw.close()

    def _shed(self, limit: int) -> None:
        """Make room: this connection has waited longest for its head; answer 503 and close."""
        self._open.pop(self, None)
        self._refuse_head(_too_many(limit), linger=False)  # its descriptor is needed now

    def _log(self, rejection: Rejection) -> None:
        if self.accountant is None:
            return
        try:
            client = self.client[0] if self.client else None
            self.accountant.refusal(rejection, client=client)
        except Exception:
            self.logger.exception("could not log a refused connection")

    def close_gently(self) -> None:
        """Close now, or, while a request body is still arriving, half-close and drain."""
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        if not self._in_body or self.lingering:
            raw.close()
            return
        self.lingering = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        try:
            if raw.can_write_eof():
                raw.write_eof()
            raw.resume_reading()
        except (OSError, RuntimeError):
            raw.close()
            return
        self._linger_timer = self.loop.call_later(LINGER_S, raw.close)

    def eof_received(self) -> bool | None:
        if self.lingering and self._raw is not None:
            self._raw.close()
        return None


def _too_many(limit: int) -> Rejection:
    return Rejection(
        503,
        "too_many_connections",
        f"{limit} connections open in this worker (serve.max_connections); the oldest one "
        "still sending its request head is closed first",
    )
