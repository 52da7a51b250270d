"""Micro-batching: concurrent requests share one forward pass of the model.

Each request decodes its own file in parallel and only the forward pass is batched: a batch
closes when it is full or when its oldest clip has waited ``max_latency_s``, and runs in one
dedicated thread so forward passes never compete for the cores (torch parallelises inside each
one). While a batch runs, the next one fills up, so under load batches grow by themselves.

BentoML can do the batching too, without changing the one-file endpoint: an inner API declared
``@bentoml.api(batchable=True)`` and called from ``predict`` through the service's own client
(``self.to_async.forward_batch(...)``) has its concurrent calls merged by BentoML's adaptive
dispatcher. ``serve.batcher: bentoml`` serves that way (:mod:`emotions.serve.service`). The call
is an in-process HTTP request, though, whose arguments are serialised, so the decoded clip stays
in the worker's memory and only its request id travels; and the dispatcher knows nothing of
requests still decoding. ``benchmarks/serve.py`` measures both in one run (README, Benchmarks);
this one is the default because it won there.

Waiting only pays when more clips are on their way, so requests announce themselves before
they decode (:meth:`MicroBatcher.expect`): a batch is held open only while some announced
request is still decoding. A lone request therefore never waits for company that is not
coming, and ``max_latency_s`` bounds the wait when it is.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[tuple[Out, int]]
    arrived: float


class MicroBatcher(Generic[In, Out]):
    """``await submit(x)`` → ``(run_batch([..., x, ...])[i], batch size)``."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch_size: int,
        max_latency_s: float,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_latency_s = max(0.0, max_latency_s)
        self._pending: collections.deque[_Pending[In, Out]] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._expected = 0  # announced requests that have not submitted (or given up) yet

    def expect(self) -> Expected[In, Out]:
        """Announce a clip that is on its way; submit it through the returned handle (or leave
        the ``with`` block without submitting, and the announcement is withdrawn)."""
        self._expected += 1
        return Expected(self)

    def _withdraw(self) -> None:
        self._expected -= 1
        if self._wakeup is not None:
            self._wakeup.set()  # a batch held open for this request may close now

    async def submit(self, item: In) -> tuple[Out, int]:
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve(), name="micro-batcher")
        future: asyncio.Future[tuple[Out, int]] = loop.create_future()
        self._pending.append(_Pending(item, future, loop.time()))
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].arrived + self.max_latency_s
            while (
                len(self._pending) < self.max_batch_size
                and self._expected > 0
                and loop.time() < deadline
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            count = min(self.max_batch_size, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            batch = [p for p in batch if not p.future.done()]  # the caller went away
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[In, Out]]) -> None:
        try:
            outputs = await loop.run_in_executor(
                self._executor, self.run_batch, [p.item for p in batch]
            )
            if len(outputs) != len(batch):
                raise RuntimeError(f"run_batch returned {len(outputs)} results for {len(batch)}")
        except Exception as error:  # every waiting request gets the failure, the loop goes on
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, output in zip(batch, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result((output, len(batch)))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class Expected(Generic[In, Out]):
    """A request announced to a :class:`MicroBatcher`; used as a context manager."""

    def __init__(self, batcher: MicroBatcher[In, Out]) -> None:
        self._batcher = batcher
        self._open = True

    async def submit(self, item: In) -> tuple[Out, int]:
        self._close()  # withdrawn and enqueued with no await in between: no batch misses it
        return await self._batcher.submit(item)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._batcher._withdraw()

    def __enter__(self) -> Expected[In, Out]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()
