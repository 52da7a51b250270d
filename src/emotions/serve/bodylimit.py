"""ASGI middleware that caps request bodies before anything reads them into memory.

BentoML 1.4 has no request-size limit, and its multipart parsing consumes the whole body before
the API function runs, so the cap has to sit in front of the app: a declared
``Content-Length`` over the limit is answered 413 at once, without reading a byte of the body
(with ``Expect: 100-continue`` the client never even sends it); a body streamed without a
length (chunked) is counted as it arrives and cut off the moment it crosses the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from emotions.serve.limits import Rejection, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """Refuse HTTP request bodies larger than ``max_bytes`` with a JSON 413.

    ``on_reject`` (optional) is told about every refusal, so the service can log it with the
    other errors.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        on_reject: Callable[[Rejection, Scope], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(too_large(declared, self.max_bytes), scope, send)
            return

        received = 0
        exceeded = asyncio.Event()
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded.set()
                    # Park the app here; it is cancelled below. Raising instead would make
                    # the framework log a traceback for every oversized upload.
                    await asyncio.Event().wait()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, counting_receive, guarded_send))
        watch = asyncio.ensure_future(exceeded.wait())
        try:
            await asyncio.wait({app, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not exceeded.is_set():
                await app  # finished normally (or raised: let it propagate)
                return
            app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app
            if not response_started:
                await self._refuse(too_large(None, self.max_bytes), scope, send)
        finally:
            for task in (app, watch):
                task.cancel()

    async def _refuse(self, rejection: Rejection, scope: Scope, send: Send) -> None:
        if self.on_reject is not None:
            self.on_reject(rejection, scope)
        body = json.dumps(rejection.body()).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": rejection.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    # No "connection: close": the server then reads and drops the rest of the
                    # body, so a client still sending gets this answer instead of a reset.
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
