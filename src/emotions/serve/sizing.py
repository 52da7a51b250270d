"""``serve.batch_size``, ``serve.max_latency_ms`` and ``serve.decode_workers`` set to ``auto``.

On a CPU ``auto`` means the fixed values every CPU figure of benchmarks/README.md was measured
with (8, 25 ms, 2): there the forward shares cores with decoding, and a timing at start would
only measure the load of the moment. On a GPU the right sizes depend on the model and the card,
so the service measures them once at start, from the predictor's own forward on synthetic
clips of the model's input shape:

- batch size: the largest power of two (up to ``MAX_BATCH``) where each doubling still cuts the
  forward time per clip by at least ``MIN_GAIN``; past it, a larger batch only adds waiting;
- latency budget: the forward time of one such batch, clamped to ``LATENCY_CLAMP_MS``: waiting
  longer for company than a forward lasts costs the first clip more than batching saves it;
- decode workers: enough to deliver clips at the forward's rate at that batch size (a decode
  costs about ``DECODE_MS_PER_CLIP`` on one core), bounded by this worker's share of the cores,
  one of them left to the worker itself (its event loop and the forward's host side).

A value given as a number is taken as given; only the ``auto`` ones are resolved.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emotions.config import ServeConfig
from emotions.media.decode import DecodedClip

if TYPE_CHECKING:
    from emotions.serve.predictor import Predictor

AUTO = "auto"
# What auto means on a CPU: the sizes every CPU measurement was taken with.
CPU_BATCH_SIZE = 8
CPU_MAX_LATENCY_MS = 25.0
CPU_DECODE_WORKERS = 2
# The measured ladder: batch 1, 2, 4, ... up to this.
MAX_BATCH = 32
# A doubling of the batch must cut the forward time per clip by at least this share.
MIN_GAIN = 0.15
LATENCY_CLAMP_MS = (5.0, 100.0)
# One decode on one CPU thread, at the paper's input size (benchmarks/README.md, the H200
# in-process table); an upload's own cost varies with its resolution and length.
DECODE_MS_PER_CLIP = 200.0
# Timed forwards per batch size (the median is kept), each after one untimed warm-up.
REPEATS = 3
# The ladder stops once one batch's forward takes longer than this (a slow device).
MAX_FORWARD_S = 5.0


@dataclass(frozen=True)
class Sizing:
    """The micro-batcher's and the decoder pool's sizes, and where they came from."""

    batch_size: int
    max_latency_ms: float
    decode_workers: int
    # Per key: "configured", "auto (cpu)", "auto (measured on <device>)", or for the batch of
    # BentoML's batchable API off the CPU "auto (cpu default: declared at import)".
    origin: dict[str, str]
    # Median forward ms per clip by batch size (empty when nothing was measured).
    forward_ms_per_clip: dict[int, float] = field(default_factory=dict)
    decode_ms_per_clip: float | None = None
    cores: int | None = None  # the most decode workers auto may choose here

    def describe(self) -> str:
        """One log line: the sizes and the timings they came from."""
        sizes = (
            f"batch_size {self.batch_size} ({self.origin['batch_size']}), max_latency_ms "
            f"{self.max_latency_ms:g} ({self.origin['max_latency_ms']}), decode_workers "
            f"{self.decode_workers} ({self.origin['decode_workers']})"
        )
        if not self.forward_ms_per_clip:
            return f"sizing: {sizes}"
        timings = ", ".join(f"{b}: {ms:.1f}" for b, ms in self.forward_ms_per_clip.items())
        return (
            f"sizing: {sizes}; forward ms/clip by batch {{{timings}}}, decode "
            f"{self.decode_ms_per_clip:g} ms/clip assumed, {self.cores} core(s) for decoding"
        )

    def report(self) -> dict[str, Any]:
        """The ``batching`` part of ``GET /model`` beyond the batcher's name."""
        return {
            "batch_size": self.batch_size,
            "max_latency_ms": self.max_latency_ms,
            "decode_workers": self.decode_workers,
            "sizing": dict(self.origin),
            "forward_ms_per_clip": {
                str(b): round(ms, 3) for b, ms in self.forward_ms_per_clip.items()
            },
        }


