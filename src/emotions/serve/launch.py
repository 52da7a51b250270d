"""`emotions serve`: run the BentoML service locally on a model folder.

A thin front for ``bentoml serve emotions.serve.service:EmotionService``: it resolves the model
folder and the params file to absolute paths, passes them through the environment variables
the service reads (:mod:`emotions.serve.settings`), and replaces itself with the BentoML
server, so Ctrl-C and signals reach BentoML directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from emotions.serve.settings import CALIBRATION_ENV, LOG_ENV, MODEL_DIR_ENV, PARAMS_ENV

SERVICE = "emotions.serve.service:EmotionService"


def serve_environment(
    model_dir: Path,
    params_path: Path,
    *,
    log_path: Path | None = None,
    base: Mapping[str, str] | None = None,
    calibration: Path | None = None,
) -> dict[str, str]:
    """The server's environment: ours on top of ``base`` (default: this process's)."""
    env = dict(os.environ if base is None else base)
    env[MODEL_DIR_ENV] = str(model_dir.resolve())
    if params_path.is_file():
        env[PARAMS_ENV] = str(params_path.resolve())
    if log_path is not None:
        env[LOG_ENV] = str(log_path.resolve())
    if calibration is not None:
        env[CALIBRATION_ENV] = str(calibration.resolve())
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")  # "1" is ignored by BentoML's Python API
    return env


def wait_until_ready(
    url: str,
    process: subprocess.Popen,
    *,
    timeout_s: float,
    tail: Callable[[], str],
) -> None:
    """Poll ``GET url`` until it answers 200; raise with the server's output ``tail()`` when
    the process exits first or ``timeout_s`` passes. BentoML's start-up (workers, the model)
    takes seconds to minutes, so whoever starts it in a second process (tests, benchmarks)
    waits on its health route, bounded, rather than on a fixed sleep."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{tail()}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready within {timeout_s:g} s:\n{tail()}")


def serve_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]


def exec_serve(
    model_dir: Path,
    params_path: Path,
    *,
    host: str,
    port: int,
    log_path: Path | None = None,
    calibration: Path | None = None,
) -> NoReturn:
    """Become ``bentoml serve`` (never returns)."""
    argv = serve_argv(host, port)
    env = serve_environment(model_dir, params_path, log_path=log_path, calibration=calibration)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
