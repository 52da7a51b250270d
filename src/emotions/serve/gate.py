"""The ASGI gate in front of the app: bodies first, then a slot, then one record per request.

BentoML's own concurrency limit sits *outside* every middleware a service adds, so a client
that sends headers and then stalls holds one of its slots while its body trickles in; 32 such
sockets refused every upload for ``body_timeout_s``. The gate therefore owns admission
itself (the service gives BentoML no ``max_concurrency``), in this order:

1. ``GET /docs.json``: the service's OpenAPI document, completed (:mod:`emotions.serve.openapi`).
2. The body: a declared ``Content-Length`` over ``serve.max_upload_mb`` is 413 at once; the body
   is otherwise read into a spooled temporary file (memory up to 64 KiB, then an unnamed file)
   within ``serve.body_timeout_s`` of the request start (408 and close), and cut off at the
   limit (413). Waiting costs a parked coroutine, never a slot. The bytes a worker holds in
   bodies (arrived, not yet answered) are bounded by ``serve.max_pending_body_mb``: beyond it
   503 with ``Retry-After``, so a flood of large uploads cannot fill the disk.
   Only bytes that arrived count: a client that declares a large body and stalls holds none.
3. ``POST /predict``: the form must be one file field ``video`` (:mod:`emotions.serve.formcheck`),
   else 400, before BentoML's parser sees it.
4. A slot (``serve.max_concurrency`` per service, split over workers) or 503 with
   ``Retry-After``; probes and reads (GET, HEAD) need none.
5. The app, with the body replayed, within ``serve.timeout_s`` of the request start (504).

Around all of it: every error response, the framework's own included (404, 405, its 400 and
500), leaves in the project's ``{"error", "detail"}`` shape, and each request to ``/predict``
and every refused request anywhere is one prediction-log record (:mod:`emotions.serve.accounting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from typing import IO, Any

from emotions.serve import accounting
from emotions.serve.accounting import Accountant, RequestAccount
from emotions.serve.formcheck import check_form
from emotions.serve.limits import (
    STATUS_CODES,
    Rejection,
    bodies_full,
    body_timeout,
    client_closed,
    overloaded,
    timed_out,
    too_large,
)
from emotions.serve.prediction_log import error_record

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("emotions.serve")

PROBES = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
READS = frozenset({"GET", "HEAD", "OPTIONS"})
SPOOL_MEMORY = 64 << 10  # per body in memory; beyond it an unnamed temporary file
REPLAY_CHUNK = 1 << 20
MAX_DETAIL = 500


class Admission:
    """The slots of one worker: taken without waiting, or the request is refused 503."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.busy = 0

    @property
    def free(self) -> int:
        return self.slots - self.busy

    def try_take(self) -> bool:
        if self.busy >= self.slots:
            return False
        self.busy += 1
        return True

    def give_back(self) -> None:
        self.busy -= 1


