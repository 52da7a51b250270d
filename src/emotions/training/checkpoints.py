"""Save and load training state safely.

Checkpoints hold only tensors and plain Python values so they load with
``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot run code on load. Every
write goes to a temporary file first and is renamed, so a run killed while saving leaves the
previous checkpoint intact, which is what makes resuming after a kill safe.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotions.atomic import atomic_write, atomic_write_json
from emotions.diskspace import disk_full_errors, require_space
from emotions.errors import StageError, require_input

__all__ = [
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_json",
    "capture_rng",
    "load_checkpoint",
    "restore_rng",
]


# The zip container's headers and the pickled non-tensor values, beyond the tensors' bytes.
SAVE_OVERHEAD = 1 << 20


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists and tuples): what a save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save ``obj`` atomically after checking the disk can hold it; a full disk met while
    writing is a NoSpaceError, not torch's ``unexpected pos``."""
    need = tensor_bytes(obj) + SAVE_OVERHEAD
    path.parent.mkdir(parents=True, exist_ok=True)
    require_space(path.parent, need)

    def write(tmp: Path) -> None:
        with disk_full_errors(tmp, need):  # judged while the partial temporary still exists
            torch.save(obj, tmp)

    with disk_full_errors(path, need):
        atomic_write(path, write)


class CheckpointError(StageError, ValueError):
    """A checkpoint that cannot be loaded (truncated, corrupt or foreign)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with the safe unpickler; a clear error if it is missing or foreign."""
    require_input(path, "emotions train")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({first}); train again (`emotions train`)"
        ) from None


def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy and torch as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
