"""Decode uploads in a pool of worker processes, each clip with a deadline.

Decoders hang and crash on hostile files (decord #242, #373). In a thread, a hung decode would
hold its thread and its share of the service forever; in a pebble worker process it is killed
at ``timeout_s`` and the request gets a 422, while the pool replaces the worker. Processes also
decode in parallel without contending for the GIL. A decoded clip is small (T frames of
R×R×3 bytes plus a log-mel), so sending it back costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from pebble import ProcessExpired, ProcessPool

from emotions.config import PreprocessConfig
from emotions.data.decode import DecodedClip, DecodeError, decode_clip


class DecodeFailed(Exception):
    """The upload is not a video this service can read; the message names the file."""


def _init_worker() -> None:
    import torch

    # The pool has one process per decode slot already; more threads would oversubscribe.
    torch.set_num_threads(1)


def _decode(path: str, config: PreprocessConfig) -> DecodedClip:
    return decode_clip(path, config, threads=1)


def _ready() -> bool:
    return True


class DecoderPool:
    """``await decode(path)`` in one of ``workers`` processes, killed after ``timeout_s``."""

    def __init__(self, config: PreprocessConfig, *, workers: int, timeout_s: float) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.workers = workers
        self._pool = ProcessPool(
            max_workers=workers,
            context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    def warm_up(self, timeout_s: float = 300.0) -> None:
        """Start every worker and import the decoders now, so the first request is not slow."""
        futures = [self._pool.schedule(_ready, timeout=timeout_s) for _ in range(self.workers)]
        for future in futures:
            future.result()

    async def decode(self, path: Path, name: str) -> DecodedClip:
        future = self._pool.schedule(_decode, args=(str(path), self.config), timeout=self.timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except DecodeError as error:
            # The message may quote the private temporary path; the client knows its own name.
            raise DecodeFailed(str(error).replace(str(path), name)) from None
        except FutureTimeout:
            raise DecodeFailed(
                f"{name}: decoding took longer than {self.timeout_s:g} s and was stopped"
            ) from None
        except ProcessExpired as error:
            raise DecodeFailed(
                f"{name}: the decoder crashed on this file (exit code {error.exitcode})"
            ) from None
        except OSError as error:
            raise DecodeFailed(f"{name}: cannot be read ({error})") from None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
