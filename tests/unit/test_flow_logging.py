"""What the flows log of a stage's output: every line, but a progress bar only every 25 %."""

from __future__ import annotations

from flows.dvc_run import progress_throttled


def _bar(desc: str, done: int, total: int) -> str:
    percent = done * 100 // total
    return (
        f"{desc}: {percent:3d}%|{'#' * (percent // 10):<10}| {done}/{total} [00:01<00:02, 3.1it/s]"
    )


def test_bars_are_thinned_to_quarters_and_other_lines_pass() -> None:
    logged: list[str] = []
    log = progress_throttled(logged.append)
    log("> emotions train --run emotions-full")
    for done in range(41):  # one epoch's bar redrawn at every step, as through a pipe
        log(_bar("emotions-full epoch 1/12", done, 40))
    log('train emotions-full: {"epoch": 1, "train_loss": 1.7}')
    for done in range(11):  # a second bar (another desc) is thinned on its own
        log(_bar("val", done, 10))
    bars = [line for line in logged if "%|" in line]
    epoch = [line for line in bars if line.startswith("emotions-full")]
    assert [int(line.split(":")[1].split("%")[0]) for line in epoch] == [0, 25, 50, 75, 100]
    assert [int(line.split(":")[1].split("%")[0]) for line in bars if line.startswith("val")] == [
        0,
        30,
        50,
        80,
        100,
    ]
    assert logged[0] == "> emotions train --run emotions-full"
    assert 'train emotions-full: {"epoch": 1, "train_loss": 1.7}' in logged
    assert len(logged) == 2 + 5 + 5


def test_a_bar_that_restarts_for_the_next_epoch_is_logged_again() -> None:
    logged: list[str] = []
    log = progress_throttled(logged.append)
    for epoch in (1, 2):
        for done in range(5):
            log(_bar(f"run epoch {epoch}/2", done, 4))
    assert len([line for line in logged if line.startswith("run epoch 2/2")]) == 5
