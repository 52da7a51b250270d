"""The service under hostile clients (issue 21, rows 2-8; issue 23, row 8), over real HTTP.

One real server for the module (`emotions serve` on a free loopback port, the session's small
model) with small limits, so every attack is cheap and bounded in time: two request slots, a
3 s body timeout, a 2 s head timeout, 8 KiB of headers. Stalled bodies and half-open heads are
raw sockets; every socket is closed by the test that opened it. The server's temporary folder
is the test's own, so the uploads a killed worker left behind can be planted and checked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from liveserver import LiveServer, bento_env, free_port, start_server
from PIL import Image
from smallcorpus import REPO, SmallCorpus

from emotions.serve.prediction_log import read_prediction_log

ERROR_BODY = {"error", "detail"}
MAX_UPLOAD_MB = 0.25
BODY_TIMEOUT_S = 3.0
HEADER_TIMEOUT_S = 2.0
SLOTS = 2
PENDING_BODY_MB = 4 * MAX_UPLOAD_MB
MAX_CONNECTIONS = 64
REFUSED_BURST = 400  # above all refusals the other tests make, below the flood
REFUSED_PER_S = 5.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("hostile")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["serve"].update(
        max_upload_mb=MAX_UPLOAD_MB,
        decode_workers=1,
        torch_threads=1,
        body_timeout_s=BODY_TIMEOUT_S,
        header_timeout_s=HEADER_TIMEOUT_S,
        max_header_kb=8,
        max_headers=30,
        max_concurrency=SLOTS,
        max_pending_body_mb=PENDING_BODY_MB,
        max_connections=MAX_CONNECTIONS,
        timeout_s=30,
        refused_log_per_s=REFUSED_PER_S,
        refused_log_burst=REFUSED_BURST,
    )
    (where / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return where


@pytest.fixture(scope="module")
def orphan(workdir: Path) -> Path:
    """An upload left by a worker that died mid-request: its folder names a dead process."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = workdir / "tmp" / "emotions-uploads" / str(gone.pid) / "upload-x" / "video.mp4"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"\0" * 4096)
    return left


@pytest.fixture(scope="module")
def server(model_dir: Path, workdir: Path, orphan: Path):
    port = free_port()
    argv = [
        sys.executable, "-m", "emotions", "--params", "params.yaml", "serve",
        "--model", str(model_dir), "--port", str(port), "--log", "log/predictions.jsonl",
    ]  # fmt: skip
    env = bento_env(workdir / "bentoml-home", TMPDIR=str(workdir / "tmp"))
    live = start_server(argv, port=port, cwd=workdir, env=env, output=workdir / "server.out")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def log_path(workdir: Path) -> Path:
    return workdir / "log" / "predictions.jsonl"


@pytest.fixture(scope="module")
def clip(corpus: SmallCorpus) -> Path:
    return sorted((corpus.root / "videos").glob("*.mp4"))[0]


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def upload(server: LiveServer, path: Path, field: str = "video") -> requests.Response:
    with path.open("rb") as handle:
        return requests.post(f"{server.url}/predict", files={field: handle}, timeout=60)


def records(path: Path) -> list[dict[str, Any]]:
    return list(read_prediction_log(path))


def reply(sock: socket.socket, within_s: float) -> bytes:
    """What the server sends on ``sock`` until it closes it or ``within_s`` passes."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def shaped(raw: bytes, status: int) -> dict[str, str]:
    """The JSON error of a raw HTTP reply, checked for status and shape."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    answer = json.loads(body)
    assert set(answer) == ERROR_BODY, answer
    return answer