class BodyBudget:
    """The bytes of request bodies one worker holds at once (arrived, not yet answered).

    Counted as they arrive, not as declared: reserving a declared Content-Length would let
    stalled clients that send nothing starve every upload, the attack the slots were moved
    behind the body for. One event loop per worker, so no lock.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held = 0

    def try_take(self, size: int) -> bool:
        if self.held + size > self.limit_bytes:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class _Refused(Exception):
    """Raised inside the gate to answer a refusal (and close the connection if asked)."""

    def __init__(self, rejection: Rejection, *, close: bool = False, headers=()) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection
        self.close = close
        self.headers = list(headers)


class Gate:
    """See the module docstring; one instance wraps the service's ASGI app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        accountant: Accountant,
        admission: Admission,
        max_bytes: int,
        bodies: BodyBudget,
        body_timeout_s: float,
        timeout_s: float,
        retry_after_s: int,
        predict_path: str = "/predict",
        openapi: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.accountant = accountant
        self.admission = admission
        self.max_bytes = max_bytes
        self.bodies = bodies
        self.body_timeout_s = body_timeout_s
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.predict_path = predict_path
        self.openapi = openapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        account, token = accounting.begin()
        logged = False

        def log_once() -> None:
            # Before the last byte leaves: a client that has its answer finds it logged.
            nonlocal logged
            if not logged:
                logged = True
                self._account(scope, account, response)

        response = _Response(send, log_once)
        try:
            await self._handle(scope, receive, response, account)
        except _Refused as refused:
            if not response.started:
                await response.refuse(refused.rejection, refused.close, refused.headers)
        except _ClientGone:
            pass  # nobody to answer: logged as 499
        except asyncio.CancelledError:
            # BentoML's own timeout (a backstop behind ours) or the server shutting down.
            response.status = response.status or 504
            raise
        except Exception:
            logger.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if not response.started:
                await response.refuse(Rejection(500, "internal_error", "internal error"))
        finally:
            accounting.end(token)
            log_once()

    async def _handle(
        self, scope: Scope, receive: Receive, response: _Response, account: RequestAccount
    ) -> None:
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if method == "GET" and path == "/docs.json" and self.openapi is not None:
            await response.json(200, self.openapi())
            return
        body, held = await self._read_body(scope, receive, account)
        try:
            if method == "POST" and path == self.predict_path:
                assert body is not None  # a POST without a body reads as empty
                rejection = check_form(_header(scope, b"content-type"), body)
                if rejection is not None:
                    raise _Refused(rejection)
            if path in PROBES or method in READS:
                await self._run(scope, body, receive, response, account)
                return
            if not self.admission.try_take():
                retry = [(b"retry-after", str(self.retry_after_s).encode("ascii"))]
                raise _Refused(overloaded(self.admission.slots), headers=retry)
            try:
                await self._run(scope, body, receive, response, account)
            finally:
                self.admission.give_back()
        finally:
            if body is not None:
                body.close()
            self.bodies.give_back(held)

    async def _run(
        self,
        scope: Scope,
        body: IO[bytes] | None,
        receive: Receive,
        response: _Response,
        account: RequestAccount,
    ) -> None:
        left = self.timeout_s - account.elapsed_ms() / 1000.0
        replay = _replay(body, receive) if body is not None else receive
        try:
            await asyncio.wait_for(self.app(scope, replay, response.send), max(0.0, left))
        except TimeoutError:
            if not response.started:
                raise _Refused(timed_out(self.timeout_s), close=True) from None
            raise

    async def _read_body(
        self, scope: Scope, receive: Receive, account: RequestAccount
    ) -> tuple[IO[bytes] | None, int]:
        """The whole body, spooled, and its size taken from the body budget (the caller
        closes the one and gives back the other); or a refusal. None when there is no body."""
        declared = _content_length(scope)
        chunked = b"chunked" in (_header(scope, b"transfer-encoding") or "").encode().lower()
        if declared is not None and declared > self.max_bytes:
            raise _Refused(too_large(declared, self.max_bytes))
        if not declared and not chunked and scope.get("method") != "POST":
            return None, 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s - account.elapsed_ms() / 1000.0
        # Handed to the caller, which closes it.
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        received = 0
        try:
            while True:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise _Refused(body_timeout(self.body_timeout_s), close=True) from None
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                if received + len(chunk) > self.max_bytes:
                    raise _Refused(too_large(None, self.max_bytes))
                if not self.bodies.try_take(len(chunk)):
                    retry = [(b"retry-after", str(self.retry_after_s).encode("ascii"))]
                    raise _Refused(bodies_full(self.bodies.limit_bytes), headers=retry)
                received += len(chunk)
                spool.write(chunk)
                if not message.get("more_body", False):
                    spool.seek(0)
                    return spool, received
        except BaseException:
            spool.close()
            self.bodies.give_back(received)
            raise

    def _account(self, scope: Scope, account: RequestAccount, response: _Response) -> None:
        """One record for a /predict request, or for a refusal anywhere."""
        try:
            status = response.status or client_closed().status
            record = account.record
            if record is None:
                path = scope.get("path")
                if path in PROBES or (status < 400 and path != self.predict_path):
                    return  # a probe, /model, the docs: not a prediction and not refused
                if response.status is None:
                    rejection = client_closed()
                else:
                    rejection = response.rejection or _rejection_for(status, "")
                record = error_record(
                    request_id=account.request_id,
                    rejection=rejection,
                    latency_ms=account.elapsed_ms(),
                )
                record["method"] = scope.get("method")
                record["path"] = scope.get("path")
            if record.get("status") == "ok":
                self.accountant.answered(record)
            else:
                self.accountant.refused(record)
        except Exception:  # the log must never turn an answered request into a failure
            logger.exception("could not log request %s", account.request_id)