def worker_cores(workers: int = 1) -> int:
    """This service worker's share of the cores the process may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def synthetic_clips(predictor: Predictor, count: int) -> list[DecodedClip]:
    """``count`` decoded clips of the model's input shape (noise frames, a log-mel full of
    sound): the forward's cost depends on the shapes, not on the values."""
    pre = predictor.preprocess
    frames_per_clip = pre.num_frames * pre.positions
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (frames_per_clip, pre.resize, pre.resize, 3), dtype=np.uint8)
    fbank = rng.standard_normal((pre.audio.target_frames, pre.audio.n_mels)).astype(np.float32)
    clip = DecodedClip(
        frames=frames,
        fbank=fbank,
        audio_frames=pre.audio.target_frames,
        has_audio=True,
        duration_s=3.0,
        frame_times_s=np.linspace(0.0, 3.0, frames_per_clip, endpoint=False),
        audio_s=3.0,
    )
    return [clip] * count


def time_forward(predictor: Predictor, batch: int, repeats: int = REPEATS) -> tuple[float, float]:
    """(median ms per clip, median ms per batch) of the predictor's served forward at
    ``batch`` clips, each timing after a warm-up and with the device synchronised."""
    import torch

    clips = synthetic_clips(predictor, batch)
    device = predictor.device

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    predictor.predict_clips_with_views(clips)  # warm-up: allocator, kernels, autotuning
    synchronise()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict_clips_with_views(clips)
        synchronise()
        times.append(time.perf_counter() - started)
    per_batch_ms = statistics.median(times) * 1000.0
    return per_batch_ms / batch, per_batch_ms


def choose_batch(per_clip_ms: dict[int, float], min_gain: float = MIN_GAIN) -> int:
    """The largest measured batch reached from 1 by doublings that each cut the per-clip time
    by at least ``min_gain``."""
    batch = 1
    while (
        2 * batch in per_clip_ms and per_clip_ms[2 * batch] <= (1.0 - min_gain) * per_clip_ms[batch]
    ):
        batch *= 2
    return batch


