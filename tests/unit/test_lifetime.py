"""No process outlives what started it, and one writer per output folder.

Real processes throughout: a parent that is SIGKILLed while its child (set up as every stage
sets itself up) sleeps; two holders of one output lock; a flow entry point that is sent
SIGTERM while it has a child and a grandchild (standing in for its temporary Prefect server
and a `dvc repro` with its stage).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from emotions.lifetime import OutputBusyError, hold_output, lock_file

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

# Starts a child that dies with its parent (as `emotions <stage>` does), prints its pid, sleeps.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(600)
"""
CHILD = """
import os, threading, time
from emotions.lifetime import die_with_parent, stop_on_signals
die_with_parent()
stop_on_signals(grace_s=0.5)
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()  # a pool's thread
print(os.getpid(), flush=True)
lock = threading.Lock()
lock.acquire()
lock.acquire()  # the main thread waiting for a result, as a stage's often is
"""
# A flow entry point with a child that has a child of its own; prints both pids.
FLOW = """
import subprocess, sys, threading, time
from flows.dvc_run import end_children_on_signals
end_children_on_signals()
code = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); print(p.pid, flush=True); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
lock = threading.Lock()
lock.acquire()
lock.acquire()  # the main thread stuck in a lock wait, as a flow's is
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _gone(pid: int) -> bool:
    """Wait (bounded) until ``pid`` has exited; a zombie awaiting its reaper counts as gone."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_process_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert psutil.Process(child).ppid() == parent.pid
    finally:
        parent.kill()
        parent.wait()
    assert _gone(child), "the child outlived its SIGKILLed parent"


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts" / "models" / "emotions" / "full"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom emotions.lifetime import hold_output\n"
            "with hold_output(sys.argv[1], 'emotions train --run x'):\n"
            "    print('held', flush=True); time.sleep(600)",
            str(folder),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError) as refused, hold_output(folder):
            pass
        message = str(refused.value)
        assert f"pid {holder.pid} (emotions train --run x, since " in message
        assert str(folder) in message
    finally:
        holder.kill()
        holder.wait()
    with hold_output(folder) as path:  # the kernel dropped the dead holder's lock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert lock_file(folder).parent == folder.parent, "the lock must stay out of the output"
    assert not folder.exists()


def test_a_flow_sent_sigterm_stops_the_processes_it_started(tmp_path: Path) -> None:
    flow = subprocess.Popen(
        [sys.executable, "-c", FLOW],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert flow.stdout is not None
    child, grandchild = map(int, flow.stdout.readline().split())
    flow.send_signal(signal.SIGTERM)
    _, err = flow.communicate(timeout=WAIT_S)
    assert flow.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM, with the processes it started" in err
    assert _gone(child) and _gone(grandchild)