class _ClientGone(Exception):
    """The client disconnected while its body was being read."""


class _Response:
    """The gate's view of the response: its status, and every error body in our shape."""

    def __init__(self, send: Send, before_end: Callable[[], None]) -> None:
        self._send = send
        self._before_end = before_end
        self.status: int | None = None
        self.started = False
        self.rejection: Rejection | None = None
        self._held: Message | None = None
        self._body = b""
        self._length: int | None = None  # the declared Content-Length of a passed-on answer
        self._sent = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            if self.status >= 400:
                self._held = message  # rewritten once its body is known
                return
            for name, value in message.get("headers", []):
                if name.lower() == b"content-length":
                    self._length = int(value)
            await self._send(message)
            return
        if message["type"] == "http.response.body" and self._held is not None:
            self._body += message.get("body", b"")
            if message.get("more_body", False):
                return
            held, self._held = self._held, None
            await self._send_error(held, self._body)
            return
        if message["type"] == "http.response.body":
            self._sent += len(message.get("body", b""))
            last = not message.get("more_body", False)
            # With a Content-Length the client is done at its last byte, whatever follows.
            if last or (self._length is not None and self._sent >= self._length):
                self._before_end()
        await self._send(message)

    async def _send_error(self, start: Message, body: bytes) -> None:
        status = int(start["status"])
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        shaped = _shaped(body)
        if shaped is None:
            rejection = _rejection_for(status, _detail_of(body))
            body = json.dumps(rejection.body(), separators=(",", ":")).encode("utf-8")
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/json"))
        else:
            rejection = Rejection(status, shaped["error"], shaped["detail"])
        self.rejection = rejection
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await self._send({**start, "headers": headers})
        self._before_end()
        await self._send({"type": "http.response.body", "body": body})

    async def json(self, status: int, payload: Any, headers=()) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    *headers,
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def refuse(self, rejection: Rejection, close: bool = False, headers=()) -> None:
        extra = list(headers) + ([(b"connection", b"close")] if close else [])
        # Without "connection: close" the server reads and drops the rest of a body, so a
        # client still sending gets this answer instead of a reset.
        self.rejection = rejection
        await self.json(rejection.status, rejection.body(), extra)


def _shaped(body: bytes) -> dict[str, str] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if (
        isinstance(value, dict)
        and set(value) == {"error", "detail"}
        and all(isinstance(v, str) for v in value.values())
    ):
        return value
    return None


def _detail_of(body: bytes) -> str:
    """The framework's message: its JSON ``error`` (and ``detail``), or its text."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
    else:
        if isinstance(value, dict):
            parts = [value.get("error"), value.get("detail")]
            text = "; ".join(p if isinstance(p, str) else json.dumps(p) for p in parts if p)
        else:
            text = json.dumps(value)
    return text[:MAX_DETAIL]


def _rejection_for(status: int, detail: str) -> Rejection:
    from http import HTTPStatus

    code = STATUS_CODES.get(status, "client_error" if status < 500 else "server_error")
    if not detail:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = f"HTTP {status}"
    return Rejection(status, code, detail)


def _replay(body: IO[bytes], receive: Receive) -> Receive:
    """A receive() that hands the app the spooled body, then waits on the client as usual."""
    body.seek(0, 2)
    size = body.tell()
    body.seek(0)
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(REPLAY_CHUNK)
        more = body.tell() < size
        done = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return int(value)
    return None
