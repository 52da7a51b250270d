"""Where a training process runs: device, precision and the DDP process group.

One place decides CUDA vs CPU, bf16 autocast and whether we were launched by `torchrun`, so the
training loop reads the same on a laptop, a GPU box and a multi-node job. Under torchrun the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR) is set for us; we pick NCCL on GPUs and
gloo on CPUs, which is also how the DDP path is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

DevicePreference = Literal["auto", "cpu", "cuda"]
PrecisionPreference = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Runtime:
    """The resolved execution context of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    bf16: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and shows progress bars."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast where enabled (no loss scaling needed, unlike fp16)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def resolve_runtime(
    device: DevicePreference = "auto", precision: PrecisionPreference = "auto"
) -> Runtime:
    """Pick the device and precision, and join the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
        # TF32 matmuls and cuDNN autotuning: free speed on Ampere/Hopper for fp32 leftovers.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        resolved = torch.device("cpu")
    if precision == "bf16" and not use_cuda:
        bf16 = True  # allowed on CPU for testing the code path; slow there
    else:
        bf16 = precision == "bf16" or (
            precision == "auto" and use_cuda and torch.cuda.is_bf16_supported()
        )
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(resolved, rank=rank, world_size=world_size, local_rank=local_rank, bf16=bf16)


@dataclass(frozen=True)
class CompileChoice:
    """Whether the model is compiled, and why (the train stage prints it)."""

    compiled: bool
    reason: str

    def __bool__(self) -> bool:
        return self.compiled


def resolve_compile(
    setting: Literal["auto"] | bool,
    device: torch.device,
    optimizer_steps: int | None = None,
    min_steps: int = 0,
) -> CompileChoice:
    """Whether to torch.compile the model: ``auto`` = on for a CUDA run of at least
    ``min_steps`` optimizer steps (``train.compile_auto_min_steps``), off elsewhere.

    On CUDA the fused kernels save a share of every step but cost a warm-up of minutes first, so
    a short run (the sample corpus, a smoke test) finishes sooner eager; on a CPU inductor's C++
    build of the whole model costs more than a small run trains (and ``meta`` cannot run
    kernels). ``optimizer_steps`` None (not known) counts as long.
    """
    if setting != "auto":
        return CompileChoice(bool(setting), f"train.compile: {str(setting).lower()}")
    if device.type != "cuda":
        return CompileChoice(False, f"auto: off on {device.type}")
    if optimizer_steps is not None and optimizer_steps < min_steps:
        return CompileChoice(
            False,
            f"auto: {optimizer_steps} optimizer steps < train.compile_auto_min_steps "
            f"{min_steps}, too few to repay the warm-up",
        )
    steps = "an unknown number of" if optimizer_steps is None else str(optimizer_steps)
    return CompileChoice(True, f"auto: {steps} optimizer steps on cuda")


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(runtime: Runtime, value: object) -> object:
    """Rank 0's value, on every rank (e.g. the early-stopping decision)."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first(runtime: Runtime) -> Iterator[None]:
    """Let rank 0 do a side effect (create a folder, read a cache) before the others."""
    if runtime.distributed and not runtime.is_main:
        dist.barrier()
    yield
    if runtime.distributed and runtime.is_main:
        dist.barrier()
