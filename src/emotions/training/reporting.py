"""What a training run reports per epoch: its perf figures and its DVCLive rows.

Why apart from the loop (emotions.training.trainer): these are the run's outputs for people
(DVCLive curves, printed lines), never part of the state a resume restores, so the loop only
calls them. The perf figures are per device, averaged over the DDP ranks (each all-reduce is a
collective: every rank calls them in the same order). DVCLive is rewritten from the checkpoint's
``logged`` rows on every start, so the logs never hold an epoch the checkpoint does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import default_collate

from emotions.evaluation.metrics import AUTHORS_TEST
from emotions.layout import LIVE
from emotions.models.avcanet import estimate_flops
from emotions.training.predict import move_batch
from emotions.training.runtime import Runtime
from emotions.training.throughput import EpochThroughput, mfu


def reduce_sums(runtime: Runtime, values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (float64); the values themselves on one process."""
    if not runtime.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def throughput_record(
    runtime: Runtime, meter: EpochThroughput, flops: float | None, peak: float | None
) -> dict[str, float]:
    """Per-epoch perf figures for DVCLive: per device, averaged over the ranks."""
    clips, seconds, wait, steps, first_s, first_clips = reduce_sums(
        runtime,
        [
            meter.clips,
            meter.seconds,
            meter.data_wait_s,
            meter.steps,
            meter.first_step_s,
            meter.first_clips,
        ],
    )
    world = runtime.world_size
    per_device = EpochThroughput(
        int(clips / world),
        int(steps / world),
        seconds / world,
        wait / world,
        first_s / world,
        int(first_clips / world),
    )
    record = {
        "perf/clips_per_s": per_device.clips_per_s * world,
        "perf/step_time_s": per_device.step_time_s,
        "perf/first_step_s": per_device.first_step_s,
        "perf/data_wait_share": per_device.data_wait_share,
    }
    utilisation = mfu(flops, per_device.clips_per_s, peak)
    if utilisation is not None:
        record["perf/mfu"] = utilisation
    return record


def forward_flops_per_clip(model: nn.Module, dataset: Any, runtime: Runtime) -> float:
    """Forward FLOPs of one training clip (the first), counted by PyTorch."""
    collate = getattr(dataset, "collate_fn", None) or default_collate
    batch = move_batch(collate([dataset[(0, 0)]]), runtime)
    inputs = {key: batch[key] for key in ("video", "audio", "has_audio")}
    with runtime.autocast():
        return float(estimate_flops(model, inputs))


def rounded(perf: dict[str, float]) -> dict[str, float]:
    """The perf figures as the epoch's printed line shows them."""
    return {key.removeprefix("perf/"): round(value, 4) for key, value in perf.items()}


def live_row(record: dict[str, float], perf: dict[str, float], lr: float) -> dict[str, float]:
    """One epoch's DVCLive metrics by logged name (val_ and the authors' test scores plain,
    the others under train/)."""
    row = {}
    for key, value in record.items():
        if key != "epoch":
            plain = key.startswith(("val_", AUTHORS_TEST))
            row[key if plain else f"train/{key}"] = value
    return {**row, **perf, "lr": lr}


def log_row(live: Any, row: dict[str, float]) -> None:
    for key, value in row.items():
        live.log_metric(key, value)
    live.next_step()


def open_live(model_dir: Path, epoch: int, logged: list[dict[str, float]]) -> Any:
    """DVCLive in the model folder, holding exactly the checkpoint's ``epoch`` epochs: rewritten
    from ``logged`` (a checkpoint from before it was kept: appended to, as then)."""
    from dvclive import Live

    legacy = epoch > 0 and len(logged) != epoch
    if not legacy:
        shutil.rmtree(model_dir / LIVE, ignore_errors=True)
    live = Live(
        dir=str(model_dir / LIVE),
        resume=legacy,
        save_dvc_exp=False,
        dvcyaml=None,
        report=None,
    )
    if legacy:
        live.step = epoch
        return live
    for row in logged:
        log_row(live, row)
    return live