def assert_shaped(response: requests.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_BODY and body["detail"], body
    if code is not None:
        assert body["error"] == code, body


def test_orphaned_uploads_are_removed_at_start(server: LiveServer, orphan: Path):
    assert not orphan.exists() and not orphan.parent.parent.exists()


def test_auto_sizes_on_a_cpu_are_the_fixed_ones(server: LiveServer):
    """params.yaml's batch_size and max_latency_ms are auto: on a CPU 8 and 25 ms, nothing
    timed; decode_workers is set here and reported as configured."""
    batching = requests.get(f"{server.url}/model", timeout=10).json()["batching"]
    assert (batching["batch_size"], batching["max_latency_ms"]) == (8, 25.0)
    assert batching["decode_workers"] == 1
    assert batching["sizing"] == {
        "batch_size": "auto (cpu)",
        "max_latency_ms": "auto (cpu)",
        "decode_workers": "configured",
    }
    assert batching["forward_ms_per_clip"] == {}


def test_stalled_bodies_hold_no_slot(server: LiveServer, clip: Path):
    """Row 2: 16 clients (8× the slots) send a head and part of a body, then stall. Uploads,
    /model and /readyz are answered meanwhile; each stalled client gets 408 and is closed."""
    host, port = address(server)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    stalled = [socket.create_connection((host, port), timeout=10) for _ in range(8 * SLOTS)]
    try:
        for sock in stalled:
            sock.sendall(head + b"x" * 250)
        time.sleep(0.3)
        assert upload(server, clip).status_code == 200
        assert requests.get(f"{server.url}/model", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
        for sock in stalled:
            assert shaped(reply(sock, BODY_TIMEOUT_S + 10), 408)["error"] == "request_timeout"
    finally:
        for sock in stalled:
            sock.close()


def test_request_heads_are_bounded_in_size_count_and_time(server: LiveServer, clip: Path):
    """Rows 3 and 4: a 64 KiB header and 40 headers get 431; heads that stop half-way get 408
    and are closed after serve.header_timeout_s, while uploads are answered."""
    host, port = address(server)
    big = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * 65536}\r\n\r\n".encode()
    many = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n".encode()
    many += b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n"
    for raw, why in ((big, "serve.max_header_kb"), (many, "serve.max_headers")):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(raw)
            answer = shaped(reply(sock, 10), 431)
        assert answer["error"] == "headers_too_large" and why in answer["detail"]

    half_open = [socket.create_connection((host, port), timeout=10) for _ in range(50)]
    try:
        for sock in half_open:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        assert upload(server, clip).status_code == 200
        started = time.monotonic()
        answers = [reply(sock, HEADER_TIMEOUT_S + 10) for sock in half_open]
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 10
        for raw in answers:
            assert shaped(raw, 408)["error"] == "request_timeout"
    finally:
        for sock in half_open:
            sock.close()


def test_beyond_the_connection_cap_the_oldest_waiting_head_is_shed(server: LiveServer, clip: Path):
    """Row 4: more half-open sockets than serve.max_connections: each new connection closes
    the oldest one still in its head (503), so a good client still gets in and is answered."""
    host, port = address(server)
    extra = 16
    half_open = []
    try:
        for _ in range(MAX_CONNECTIONS + extra):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
            half_open.append(sock)
        assert upload(server, clip).status_code == 200
        answers = [reply(sock, HEADER_TIMEOUT_S + 10) for sock in half_open]
    finally:
        for sock in half_open:
            sock.close()
    statuses = Counter(int(raw[9:12]) for raw in answers)
    assert statuses[503] >= extra and set(statuses) <= {503, 408}, statuses
    shed = [shaped(raw, 503) for raw in answers[:extra]]
    assert all(answer["error"] == "too_many_connections" for answer in shed)


def test_malformed_forms_are_400_naming_the_field(server: LiveServer, clip: Path, log_path: Path):
    """Row 5 and issue 23 row 8: each was BentoML's 500; now 400 with the field named, and
    logged."""
    url = f"{server.url}/predict"
    data = clip.read_bytes()
    cases = [
        ("another field name", upload(server, clip, field="file"), "missing_video"),
        (
            "no boundary",
            requests.post(
                url, data=data, headers={"Content-Type": "multipart/form-data"}, timeout=30
            ),
            "malformed_request",
        ),
        (
            "a 15,000-character file name",
            requests.post(url, files={"video": ("a" * 15000 + ".mp4", data)}, timeout=30),
            "malformed_request",
        ),
        (
            "a text field video",
            requests.post(url, files={"video": (None, "ftp://example.com/a.mp4")}, timeout=30),
            "missing_video",
        ),
        (
            "1001 fields",
            requests.post(url, files={f"f{i}": (None, "1") for i in range(1001)}, timeout=30),
            "malformed_request",
        ),
        ("JSON", requests.post(url, json={"video": "x"}, timeout=30), "missing_video"),
    ]
    for why, response, code in cases:
        assert response.status_code == 400, (why, response.text)
        assert_shaped(response, 400, code)
        if code == "missing_video":
            assert "'video'" in response.json()["detail"], why
    logged = records(log_path)[-len(cases) :]
    assert [r["http_status"] for r in logged] == [400] * len(cases)
    assert sorted(r["error"] for r in logged) == sorted(code for _, _, code in cases)


def test_refusals_outside_the_handler_are_one_record_each(
    server: LiveServer, clip: Path, log_path: Path, tmp_path: Path
):
    """Row 6: the framework's 404 and 405, the guard's 431 and an over-limit 413 are each one
    record in the project's shape, beside the handler's own refusals (the 8×8 image of row 8)."""
    before = len(records(log_path))
    tiny = tmp_path / "tiny8x8.mp4"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tiny, format="PNG")
    responses = [
        (requests.get(f"{server.url}/nowhere", timeout=10), 404, "not_found"),
        (requests.get(f"{server.url}/predict", timeout=10), 405, "method_not_allowed"),
        (
            requests.get(f"{server.url}/healthz", headers={"X-Big": "a" * 20000}, timeout=10),
            431,
            "headers_too_large",
        ),
        (
            requests.post(
                f"{server.url}/predict",
                files={"video": ("big.mp4", b"\0" * int(MAX_UPLOAD_MB * 2**20 + 1))},
                timeout=30,
            ),
            413,
            "payload_too_large",
        ),
        (upload(server, tiny), 415, "unsupported_media_type"),
    ]
    for response, status, code in responses:
        assert_shaped(response, status, code)
    assert "still image" in responses[-1][0].json()["detail"]  # before "too small"
    logged = records(log_path)[before:]
    # One record each; their order is the order they were written, not sent.
    assert sorted((r["http_status"], r["error"]) for r in logged) == sorted(
        (s, c) for _, s, c in responses
    )


