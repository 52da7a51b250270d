"""Decode uploads in a pool of worker processes, each clip with a deadline.

Decoders hang and crash on hostile files (decord #242, #373). In a thread, a hung decode would
hold its thread and its share of the service forever; in a pebble worker process it is killed
at ``timeout_s`` and the request gets a 422, while the pool replaces the worker. Processes also
decode in parallel without contending for the GIL. A decoded clip is small (T frames of
R×R×3 bytes plus a log-mel), so sending it back costs about a millisecond.

Before decoding, the worker screens the file with ingest's own checks
(:func:`emotions.media.probe.screen_file`: header and packet count, nothing decoded), so a still
image, an audio file or a header declaring a 16000×16000 frame or ten hours never reaches the
decoder; :class:`DecodeFailed` then carries the 415/422 refusal to answer with. A clip whose
sampled frames would cost more than ``ingest.max_decode_pixels`` to decode is refused by
``decode_clip`` from its keyframe index, before a frame is decoded: a small file of thousands of
huge frames after one keyframe gets its 422 in milliseconds instead of holding a worker until
``timeout_s``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from pebble import ProcessExpired, ProcessPool

from emotions.config import PreprocessConfig
from emotions.media.clipcheck import OUT_OF_BOUNDS, ClipBounds
from emotions.media.decode import (
    DecodedClip,
    DecodeError,
    DecodeTooCostly,
    decode_clip,
    decode_limit,
)
from emotions.media.probe import screen_and_index
from emotions.serve.limits import UNDECODABLE_VIDEO, Rejection, refused_clip


class DecodeFailed(Exception):
    """The upload is not a video this service can read; the message names the file and
    ``rejection`` is the answer (422 unless the screen said otherwise)."""

    def __init__(self, message: str, rejection: Rejection | None = None) -> None:
        super().__init__(message)
        self.rejection = rejection or Rejection(422, UNDECODABLE_VIDEO, message)


class NotAClip(Exception):
    """Raised in the worker: the screen refused the file (picklable: plain args)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason, kind)
        self.reason, self.kind = reason, kind


def _init_worker() -> None:
    import torch

    # The pool has one process per decode slot already; more threads would oversubscribe.
    torch.set_num_threads(1)


def _decode(path: str, config: PreprocessConfig, bounds: ClipBounds | None) -> DecodedClip:
    refusal, index = screen_and_index(path, bounds)
    if refusal is not None:
        raise NotAClip(refusal.reason, refusal.kind)
    try:
        return decode_clip(
            path, config, threads=1, max_decode_pixels=decode_limit(bounds), index=index
        )
    except DecodeTooCostly as refused:
        raise NotAClip(refused.reason, OUT_OF_BOUNDS) from None


def _ready() -> bool:
    return True


class DecoderPool:
    """``await decode(path)`` in one of ``workers`` processes, killed after ``timeout_s``;
    ``bounds`` are the clip bounds uploads are screened against (None: the image rule only)."""

    def __init__(
        self,
        config: PreprocessConfig,
        *,
        workers: int,
        timeout_s: float,
        bounds: ClipBounds | None = None,
    ) -> None:
        self.config = config
        self.bounds = bounds
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
        future = self._pool.schedule(
            _decode, args=(str(path), self.config, self.bounds), timeout=self.timeout_s
        )
        try:
            return await asyncio.wrap_future(future)
        except NotAClip as refused:
            rejection = refused_clip(name, refused.reason, refused.kind)
            raise DecodeFailed(rejection.detail, rejection) from None
        except DecodeError as error:
            # The message may quote the private temporary path; the client knows its own name.
            # The upload is stored as video<ext>: say the client's name instead.
            message = str(error).replace(str(path), name).replace(Path(path).name, name)
            raise DecodeFailed(message) from None
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
