"""The `train` stage: one run's model folder, and its curves and summary copied into git.

The training loop is :mod:`emotions.training.trainer`; this stage adds what DVC tracks beside
the model folder: DVCLive's curves and last-epoch summary (`dvc plots show`, `dvc exp show`).
"""

from __future__ import annotations

import os
from typing import Any

from emotions.config import Params
from emotions.layout import LIVE, Layout
from emotions.training.live_curves import publish_live_view
from emotions.training.trainer import train_run


def train(params: Params, run: str, *, resume: bool = True) -> dict[str, Any]:
    """Train ``run`` (resuming its last checkpoint unless told not to) and publish its curves."""
    summary = train_run(params, run, resume=resume)
    if os.environ.get("RANK", "0") != "0":
        return summary  # under torchrun, rank 0 speaks for the job
    spec = params.run(run)
    layout = Layout()
    publish_live_view(
        layout.model_dir(spec.dataset, spec.variant) / LIVE,
        layout.train_curves(spec.dataset, spec.variant),
        layout.train_summary(spec.dataset, spec.variant),
    )
    return summary


def main(params: Params, *, run: str, resume: bool = True) -> None:
    """`emotions train`: :func:`train` with a one-line summary (rank 0 only under torchrun)."""
    summary = train(params, run, resume=resume)
    if os.environ.get("RANK", "0") != "0":
        return
    print(
        f"train {run}: {summary['epochs']} epochs, best val weighted F1 "
        f"{summary['best_val_weighted_f1']:.3f} at epoch {summary['best_epoch']}"
    )