def test_over_the_slots_is_503_with_retry_after(server: LiveServer, clip: Path, log_path: Path):
    """Row 8: more uploads at once than serve.max_concurrency: the rest get 503 with
    Retry-After in the project's shape; every upload is one record; /readyz is 200 after."""
    before = len(records(log_path))
    start = threading.Barrier(4 * SLOTS)
    answers: list[requests.Response] = []

    def send() -> None:
        start.wait()
        answers.append(upload(server, clip))

    threads = [threading.Thread(target=send) for _ in range(4 * SLOTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and statuses[200] >= 1 and statuses[503] >= 1, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert_shaped(answer, 503, "overloaded")
            assert int(answer.headers["Retry-After"]) >= 1
    logged = records(log_path)[before:]
    assert Counter(r.get("http_status", 200) for r in logged) == statuses
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_bodies_held_at_once_are_bounded(server: LiveServer, clip: Path, tmp_path: Path):
    """Four clients send 94 % of the largest body each, then stall: the worker now holds
    almost serve.max_pending_body_mb in bodies, and an upload that does not fit gets 503 with
    Retry-After (it would have gone to disk). When they are gone, uploads are answered again."""
    host, port = address(server)
    near_limit = int(MAX_UPLOAD_MB * 2**20 * 0.94)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {int(MAX_UPLOAD_MB * 2**20)}\r\n\r\n"
    ).encode()
    holders = [socket.create_connection((host, port), timeout=10) for _ in range(4)]
    large = tmp_path / "large.mp4"
    large.write_bytes(os.urandom(int(MAX_UPLOAD_MB * 2**20 * 0.5)))
    try:
        for sock in holders:
            sock.sendall(head + b"x" * near_limit)
        time.sleep(0.5)
        refused = upload(server, large)
        assert_shaped(refused, 503, "overloaded")
        assert "serve.max_pending_body_mb" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 10
    while (answer := upload(server, clip)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)  # the server notices the closed sockets and gives their bytes back
    assert answer.status_code == 200, answer.text


def test_urllib_gets_the_413_not_a_reset(server: LiveServer):
    """Row 7: urllib sends ``Connection: close`` and the whole body before reading; the
    server drains it after answering, so the 413 arrives instead of a reset."""
    request = urllib.request.Request(
        f"{server.url}/predict",
        data=b"\0" * (20 * 2**20),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "payload_too_large"


def test_the_openapi_document_types_the_answer_and_lists_every_status(server: LiveServer):
    """Issue 23 row 8: a title and description, the 200 typed, every status listed."""
    spec = requests.get(f"{server.url}/docs.json", timeout=30).json()
    assert spec["info"]["title"].startswith("emotions") and "video" in spec["info"]["description"]
    predict = spec["paths"]["/predict"]["post"]["responses"]
    ok = predict["200"]["content"]["application/json"]["schema"]["$ref"]
    prediction = spec["components"]["schemas"][ok.rsplit("/", 1)[1]]
    assert {"path", "label", "polarity", "probabilities", "timeline", "modality_share"} <= set(
        prediction["properties"]
    )
    listed = {int(status) for status in predict}
    assert {200, 400, 405, 408, 413, 415, 422, 431, 500, 503, 504} <= listed
    assert "Retry-After" in predict["503"]["headers"]
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == ERROR_BODY


def test_a_flood_of_refusals_is_logged_rate_limited_with_the_dropped_count(
    server: LiveServer, clip: Path, log_path: Path
):
    """Row 6: 600 tiny bad requests write at most the burst plus the rate's share, and one
    "dropped" record counts the rest: logged + dropped == sent. Last in the module, since it
    empties the bucket."""
    before = len(records(log_path))
    sent = 600
    with requests.Session() as session:
        for i in range(sent):
            assert session.get(f"{server.url}/flood-{i}", timeout=10).status_code == 404
    time.sleep(1.0)  # the bucket refills enough for the dropped record
    assert upload(server, clip).status_code == 200
    logged = records(log_path)[before:]
    flood = [r for r in logged if str(r.get("path", "")).startswith("/flood-")]
    dropped = [r for r in logged if r["status"] == "dropped"]
    assert len(flood) < sent and dropped, (len(flood), dropped)
    assert len(flood) + sum(r["dropped"] for r in dropped) == sent
    assert all(set(r["by_status"]) == {"404"} for r in dropped)
