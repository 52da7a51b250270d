"""The next batches moved to the training device, jpeg batches decoded there, while a step runs.

Why: ``move_batch`` on the step's own thread puts host work between two steps' kernel
launches. torchvision's nvJPEG decode blocks its caller until the batch is decoded (its
``CUDAJpegDecoder::decode_images``, torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp, ends
with ``cudaStreamSynchronize`` on the decoder's stream), and a host-to-device copy queued on
the training stream waits behind the previous step's kernels. :func:`prefetched` runs
``move_batch`` for the next ``depth`` batches in a thread of its own, on a side CUDA stream:
the step's stream waits for each batch on an event (on the device, the host never waits), and
every tensor is recorded on the step's stream, so the caching allocator cannot hand a batch's
memory to the next one while the step still reads it.

Hand-written, not timm's ``PrefetchLoader``: that one overlaps only the copy, in the caller's
thread, of ``(input, target)`` pairs; it hides neither a decode that blocks the host nor a
batch that is a dict.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch

from emotions.training.predict import move_batch
from emotions.training.runtime import Runtime

# How often a producer blocked on a full queue checks whether the consumer has gone.
_POLL_S = 0.1
_END = object()


def prefetches(setting: Literal["auto"] | bool, device: torch.device) -> bool:
    """``train.device_prefetch``: auto = on CUDA, where a step's kernels run while the host
    is free; on a CPU the step itself is the host's work, so a thread buys nothing there."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def prefetched(
    batches: Iterable[dict[str, Any]], runtime: Runtime, depth: int = 2
) -> Iterator[dict[str, Any]]:
    """``batches`` as ``move_batch`` leaves them, in order, each moved (and decoded) up to
    ``depth`` batches ahead in a background thread. A failure there is raised here; leaving
    early stops the thread and waits for it, so a loader is never read by two threads."""
    device = runtime.device
    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        on_side = torch.cuda.stream(side) if side is not None else contextlib.nullcontext()
        try:
            if side is not None:  # a new thread starts on device 0; a DDP rank's is another
                torch.cuda.set_device(side.device)
            with on_side:
                for batch in batches:
                    moved = move_batch(batch, runtime)
                    event = None
                    if side is not None:
                        event = torch.cuda.Event()
                        event.record(side)
                    if not offer((moved, event)):
                        return
        except BaseException as error:  # handed to the consumer, which raises it
            offer(error)
            return
        offer(_END)

    thread = threading.Thread(target=produce, name="device-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            moved, event = item
            if event is not None:
                stream = torch.cuda.current_stream(device)
                stream.wait_event(event)
                for value in moved.values():
                    if torch.is_tensor(value) and value.device.type == "cuda":
                        value.record_stream(stream)
            yield moved
    finally:
        stop.set()
        thread.join()
