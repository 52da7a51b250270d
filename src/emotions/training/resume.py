"""Where a training run starts: fresh, from its last checkpoint, or not at all (reused).

Why apart from the loop (emotions.training.trainer): last.pt's contents are written and read
here, beside what decides whether they may be used. A checkpoint resumes only a run on the same
params and data (``fingerprint``); a finished one is reused only by the code that trained it
(``code_digest``), so a kill after training but before DVC recorded the stage costs no
retraining, while a code change does retrain.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotions.cache.format import INDEX, STATS
from emotions.config import Params
from emotions.layout import LAST, TRAIN_SUMMARY, RunPaths
from emotions.training.checkpoints import (
    CheckpointError,
    atomic_write_json,
    capture_rng,
    load_checkpoint,
)
from emotions.training.reporting import open_live
from emotions.training.runtime import Runtime


def code_digest() -> str:
    """The package's source: a finished checkpoint is reused only by the code that trained it
    (DVC reruns train when its code changes; that rerun must train, not reuse)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]  # src/emotions
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(params: Params, paths: RunPaths) -> str:
    """What the checkpoint was trained on; a resume with a different fingerprint starts fresh."""
    digest = hashlib.sha256()
    for section in (params.model, params.loss, params.train, params.preprocess):
        digest.update(section.model_dump_json().encode())
    digest.update(str(params.seed).encode())
    if params.evaluate.protocol != "val_selected":  # the history then holds test scores too
        digest.update(params.evaluate.protocol.encode())
    for path in (paths.split, paths.cache / INDEX, paths.cache / STATS):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


@dataclass
class TrainState:
    """The counters a resume restores beside the weights (last.pt holds them too)."""

    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, float]] | None = None
    # Exactly what DVCLive got per epoch (history plus lr and perf/): a resume rewrites the
    # logs from these, so the logs never hold an epoch the checkpoint does not.
    logged: list[dict[str, float]] = field(default_factory=list)
    # Mid-epoch checkpoints: optimizer steps done in epoch `epoch` and their losses.
    step_in_epoch: int = 0
    epoch_losses: list[float] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> TrainState:
        """The counters of an unfinished last.pt (its mid-epoch and logged fields optional:
        older checkpoints lack them)."""
        return cls(
            epoch=checkpoint["epoch"],
            best_score=checkpoint["best_score"],
            best_epoch=checkpoint["best_epoch"],
            bad_epochs=checkpoint["bad_epochs"],
            history=list(checkpoint["history"]),
            step_in_epoch=checkpoint.get("step_in_epoch", 0),
            epoch_losses=list(checkpoint.get("epoch_losses", [])),
            logged=list(checkpoint.get("logged", [])),
        )


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be resumed (``fingerprint``) or reused (``code`` too)."""

    fingerprint: str
    code: str


def last_checkpoint(
    state: TrainState,
    identity: RunIdentity,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """last.pt's contents: everything a resume needs, and what it must match to be used."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "epoch_losses": state.epoch_losses,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "finished": state.finished,
        "history": state.history,
        "logged": state.logged,
        "fingerprint": identity.fingerprint,
        "code": identity.code,
    }


def resumable_checkpoint(paths: RunPaths, identity: RunIdentity) -> dict[str, Any] | None:
    """The run's last.pt when it was trained on these params and data; None starts fresh."""
    last_path = paths.model_dir / LAST
    if not last_path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(last_path)
    except CheckpointError as error:
        raise CheckpointError(f"{error} (or --no-resume: start over)") from None
    if checkpoint.get("fingerprint") != identity.fingerprint:
        return None  # another run's past: start fresh
    return checkpoint


def reuse_finished(
    run: str, paths: RunPaths, runtime: Runtime, checkpoint: dict[str, Any]
) -> dict[str, Any]:
    """The summary of a run whose finished checkpoint matches (params, data and code): a kill
    after training but before DVC recorded it must not cost a retraining."""
    history = list(checkpoint["history"])
    summary_path = paths.model_dir / TRAIN_SUMMARY
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary.get("history") != history:
        summary = {
            "run": run,
            "epochs": checkpoint["epoch"],
            "best_epoch": checkpoint["best_epoch"],
            "best_val_weighted_f1": checkpoint["best_score"],
            "seconds": 0.0,
            "device": str(runtime.device),
            "world_size": runtime.world_size,
            "bf16": runtime.bf16,
            "history": history,
        }
    if runtime.is_main:
        print(
            f"train {run}: {paths.model_dir / LAST} already finished (epoch "
            f"{checkpoint['epoch']}) with these params, data and code; reusing it "
            "(--no-resume trains again)"
        )
        if checkpoint.get("logged") is not None and len(checkpoint["logged"]) == len(history):
            open_live(paths.model_dir, checkpoint["epoch"], list(checkpoint["logged"])).end()
        atomic_write_json(summary, summary_path)
    return summary
