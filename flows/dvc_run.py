"""Run DVC (and stage) commands as processes, streaming their output line by line.

A stage is `dvc repro --single-item <stage>` run in the repository root: DVC decides whether the
stage is up to date, runs its command, caches its outputs and records dvc.lock, exactly as
`dvc repro` would. From the output we learn what DVC did (ran, skipped, restored from the run
cache) and, on failure, whether another attempt can help:

- hard (never retried): the stage command exited with 2 — `emotions` exits 2 only for a
  reasoned failure a rerun cannot fix (bad params, a failed critical expectation, no usable
  clip) — or DVC refused before running anything (a missing dependency, a broken dvc.yaml);
- transient (retried): anything else — a crash or a kill of the command (exit 1, signals, out
  of memory), and DVC lock contention ("is busy", "Unable to acquire lock") with a `dvc` process
  the user started by hand.

A command given a timeout (`flow.stage_timeout_s`) is killed when it runs past it, with every
process it started (DVC runs the stage command as its own child): Prefect's task timeout alone
cannot stop a thread blocked reading a silent child's output. A timeout is hard: the same
command would only run out of time again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emotions.lifetime import end_descendants, watch_signals

# `emotions` exits 2 for a failure a rerun cannot fix (src/emotions/cli.py).
HARD_EXIT_CODES = frozenset({2})
TAIL_LINES = 30

_RAN = re.compile(r"^Running stage '(?P<stage>[^']+)'")
_SKIPPED = re.compile(r"^(?:Stage )?'(?P<stage>[^']+)' didn't change, skipping")
_RESTORED = re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run")
_EXITED = re.compile(r"exited with (?P<code>-?\d+)")
_LOCKED = ("is busy, it is being blocked by", "Unable to acquire lock")


def subprocess_env() -> dict[str, str]:
    """The environment of every child: this interpreter's bin first (so `dvc` and the stages'
    `emotions` are the ones installed next to the flow), unbuffered Python so stage output
    streams as it happens, no analytics, and progress bars that redraw at most every 10 s (each
    redraw becomes a line in the Prefect log)."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "DVC_NO_ANALYTICS": "1",
        "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "10"),
    }


# `python -m dvc`, after asking Linux to end it when the thread that started it dies, and to
# end its own descendants (the stage's shell and the stage) when it is ended (see
# emotions.lifetime): a SIGKILLed flow then leaves no `dvc repro` and no stage running on.
DVC_DYING_WITH_PARENT = (
    "import sys; from emotions.lifetime import die_with_parent, end_descendants_on_signals; "
    "end_descendants_on_signals(); die_with_parent(); "
    "from dvc.cli import main; sys.exit(main(sys.argv[1:]))"
)


