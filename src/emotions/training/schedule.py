"""The learning-rate schedule: warm-up, then constant or cosine to a floor, per step or per epoch.

Why one closed-form function instead of chained torch schedulers: the three settings we must
be able to state (ours, what the authors' script executes, what their function intends) differ
in shape (linear or quadratic warm-up), in form (constant or cosine), in whether the lr rests
on a non-zero floor for the last epochs, and in how often it changes (every optimizer step or
once per epoch). One function of the position covers all of them, and a test can compare its
values with a list written out by hand.

With ``t`` the position (optimizer steps from 0, or epochs counted from 1), ``T`` the length,
``w`` the warm-up, ``z`` the floor length, ``s`` the start factor and ``f`` the floor::

    t <= w        s + (1 − s) · (t / w)^p          p = 1 linear, 2 quadratic
    t >= T − z    f                                 (cosine only)
    otherwise     f + (1 − f) · ½ (1 + cos(π (t − w) / (T − w − z)))   (cosine)
                  1                                                    (constant)

times the group's lr. This is the shape of ``yolox_warm_cos_lr`` inside ``get_lr_scheduler``
(XuecWu/eMotions, AV-CANet/core/utils.py); the defaults (linear from 0.05, cosine to 0, per
step) are ours and what this repository trained with before the schedule became a setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from emotions.config import ScheduleConfig


@dataclass(frozen=True)
class Schedule:
    """A schedule laid out on concrete units (steps or epochs): ``factor(t)`` scales the lr."""

    total: float  # T
    warmup: float  # w
    floor_length: float  # z
    config: ScheduleConfig

    def factor(self, t: float) -> float:
        """The lr multiplier at position ``t`` (see the module docstring)."""
        cfg = self.config
        if self.warmup > 0 and t <= self.warmup:
            power = 2 if cfg.warmup == "quadratic" else 1
            return cfg.start_factor + (1.0 - cfg.start_factor) * (t / self.warmup) ** power
        if cfg.form == "constant":
            return 1.0
        if t >= self.total - self.floor_length:
            return cfg.floor
        span = max(self.total - self.warmup - self.floor_length, 1e-12)
        progress = min(max((t - self.warmup) / span, 0.0), 1.0)
        return cfg.floor + (1.0 - cfg.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def layout(
    config: ScheduleConfig, warmup_epochs: float, epochs: int, steps_per_epoch: int
) -> Schedule:
    """The schedule in the units its ``step`` setting names.

    Per step, the warm-up is rounded to whole steps and kept below the total, so the peak is
    reached before the run ends (as the chained schedulers this replaces did); per epoch the
    lengths stay fractional, as ``get_lr_scheduler`` takes them.
    """
    if config.step == "epoch":
        return Schedule(float(epochs), warmup_epochs, config.floor_epochs, config)
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    if total > 1:
        warmup = min(warmup, total - 1)
    return Schedule(float(total), float(warmup), config.floor_epochs * steps_per_epoch, config)


def epoch_factors(config: ScheduleConfig, warmup_epochs: float, epochs: int) -> list[float]:
    """The multiplier each epoch trains at, epochs counted from 1 (per-epoch schedules)."""
    schedule = layout(config, warmup_epochs, epochs, 1)
    return [schedule.factor(epoch) for epoch in range(1, epochs + 1)]


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: ScheduleConfig,
    *,
    warmup_epochs: float,
    epochs: int,
    steps_per_epoch: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR the train loop steps once per optimizer step, whatever ``config.step`` is.

    Stepping per optimizer step in both modes keeps the checkpointed scheduler state and a
    mid-epoch resume the same; a per-epoch schedule simply maps the step count to the epoch
    it falls in, counted from 1 as the authors' loop ``for epoch in range(1, n_epochs + 1)``
    in ``main()`` (AV-CANet/main_final_delay.py) counts it.
    """
    schedule = layout(config, warmup_epochs, epochs, steps_per_epoch)
    if config.step == "epoch":
        per_epoch = max(1, steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule.factor(min(step // per_epoch, epochs - 1) + 1)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step))
