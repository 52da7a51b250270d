"""Training throughput: clips/s, step time, the share of it spent waiting for data, and MFU.

Why here and in this form: the train loop logs these per epoch (DVCLive ``perf/…``) and
``benchmarks/train.py`` prints them, and both must compute them alike. The meter never reads a
tensor on the host inside the loop (no device sync per step): the time blocked in the data
iterator's ``next`` is the data wait; the device is synchronised once, when the epoch's
figures are read, so the total covers the work still queued on a GPU.

MFU (model-FLOPs utilisation) = achieved model FLOP/s ÷ the device's dense peak, with a
training step counted as 3 × the forward FLOPs (backward ≈ 2 forwards: gradients of the
activations and of the weights), the forward counted by PyTorch's FlopCounterMode
(``emotions.models.avcanet.estimate_flops``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")
TRAIN_FLOPS_PER_FORWARD = 3.0

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's datasheets
# (H100/H200 SXM datasheets, A100 datasheet, L4 datasheet, Ada Lovelace whitepaper for the
# RTX 4090 with FP32 accumulate). "fp32" is the TF32 tensor-core peak: emotions.training.runtime enables
# TF32 matmuls on CUDA, so that is the ceiling fp32 training runs against. Matched by substring
# of torch.cuda.get_device_name(), first match wins (H100 PCIe before the SXM default).
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    # name substring, bf16, fp32 (TF32)
    ("H200", 989.0, 494.7),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.7),
    ("A100", 312.0, 156.0),
    ("L40S", 362.1, 183.0),
    ("L4", 121.0, 60.0),
    ("RTX 4090", 165.2, 82.6),
)


def peak_tflops(device: torch.device, bf16: bool, override: float | None = None) -> float | None:
    """The dense peak of ``device`` at the training precision, or None where unknown (CPU).

    ``override`` (``train.peak_tflops``) wins: the way to get an MFU on a CPU or an
    unlisted GPU.
    """
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bf16_peak, fp32_peak in PEAK_TFLOPS:
        if key in name:
            return bf16_peak if bf16 else fp32_peak
    return None


def mfu(
    forward_flops_per_clip: float | None, clips_per_s: float, peak: float | None
) -> float | None:
    """Model-FLOPs utilisation of one device; None without a FLOP count or a peak."""
    if not forward_flops_per_clip or not peak:
        return None
    return TRAIN_FLOPS_PER_FORWARD * forward_flops_per_clip * clips_per_s / (peak * 1e12)


@dataclass
class EpochThroughput:
    """One device's figures for one epoch of training (validation excluded).

    The first step is timed apart (``first_step_s``, ``first_clips``): it carries one-time
    costs (torch.compile's warm-up, CUDA's lazy init, cuDNN's autotuning, the loader's worker
    start), which would otherwise pass for a slow epoch. clips/s and step time are the steady
    state, after the first step, when there are more.
    """

    clips: int
    steps: int
    seconds: float
    data_wait_s: float
    first_step_s: float = 0.0
    first_clips: int = 0

    @property
    def _steady(self) -> tuple[int, int, float]:
        if self.steps > 1 and self.seconds > self.first_step_s > 0:
            return self.clips - self.first_clips, self.steps - 1, self.seconds - self.first_step_s
        return self.clips, self.steps, self.seconds

    @property
    def clips_per_s(self) -> float:
        clips, _, seconds = self._steady
        return clips / seconds if seconds > 0 else 0.0

    @property
    def step_time_s(self) -> float:
        _, steps, seconds = self._steady
        return seconds / steps if steps else 0.0

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_s / self.seconds if self.seconds > 0 else 0.0


class ThroughputMeter:
    """Times an epoch's iteration: wrap the loader, count clips per step, read at the end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.clips = self.steps = 0
        self.data_wait_s = 0.0
        self.first_step_s = 0.0
        self.first_clips = 0
        self.started = time.perf_counter()

    def wrap(self, batches: Iterable[T]) -> Iterator[T]:
        """Yield the loader's batches, adding the time blocked in ``next`` to the data wait."""
        waited = time.perf_counter()
        iterator = iter(batches)  # (re)starting workers is data wait too
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.data_wait_s += time.perf_counter() - waited
            yield batch
            waited = time.perf_counter()

    def step(self, clips: int) -> None:
        self.clips += clips
        self.steps += 1
        if self.steps == 1:  # one synchronisation per epoch, to time the first step apart
            self._synchronize()
            self.first_step_s = time.perf_counter() - self.started
            self.first_clips = clips

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def finish(self) -> EpochThroughput:
        self._synchronize()
        return EpochThroughput(
            self.clips,
            self.steps,
            time.perf_counter() - self.started,
            self.data_wait_s,
            self.first_step_s,
            self.first_clips,
        )