def dvc(*args: str) -> list[str]:
    """A `dvc` command line that waits for DVC's repository lock instead of failing after 3 s
    (concurrent stages each hold it briefly, before and after their command) and dies with
    the flow."""
    return [sys.executable, "-c", DVC_DYING_WITH_PARENT, "--wait-for-lock", *args]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    tail: tuple[str, ...]
    seconds: float
    timeout_s: float | None = None  # set when the command was killed for running past it

    @property
    def text(self) -> str:
        return "\n".join(self.tail)


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and every process below it. The list is taken first, so a child re-parented
    by its parent's death is still killed; ``pid`` itself is left for its parent to reap (its
    exit status then says it was killed)."""
    import psutil

    try:
        root = psutil.Process(pid)
        below = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in [root, *below]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(below, timeout=10)


def stream(
    args: Sequence[str],
    cwd: Path,
    on_line: Callable[[str], None] | None = None,
    *,
    timeout_s: float | None = None,
) -> CommandResult:
    """Run `args` in `cwd`, passing each output line (stdout and stderr merged, in order) to
    `on_line` as it arrives; keep the last lines for error messages. Past `timeout_s` the
    command and its children are killed (the result says so); an exception here (an interrupt,
    Prefect's task timeout) kills them too, so no stage outlives its task."""
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    expired = threading.Event()
    with subprocess.Popen(
        list(args),
        cwd=cwd,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None

        def expire() -> None:
            expired.set()
            kill_tree(proc.pid)

        timer = threading.Timer(timeout_s, expire) if timeout_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            for raw in proc.stdout:
                line = raw.rstrip()
                if not line:
                    continue
                tail.append(line)
                if on_line is not None:
                    on_line(line)
            returncode = proc.wait()
        except BaseException:
            kill_tree(proc.pid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
    seconds = time.perf_counter() - started
    return CommandResult(returncode, tuple(tail), seconds, timeout_s if expired.is_set() else None)


STOP_GRACE_S = 5.0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _stop_and_exit(signum: int) -> None:
    end_descendants(STOP_GRACE_S)  # the Prefect server, `dvc repro` and its stage
    name = signal.Signals(signum).name
    print(
        f"{Path(sys.argv[0]).stem}: stopped by {name}, with the processes it started",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _on_signal(signum: int, _frame: object) -> None:
    _stop_and_exit(signum)


def end_children_on_signals() -> None:
    """A flow's entry point stops what it started on SIGTERM, SIGHUP and SIGINT: its children
    (a temporary Prefect server, `dvc repro` and its stage) are terminated, then it exits
    with 128 + the signal. The default SIGTERM ended the process at once and left them running.
    The watcher thread acts at once, also while the main thread waits on a lock or Prefect's
    own SIGTERM handler is installed (:func:`emotions.lifetime.watch_signals`).
    Call from the main thread.
    """
    watch_signals(STOP_SIGNALS, _on_signal, _stop_and_exit)


# A tqdm bar as it reaches a pipe: "<desc>:  45%|████▌     | 9/20 [00:03<00:04,  2.71it/s]".
_BAR = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d{1,3})%\|")
PROGRESS_STEP = 25  # log a bar at 0, 25, 50, 75 and 100 %


def progress_throttled(
    log: Callable[[str], None], step: int = PROGRESS_STEP
) -> Callable[[str], None]:
    """``log`` for a stage's output lines, with progress bars thinned to every ``step`` %.

    tqdm redraws a bar many times a second; through a pipe each redraw is a line, so one
    training epoch became dozens of Prefect log records. Other lines pass unchanged, and a
    bar's last state (100 %) is always logged.
    """
    shown: dict[str, int] = {}

    def on_line(line: str) -> None:
        match = _BAR.match(line)
        if match is None:
            log(line)
            return
        desc, percent = match["desc"].strip(), int(match["pct"])
        bucket = percent // step
        if percent == 100 or shown.get(desc) is None or bucket > shown[desc]:
            shown[desc] = bucket
            log(line)

    return on_line


class StageFailedError(RuntimeError):
    """A stage did not complete; `transient` says whether another attempt may succeed."""

    def __init__(self, stage: str, reason: str, *, transient: bool, attempt: int = 1) -> None:
        super().__init__(f"stage {stage} failed: {reason}")
        self.stage = stage
        self.reason = reason
        self.transient = transient
        self.attempt = attempt


def outcome(stage: str, lines: Sequence[str]) -> str:
    """What DVC did with a stage that succeeded: `ran`, `skipped` (up to date) or `restored`
    (outputs checked out from the run cache without running the command)."""
    for line in lines:
        for pattern, name in ((_RESTORED, "restored"), (_RAN, "ran"), (_SKIPPED, "skipped")):
            match = pattern.match(line)
            if match and match["stage"] == stage:
                return name
    return "ran"


def failure(stage: str, result: CommandResult, attempt: int = 1) -> StageFailedError:
    """Classify a failed `dvc repro` (see the module docstring) into a StageFailedError."""
    text = result.text
    errors = [line for line in result.tail if line.startswith("ERROR")]
    summary = errors[-1].removeprefix("ERROR: ") if errors else f"dvc exited {result.returncode}"
    if result.timeout_s is not None:
        reason = f"timed out after {result.timeout_s:g} s: killed with its processes"
        return StageFailedError(stage, reason, transient=False, attempt=attempt)
    if result.returncode < 0:
        return StageFailedError(
            stage, f"dvc was killed by signal {-result.returncode}", transient=True, attempt=attempt
        )
    if any(marker in text for marker in _LOCKED):
        return StageFailedError(stage, summary, transient=True, attempt=attempt)
    exited = _EXITED.search(text)
    if exited is None:
        # DVC refused before the command ran (missing dependency, bad dvc.yaml, ...).
        return StageFailedError(stage, summary, transient=False, attempt=attempt)
    code = int(exited["code"])
    # The stage's own last words (e.g. `emotions validate: ...`) say more than DVC's summary.
    said = [
        line
        for line in result.tail
        if not line.startswith(("ERROR", "WARNING", ">", "Running stage"))
    ]
    reason = f"command exited with {code}" + (f": {said[-1]}" if said else "")
    return StageFailedError(stage, reason, transient=code not in HARD_EXIT_CODES, attempt=attempt)
