"""Start a real BentoML server on loopback for a test module, and stop it afterwards.

The server runs in its own process group (BentoML's arbiter starts worker processes), so
stopping it signals that group, by the id this module started, and nothing else. Its output
goes to a file whose tail is shown when it fails to come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emotions.serve.launch import wait_until_ready

NO_TRACKING = {
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bento_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """This environment with the venv's bin first, a private BentoML home and no tracking."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **NO_TRACKING, "BENTOML_HOME": str(bentoml_home)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("EMOTIONS_MODEL_DIR", "EMOTIONS_PREDICTION_LOG", "EMOTIONS_PARAMS"):
        env.pop(key, None)  # only what the test passes
    env.update(extra)
    return env


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    output: Path

    def tail(self, lines: int = 60) -> str:
        text = self.output.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass


def start_server(
    argv: Sequence[str],
    *,
    port: int,
    cwd: Path,
    env: dict[str, str],
    output: Path,
    timeout_s: float = 240.0,
    health: str = "/healthz",
) -> LiveServer:
    """Run ``argv`` and wait (bounded) until ``GET <health>`` answers 200."""
    handle = output.open("wb")
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    server = LiveServer(f"http://127.0.0.1:{port}", process, output)
    try:
        wait_until_ready(f"{server.url}{health}", process, timeout_s=timeout_s, tail=server.tail)
    except RuntimeError:
        server.stop()
        raise
    return server


def start_evidently_ui(workspace: Path, where: Path) -> LiveServer:
    """`evidently ui` over ``workspace`` on a free loopback port (its output in ``where``)."""
    port = free_port()
    evidently = Path(sys.executable).parent / "evidently"
    argv = [str(evidently), "ui", "--workspace", str(workspace)]
    return start_server(
        [*argv, "--port", str(port), "--host", "127.0.0.1"],
        port=port,
        cwd=where,
        env={**os.environ, "DO_NOT_TRACK": "1"},
        output=where / "evidently-ui.log",
        timeout_s=120,
        health="/api/version",
    )
