"""The prediction log survives what a server goes through: two worker processes appending at
once, and a process killed with SIGKILL in the middle of writing a line.

The kill is real: a forked child appends large records through :class:`PredictionLog` while
the parent watches the file's size and sends SIGKILL as soon as a record is half-way out. The
server test runs `emotions serve` with ``serve.workers: 2`` on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from liveserver import bento_env, free_port, start_server
from smallcorpus import REPO

from emotions.serve.prediction_log import PredictionLog, TornLines, read_prediction_log

# Large enough that the kernel copies it page by page (a fatal signal is checked between
# pages), so a kill can land inside one write.
PAYLOAD = 4 * 1024 * 1024


def _record(i: int) -> dict:
    return {"id": f"r{i:06d}", "status": "ok", "payload": "x" * PAYLOAD}


def _line_length() -> int:
    return len(json.dumps(_record(0), ensure_ascii=False)) + 1


def _append_forever(path: Path) -> None:
    """The child: append records until killed (never returns)."""
    try:
        log = PredictionLog(path)
        i = 0
        while True:
            log.append(_record(i))
            i += 1
    finally:
        os._exit(1)


def _kill_mid_write(path: Path, line: int, timeout_s: float = 20.0) -> bool:
    """Fork a writer, SIGKILL it once the file holds a partial record; True when the file was
    left with one (the kill may land just after the write finished)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _append_forever(path)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if size > 2 * line and size % line:
                os.kill(pid, signal.SIGKILL)
                break
            if size > 2 * line and os.waitpid(pid, os.WNOHANG)[0]:
                pytest.fail("the writer exited by itself")
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return path.stat().st_size % line != 0


def test_a_writer_killed_mid_line_costs_only_its_own_record(tmp_path: Path):
    line = _line_length()
    for attempt in range(30):
        path = tmp_path / f"attempt{attempt}.jsonl"
        if _kill_mid_write(path, line):
            break
    else:
        pytest.fail("30 kills all landed between writes")
    whole = path.stat().st_size // line
    assert not path.read_bytes().endswith(b"\n")  # the torn record: a prefix, no newline

    # The next writer (another worker, or the restarted one) still writes a whole record.
    after = PredictionLog(path)
    after.append({"id": "after", "status": "ok"})
    after.close()

    torn = TornLines()
    records = list(read_prediction_log(path, torn))
    assert [r["id"] for r in records] == [f"r{i:06d}" for i in range(whole)] + ["after"]
    assert all(len(r["payload"]) == PAYLOAD for r in records[:-1])
    assert torn.count == 1 and torn.lines == [whole + 1]


def test_the_reader_skips_and_counts_torn_lines_anywhere(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    log = PredictionLog(path)
    for i in range(3):
        log.append({"id": f"a{i}", "status": "ok"})
    log.close()
    with path.open("ab") as handle:  # damage in the middle: a fragment, bytes that are not UTF-8
        handle.write(b'{"id": "cut", "sta\n\xff\xfe\n[1, 2]\n\n')
    log = PredictionLog(path)
    log.append({"id": "b0", "status": "ok"})
    log.close()
    with path.open("ab") as handle:
        handle.write(b'{"id": "tail", "status": "o')  # and a torn last line

    torn = TornLines()
    assert [r["id"] for r in read_prediction_log(path, torn)] == ["a0", "a1", "a2", "b0"]
    assert torn.count == 4 and torn.lines == [4, 5, 6, 9]
    assert list(read_prediction_log(tmp_path / "absent.jsonl")) == []


# ------------------------------------------------------------------ two workers, one log file


@pytest.fixture(scope="module")
def two_worker_server(model_dir: Path, tmp_path_factory):
    where = tmp_path_factory.mktemp("serve-workers")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["serve"].update(workers=2, decode_workers=1, torch_threads=1, max_latency_ms=50)
    (where / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    port = free_port()
    argv = [
        sys.executable, "-m", "emotions", "--params", "params.yaml", "serve",
        "--model", str(model_dir), "--port", str(port), "--log", "log/predictions.jsonl",
    ]  # fmt: skip
    env = bento_env(where / "bentoml-home")
    live = start_server(argv, port=port, cwd=where, env=env, output=where / "server.out")
    yield live, where / "log" / "predictions.jsonl"
    live.stop()


def test_two_workers_write_exactly_one_whole_record_per_request(two_worker_server, corpus):
    server, log_path = two_worker_server
    clips = sorted((corpus.root / "videos").glob("*.mp4"))[:4]
    count = 16
    uploads = [(f"upload{i:02d}.mp4", clips[i % len(clips)]) for i in range(count)]

    def post(upload: tuple[str, Path]) -> int:
        name, path = upload
        files = {"video": (name, path.read_bytes(), "video/mp4")}
        return requests.post(f"{server.url}/predict", files=files, timeout=180).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        statuses = list(pool.map(post, uploads))
    assert statuses == [200] * count, server.tail()

    torn = TornLines()
    records = list(read_prediction_log(log_path, torn))
    assert torn.count == 0
    assert len(log_path.read_bytes().splitlines()) == count
    assert sorted(r["filename"] for r in records) == [name for name, _ in uploads]
    assert len({r["id"] for r in records}) == count
    assert all(r["status"] == "ok" and r["embedding"]["dim"] > 0 for r in records)