def measure_ladder(
    timer: Callable[[int], tuple[float, float]],
    max_batch: int = MAX_BATCH,
    min_gain: float = MIN_GAIN,
) -> dict[int, float]:
    """Per-clip ms at batch 1, 2, 4, ... up to ``max_batch``, stopping at the first doubling
    that does not pay (its timing is kept: it is why the ladder stopped), once one batch
    takes longer than ``MAX_FORWARD_S``, or at a batch the device has no memory for (a card
    smaller than the one the model was sized on must still start, with smaller batches)."""
    import torch

    per_clip: dict[int, float] = {}
    batch = 1
    while batch <= max_batch:
        try:
            per_clip[batch], per_batch = timer(batch)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            break
        if batch > 1 and per_clip[batch] > (1.0 - min_gain) * per_clip[batch // 2]:
            break
        if per_batch > MAX_FORWARD_S * 1000.0:
            break
        batch *= 2
    return per_clip


KEYS = ("batch_size", "max_latency_ms", "decode_workers")


def without_measuring(config: ServeConfig, origin: dict[str, str] | None = None) -> Sizing:
    """``config``'s sizes with ``auto`` read as the CPU values: on a CPU, and wherever no model
    is at hand to time (a decode-only benchmark). ``origin`` overrides the reported origins."""
    cpu = {
        "batch_size": CPU_BATCH_SIZE,
        "max_latency_ms": CPU_MAX_LATENCY_MS,
        "decode_workers": CPU_DECODE_WORKERS,
    }
    values = {
        key: cpu[key] if getattr(config, key) == AUTO else getattr(config, key) for key in KEYS
    }
    shown = {key: "auto (cpu)" if getattr(config, key) == AUTO else "configured" for key in KEYS}
    return Sizing(
        batch_size=int(values["batch_size"]),
        max_latency_ms=float(values["max_latency_ms"]),
        decode_workers=int(values["decode_workers"]),
        origin={**shown, **(origin or {})},
    )


def resolve_sizing(
    config: ServeConfig,
    predictor: Predictor,
    *,
    force: bool = False,
    max_batch: int = MAX_BATCH,
    timer: Callable[[int], tuple[float, float]] | None = None,
    cores: int | None = None,
) -> Sizing:
    """The sizes to serve with: ``config``'s numbers as given, its ``auto`` ones resolved for
    ``predictor``'s device (measured off the CPU, or on it with ``force``). With
    ``serve.batcher: bentoml`` the batch size was fixed before the model loaded
    (:func:`static_batch_size`)."""
    auto = {key for key in KEYS if getattr(config, key) == AUTO}
    device = predictor.device.type
    if not auto or (device == "cpu" and not force):
        return without_measuring(config)
    configured = {key: getattr(config, key) for key in KEYS if key not in auto}
    origin = dict.fromkeys(configured, "configured")
    if config.batcher == "bentoml" and "batch_size" in auto:
        auto.discard("batch_size")
        configured["batch_size"] = static_batch_size(AUTO)
        origin["batch_size"] = "auto (cpu default: declared at import)"
        if not auto:
            return without_measuring(config.model_copy(update=configured), origin)
    timer = timer or (lambda batch: time_forward(predictor, batch))
    if "batch_size" in auto:
        per_clip = measure_ladder(timer, max_batch)
        batch = choose_batch(per_clip)
    else:
        batch = int(configured["batch_size"])
        per_clip = {batch: timer(batch)[0]}
    per_batch_ms = per_clip[batch] * batch
    low, high = LATENCY_CLAMP_MS
    latency = (
        float(configured["max_latency_ms"])
        if "max_latency_ms" in configured
        else min(high, max(low, per_batch_ms))
    )
    cores = cores if cores is not None else worker_cores(config.workers)
    bound = max(1, cores - 1)
    workers = (
        int(configured["decode_workers"])
        if "decode_workers" in configured
        else decode_workers_for(per_clip[batch], bound)
    )
    origin.update(dict.fromkeys(auto, f"auto (measured on {device})"))
    return Sizing(
        batch_size=batch,
        max_latency_ms=round(latency, 3),
        decode_workers=workers,
        origin={key: origin[key] for key in KEYS},
        forward_ms_per_clip=per_clip,
        decode_ms_per_clip=DECODE_MS_PER_CLIP,
        cores=bound,
    )


def decode_workers_for(
    forward_ms_per_clip: float, bound: int, decode_ms_per_clip: float = DECODE_MS_PER_CLIP
) -> int:
    """Decoders that together deliver a clip per forward time per clip, within ``bound``."""
    needed = math.ceil(decode_ms_per_clip / max(forward_ms_per_clip, 1e-6))
    return max(1, min(bound, needed))


def predict_batch_size(value: int | str, predictor: Predictor, files: int | None = None) -> int:
    """`emotions predict --batch-size`: a number as given; ``auto`` the CPU default on a CPU,
    else the batch the service would measure for this predictor (the same rule). The ladder
    is timed only when ``files`` (how many will be predicted) exceed the CPU default: with
    fewer, every batch holds them all, and timing forwards would cost more than it saves."""
    if value != AUTO:
        return int(value)
    if predictor.device.type == "cpu" or (files is not None and files <= CPU_BATCH_SIZE):
        return CPU_BATCH_SIZE
    largest = MAX_BATCH if files is None else min(MAX_BATCH, files)
    return choose_batch(measure_ladder(lambda batch: time_forward(predictor, batch), largest))


def static_batch_size(config_value: int | str) -> int:
    """A batch size known before any model is loaded (BentoML's batchable API is declared at
    import, so ``serve.batcher: bentoml`` cannot wait for a measurement): the configured
    number, else the CPU default."""
    return CPU_BATCH_SIZE if config_value == AUTO else int(config_value)
