"""The lr schedule: ours unchanged, and the authors' intended and published lr per epoch.

The expected lists are written here from a reading of ``get_lr_scheduler`` and ``main()``
(XuecWu/eMotions, AV-CANet/core/utils.py and main_final_delay.py), independently of
emotions.training.schedule, and compared with what a real optimizer sees epoch by epoch.
"""

from __future__ import annotations

import math

import pytest
import torch

from emotions.config import ScheduleConfig
from emotions.training.schedule import build_scheduler, epoch_factors

PEAK = 1.5e-4  # opts.py --learning_rate
EPOCHS = 30  # opts.py --n_epochs
AUTHORS = ScheduleConfig(
    warmup="quadratic", start_factor=0.1, floor=0.01, floor_epochs=1.5, step="epoch"
)


def authors_intended(epoch: int) -> float:
    """get_lr_scheduler("cos", lr, 0.01 · lr, 30) at ``epoch``, its defaults spelled out."""
    total = EPOCHS
    warm = min(max(0.05 * total, 1), 3)  # 1.5 epochs
    start = max(0.1 * PEAK, 1e-6)
    tail = min(max(0.05 * total, 1), 15)  # 1.5 epochs
    low = 0.01 * PEAK
    if epoch <= warm:
        return (PEAK - start) * (epoch / warm) ** 2 + start
    if epoch >= total - tail:
        return low
    return low + 0.5 * (PEAK - low) * (
        1 + math.cos(math.pi * (epoch - warm) / (total - warm - tail))
    )


def lrs_per_epoch(
    config: ScheduleConfig, lr: float, warmup_epochs: float, epochs: int, steps: int
) -> list[list[float]]:
    """The lr of every optimizer step, grouped by epoch, as the train loop applies it."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=lr)
    scheduler = build_scheduler(
        optimizer, config, warmup_epochs=warmup_epochs, epochs=epochs, steps_per_epoch=steps
    )
    seen = []
    for _ in range(epochs):
        epoch = []
        for _ in range(steps):
            epoch.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        seen.append(epoch)
    return seen


def test_the_authors_intended_schedule_epoch_by_epoch() -> None:
    expected = [authors_intended(epoch) for epoch in range(1, EPOCHS + 1)]
    # Read off: 0.5 × lr in epoch 1 (1/1.5 of the way up the square), the floor in 29 and 30.
    assert expected[0] == pytest.approx(0.5 * PEAK)
    assert expected[-2:] == [0.01 * PEAK] * 2 and expected[-3] > 0.01 * PEAK
    seen = lrs_per_epoch(AUTHORS, PEAK, 1.5, EPOCHS, steps=3)
    assert all(len(set(epoch)) == 1 for epoch in seen), "one lr per epoch"
    assert [epoch[0] for epoch in seen] == pytest.approx(expected, rel=1e-12)
    assert [PEAK * f for f in epoch_factors(AUTHORS, 1.5, EPOCHS)] == pytest.approx(expected)


def test_the_published_script_trains_at_a_constant_floor() -> None:
    # main() calls set_optimizer_lr(optimizer, lr_scheduler_func, opt.n_epochs) every epoch:
    # the function at epoch 30, the floor, for all 30 epochs.
    published = authors_intended(EPOCHS)
    assert published == pytest.approx(1.5e-6)
    constant = ScheduleConfig(form="constant")
    seen = lrs_per_epoch(constant, published, 0.0, EPOCHS, steps=4)
    assert {lr for epoch in seen for lr in epoch} == {published}


def test_the_default_is_the_schedule_we_trained_with() -> None:
    """Linear warm-up from 0.05 × lr over one epoch, then cosine to 0, per step."""
    epochs, steps, lr = 4, 5, 1e-3
    weight = torch.nn.Parameter(torch.zeros(1))
    old_optimizer = torch.optim.AdamW([weight], lr=lr)
    warm, total = steps, epochs * steps
    old = torch.optim.lr_scheduler.SequentialLR(
        old_optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(old_optimizer, start_factor=0.05, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(old_optimizer, T_max=total - warm),
        ],
        milestones=[warm],
    )
    expected = []
    for _ in range(total):
        expected.append(old_optimizer.param_groups[0]["lr"])
        old_optimizer.step()
        old.step()
    seen = lrs_per_epoch(ScheduleConfig(), lr, 1.0, epochs, steps)
    assert [lr for epoch in seen for lr in epoch] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_a_floor_needs_the_cosine_form() -> None:
    with pytest.raises(ValueError, match="'cosine' only"):
        ScheduleConfig(form="constant", floor=0.01)
