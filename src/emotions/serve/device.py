"""Where inference runs: device and precision for the predictor, the service and the monitor.

Training has its own resolver (:mod:`emotions.training.runtime`) because it also joins a DDP
process group; serving never does, and must fail with one clear line (not a CUDA traceback)
when asked for a GPU that is not there. bf16 autocast is the CUDA default: the forward is
memory-bound on the attention scores, which bf16 halves; on a CPU bf16 is slower, so fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from emotions.errors import StageError

InferenceDevice = Literal["auto", "cpu", "cuda"]
InferencePrecision = Literal["auto", "fp32", "bf16"]


class DeviceError(StageError):
    """The configured device cannot be used here."""


@dataclass(frozen=True)
class Placement:
    """The resolved device and whether the forward runs under bf16 autocast."""

    device: torch.device
    bf16: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def resolve_placement(device: str = "auto", precision: str = "auto") -> Placement:
    """``auto`` = CUDA when one is visible; ``bf16`` on CUDA by default, fp32 elsewhere.

    Any other torch device string (``meta``, ``cuda:1``) is taken as given: the meta device is
    how tests prove that every tensor follows the model without a GPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} asked for, but torch sees no CUDA device here "
            "(use --device cpu or serve.device: auto)"
        )
    if precision not in ("auto", "fp32", "bf16"):
        raise DeviceError(f"precision {precision!r}: use auto, fp32 or bf16")
    if precision == "auto":
        bf16 = resolved.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        bf16 = precision == "bf16"
    return Placement(resolved, bf16=bf16)
