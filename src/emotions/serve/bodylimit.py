"""ASGI middleware that caps request bodies, in bytes and in time, before anything reads them.

BentoML 1.4 has no request-size limit, and its multipart parsing consumes the whole body before
the API function runs, so the cap has to sit in front of the app: a declared
``Content-Length`` over the limit is answered 413 at once, without reading a byte of the body
(with ``Expect: 100-continue`` the client never even sends it); a body streamed without a
length (chunked) is counted as it arrives and cut off the moment it crosses the limit.

Time: a client that sends the headers and part of the body and then stalls (or trickles a byte
a second, slowloris-style) would hold its request until BentoML's own ``traffic.timeout``
answers with a 5xx. Here the whole body must arrive within ``body_timeout_s`` of the request
start; when it does not, the request is answered 408 and the connection closed. Waiting costs
the service nothing meanwhile: the request is a parked coroutine, so other uploads are decoded
and answered as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from emotions.serve.limits import Rejection, body_timeout, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """Refuse HTTP request bodies larger than ``max_bytes`` with a JSON 413, and bodies that
    take longer than ``body_timeout_s`` (None: no limit) to arrive with a JSON 408.

    ``on_reject`` (optional) is told about every refusal, so the service can log it with the
    other errors.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        on_reject: Callable[[Rejection, Scope], None] | None = None,
        body_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(too_large(declared, self.max_bytes), scope, send)
            return

        loop = asyncio.get_running_loop()
        deadline = None if self.body_timeout_s is None else loop.time() + self.body_timeout_s
        received = 0
        body_done = False
        refusal: Rejection | None = None
        refused = asyncio.Event()
        response_started = False

        async def park(rejection: Rejection) -> Message:
            nonlocal refusal
            refusal = rejection
            refused.set()
            # Park the app here; it is cancelled below. Raising instead would make the
            # framework log a traceback for every refused upload.
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done or deadline is None:
                # After the body, receive() only waits for the client to go: never timed.
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return await park(body_timeout(self.body_timeout_s or 0.0))
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    return await park(too_large(None, self.max_bytes))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, guarded_receive, guarded_send))
        watch = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({app, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not refused.is_set():
                await app  # finished normally (or raised: let it propagate)
                return
            app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app
            if not response_started and refusal is not None:
                # A stalled client will not send the rest: close instead of waiting for it.
                await self._refuse(refusal, scope, send, close=refusal.status == 408)
        finally:
            for task in (app, watch):
                task.cancel()

    async def _refuse(
        self, rejection: Rejection, scope: Scope, send: Send, *, close: bool = False
    ) -> None:
        if self.on_reject is not None:
            self.on_reject(rejection, scope)
        body = json.dumps(rejection.body()).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        if close:
            headers.append((b"connection", b"close"))
        # Otherwise no "connection: close": the server then reads and drops the rest of the
        # body, so a client still sending gets this answer instead of a reset.
        await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
