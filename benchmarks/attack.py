"""Does the service stay available under hostile clients? The eight attacks of issue 21.

One real server (`emotions serve` on loopback, one worker, params.yaml's ``serve:`` section
except ``max_upload_mb``, see ``--max-upload-mb``), then, in one run:

- idle: a good client sends a small phone clip again and again for ``--seconds``; its median
  latency is the baseline (measured again at the end; the baseline is the median of both);
- each attack, one at a time (rows 2-8, then 1, whose killed decoders restart afterwards): one
  untimed good upload, then the attack is started, and after ``--warmup-s`` the same good
  client measures for ``--seconds``; then the attack stops and its in-flight requests are
  waited for (bounded by their client timeouts) before the next one. Reported: what the
  attacker got (status counts), the good client's median latency during the attack, its ratio
  to idle (goal ≤ 2), and the good requests that failed (goal 0).

The attacks (issue 21's rows), each with a bounded count:

1. ``decode_bomb``: ``--bomb-clients`` clients upload a small valid h264 file of
   ``--bomb-side``² px and ``--bomb-frames`` frames (made here with PyAV: one encoded
   keyframe and one all-skip P-frame, the P packet muxed again for every frame, ≈ 170 KB);
2. ``stalled_bodies``: ``--stalled`` sockets send a head and 250 body bytes, then nothing;
3. ``huge_headers``: 4 sockets each stream one header of up to ``--header-mb`` MB;
4. ``half_open``: ``--half-open`` sockets send part of a request head, then nothing;
5. ``malformed``: 4 clients send the five forms BentoML answered 500 (another field name, no
   boundary, a 15,000-character file name, a text field ``video``, 1,001 fields);
6. ``refused_flood``: 4 clients send tiny requests to a missing route; also reported: the
   prediction log's growth per request and whether logged + dropped records = requests;
7. ``urllib_over_limit``: 2 clients upload ``max_upload_mb + 1`` MB with Python's urllib
   (``Connection: close``): 413s against connection resets;
8. ``tiny_images``: 4 clients upload an 8×8 PNG named ``.mp4`` (415 "still image" expected);
   also checked: ``/model`` shows no absolute path.

    .venv/bin/python benchmarks/attack.py                       # 8 s per attack
    .venv/bin/python benchmarks/attack.py --seconds 4 --half-open 300 --only 2,3,4
    .venv/bin/python benchmarks/attack.py --model artifacts/models/emotions/full

Every request-sending attacker keeps ``--client-rps`` requests/s (25; ``0``: as fast as it
can): on a 2-core machine an unpaced Python client spends a core of its own, and the good
client's latency then measures the attacker's CPU as much as the service.

The model: ``--model`` (a trained folder), else an untrained one from params.yaml's ``model:``
(serving cost does not depend on the weights). Clients and server share this machine's cores,
so the absolute latencies move with other load; the ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import requests
from phone_clips import write_phone_clip
from serve import Server, run_stoppable, start_server, write_model

from emotions.lifetime import stop_on_signals
from emotions.serve.prediction_log import read_prediction_log

TARGET_RATIO = 2.0
ATTACK_TIMEOUT_S = 90.0  # the longest an attacking request is waited for


# --------------------------------------------------------------------------- inputs


def write_decode_bomb(path: Path, side: int, frames: int, fps: int = 30) -> Path:
    """A valid h264 MP4 of ``frames`` frames of ``side``² px that costs seconds to write: one
    keyframe and one all-skip P-frame are encoded, and the P packet is muxed for every later
    frame (each still decodes to a full ``side``² picture)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51", "x264-params": "scenecut=0"}
        black = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        black = black.reformat(format="yuv420p")
        encoded: list[bytes] = []
        for pts in range(2):
            black.pts = pts
            encoded += [bytes(packet) for packet in stream.encode(black)]
        encoded += [bytes(packet) for packet in stream.encode(None)]
        key, skip = encoded[0], encoded[1]
        for index in range(frames):
            packet = av.Packet(key if index == 0 else skip)
            packet.stream = stream
            packet.time_base = Fraction(1, fps)
            packet.pts = packet.dts = index
            packet.duration = 1
            packet.is_keyframe = index == 0
            out.mux(packet)
    return path


def write_tiny_image(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="PNG")
    return path


# --------------------------------------------------------------------------- clients


def good_latencies(server: Server, clip: Path, seconds: float) -> tuple[list[float], Counter]:
    """A good client's sequential uploads for ``seconds``: latencies (s) of the 200s and the
    status counts (exceptions by name)."""
    data = clip.read_bytes()
    latencies: list[float] = []
    statuses: Counter = Counter()
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            status: int | str = requests.post(
                f"{server.url}/predict",
                files={"video": (clip.name, data, "video/mp4")},
                timeout=120,
            ).status_code
        except requests.RequestException as error:
            status = type(error).__name__
        statuses[status] += 1
        if status == 200:
            latencies.append(time.perf_counter() - started)
    return latencies, statuses


class Attack:
    """Attacking threads that run until ``stop`` is set; ``statuses`` counts what they got.
    ``rps``: each request-sending client's pace (0: as fast as it can)."""

    def __init__(self, rps: float = 0.0) -> None:
        self.rps = rps
        self.stop = threading.Event()
        self.statuses: Counter = Counter()
        self.notes: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def pacer(self) -> Callable[[], None]:
        """Called before each request: sleeps to keep one client at ``rps``."""
        next_at = [time.monotonic()]

        def wait() -> None:
            if self.rps > 0:
                next_at[0] += 1.0 / self.rps
                time.sleep(max(0.0, next_at[0] - time.monotonic()))

        return wait

    def count(self, status: int | str) -> None:
        with self.lock:
            self.statuses[status] += 1

    def spawn(self, target: Callable[[], None], copies: int) -> None:
        for _ in range(copies):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self, within_s: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + within_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.notes["unfinished_clients"] = sum(t.is_alive() for t in self.threads)


def _host_port(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _status_of(raw: bytes) -> int | str:
    if raw.startswith(b"HTTP/1.1 "):
        return int(raw[9:12])
    return "closed" if not raw else "garbage"


def _posting(attack: Attack, url: str, make: Callable[[int], dict[str, Any]]) -> Callable:
    counter = iter(range(10**9))

    def client() -> None:
        pace = attack.pacer()
        while not attack.stop.is_set():
            pace()
            try:
                status: int | str = requests.post(
                    url, timeout=ATTACK_TIMEOUT_S, **make(next(counter))
                ).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            attack.count(status)

    return client


def decode_bomb(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    data = ctx["bomb"].read_bytes()
    attack.notes["file_kb"] = round(len(data) / 1024)

    def make(_: int) -> dict[str, Any]:
        return {"files": {"video": ("bomb.mp4", data, "video/mp4")}}

    attack.spawn(_posting(attack, f"{server.url}/predict", make), ctx["bomb_clients"])


def _socket_holders(attack: Attack, server: Server, count: int, opening: bytes, name: str) -> None:
    """``count`` sockets that send ``opening`` and then nothing, reopened when the server
    closes one, until the attack stops; the server's answers are counted. Each thread holds
    25 of them (1,000 threads would cost more than the attack)."""
    host, port = _host_port(server)
    per_thread = 25
    for first in range(0, count, per_thread):
        attack.spawn(_multi_holder(attack, host, port, min(per_thread, count - first), opening), 1)
    attack.notes[name] = count


def _multi_holder(
    attack: Attack, host: str, port: int, count: int, opening: bytes
) -> Callable[[], None]:
    import selectors

    def run() -> None:
        selector = selectors.DefaultSelector()
        open_socks: set[socket.socket] = set()

        def open_one() -> None:
            try:
                sock = socket.create_connection((host, port), timeout=5)
                sock.sendall(opening)
                sock.setblocking(False)
            except OSError as error:
                attack.count(type(error).__name__)
                return
            selector.register(sock, selectors.EVENT_READ)
            open_socks.add(sock)

        while not attack.stop.is_set():
            while len(open_socks) < count and not attack.stop.is_set():
                open_one()
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    answer = sock.recv(4096)
                except OSError as error:
                    answer = b""
                    attack.count(type(error).__name__)
                attack.count(_status_of(answer))
                selector.unregister(sock)
                open_socks.discard(sock)
                sock.close()
        with attack.lock:
            attack.notes["open_at_end"] = attack.notes.get("open_at_end", 0) + len(open_socks)
        for sock in open_socks:
            sock.close()
        selector.close()

    return run


def stalled_bodies(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    host, _ = _host_port(server)
    opening = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
    ).encode() + b"x" * 250
    _socket_holders(attack, server, ctx["stalled"], opening, "sockets")


def half_open(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    host, _ = _host_port(server)
    opening = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Waiting: ".encode()
    _socket_holders(attack, server, ctx["half_open"], opening, "sockets")


def huge_headers(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    host, port = _host_port(server)
    limit = int(ctx["header_mb"] * 2**20)
    chunk = b"a" * 2**20

    def client() -> None:
        while not attack.stop.is_set():
            sent = 0
            try:
                with socket.create_connection((host, port), timeout=30) as sock:
                    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: ".encode())
                    while sent < limit and not attack.stop.is_set():
                        sock.sendall(chunk)
                        sent += len(chunk)
                    if sent >= limit:
                        sock.sendall(b"\r\n\r\n")
                    status = _status_of(sock.recv(4096))
            except OSError as error:
                status = type(error).__name__
            attack.count(status)
            with attack.lock:
                attack.notes["max_header_mb_sent"] = max(
                    attack.notes.get("max_header_mb_sent", 0.0), round(sent / 2**20, 1)
                )

    attack.spawn(client, 4)


def malformed(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    data = ctx["good"].read_bytes()
    forms = [
        {"files": {"file": ("clip.mp4", data, "video/mp4")}},
        {"data": data, "headers": {"Content-Type": "multipart/form-data"}},
        {"files": {"video": ("a" * 15000 + ".mp4", data, "video/mp4")}},
        {"files": {"video": (None, "ftp://example.com/clip.mp4")}},
        {"files": {f"f{i}": (None, "1") for i in range(1001)}},
    ]
    attack.spawn(_posting(attack, f"{server.url}/predict", lambda i: forms[i % len(forms)]), 4)


def _getting(attack: Attack, url_of: Callable[[int], str]) -> Callable:
    counter = iter(range(10**9))

    def client() -> None:
        pace = attack.pacer()
        with requests.Session() as session:
            while not attack.stop.is_set():
                pace()
                try:
                    status: int | str = session.get(url_of(next(counter)), timeout=30).status_code
                except requests.RequestException as error:
                    status = type(error).__name__
                attack.count(status)

    return client


def probe_flood(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    """Row 0, the reference: the cheapest request there is (GET /readyz) from as many
    clients at the same rate as the request-sending attacks. On a machine whose cores the
    attacker shares with the server, any traffic at that rate slows good requests; an attack
    is only worse than traffic when its row is worse than this one."""
    attack.spawn(_getting(attack, lambda _: f"{server.url}/readyz"), 4)


def refused_flood(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    log: Path = server.log
    attack.notes["log_bytes_before"] = log.stat().st_size if log.is_file() else 0
    attack.spawn(_getting(attack, lambda i: f"{server.url}/attack-flood-{i}"), 4)


def urllib_over_limit(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    body = b"\0" * int((ctx["max_upload_mb"] + 1) * 2**20)

    def client() -> None:
        pace = attack.pacer()
        while not attack.stop.is_set():
            pace()
            request = urllib.request.Request(
                f"{server.url}/predict",
                data=body,
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            try:
                status: int | str = urllib.request.urlopen(request, timeout=60).status
            except urllib.error.HTTPError as error:
                status = error.code
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                status = type(reason).__name__
            attack.count(status)

    attack.spawn(client, 2)


def tiny_images(server: Server, ctx: dict[str, Any], attack: Attack) -> None:
    data = ctx["tiny"].read_bytes()
    info = requests.get(f"{server.url}/model", timeout=30).json()
    shown = json.dumps({k: info.get(k) for k in ("source", "calibration", "prediction_log")})
    attack.notes["model_shows_absolute_path"] = '"/' in shown

    def make(_: int) -> dict[str, Any]:
        return {"files": {"video": ("tiny.mp4", data, "video/mp4")}}

    attack.spawn(_posting(attack, f"{server.url}/predict", make), 4)


# The decode bomb last: the decoders it ties up are killed and restarted after it, which
# would otherwise slow the first good requests of the next attack.
ATTACKS: list[tuple[int, str, Callable[[Server, dict[str, Any], Attack], None]]] = [
    (0, "probe_flood (reference)", probe_flood),
    (2, "stalled_bodies", stalled_bodies),
    (3, "huge_headers", huge_headers),
    (4, "half_open", half_open),
    (5, "malformed", malformed),
    (6, "refused_flood", refused_flood),
    (7, "urllib_over_limit", urllib_over_limit),
    (8, "tiny_images", tiny_images),
    (1, "decode_bomb", decode_bomb),
]


# --------------------------------------------------------------------------- the run


def flood_accounting(log: Path, sent: int, bytes_before: int) -> dict[str, Any]:
    """Row 6: log records of the flood + the dropped counts against the requests sent."""
    flood = dropped = 0
    for record in read_prediction_log(log):
        if str(record.get("path", "")).startswith("/attack-flood-"):
            flood += 1
        elif record.get("status") == "dropped":
            dropped += int(record.get("by_status", {}).get("404", 0))
    grown = (log.stat().st_size if log.is_file() else 0) - bytes_before
    return {
        "flood_sent": sent,
        "flood_logged": flood,
        "flood_dropped_counted": dropped,
        "log_bytes_per_request": round(grown / sent, 1) if sent else None,
    }


def run_attack(
    server: Server,
    ctx: dict[str, Any],
    row: int,
    name: str,
    start: Callable[[Server, dict[str, Any], Attack], None],
    args: argparse.Namespace,
) -> dict[str, Any]:
    good_latencies(server, ctx["good"], 0.01)  # one answered upload: the server has settled
    attack = Attack(args.client_rps)
    start(server, ctx, attack)
    time.sleep(args.warmup_s)
    latencies, good = good_latencies(server, ctx["good"], args.seconds)
    attack.finish(ATTACK_TIMEOUT_S + 10)
    result = {
        "row": row,
        "attack": name,
        "attacker": {str(k): v for k, v in attack.statuses.most_common()},
        "good_p50_ms": _median_ms(latencies),
        "good_n": len(latencies),
        "good_failed": sum(n for status, n in good.items() if status != 200),
        "good_statuses": {str(k): v for k, v in good.items()},
        **attack.notes,
    }
    if name == "refused_flood":
        time.sleep(1.0)  # let the log's bucket refill so the dropped count is written
        good_latencies(server, ctx["good"], 0.1)
        sent = sum(n for status, n in attack.statuses.items() if status == 404)
        result.update(flood_accounting(server.log, sent, attack.notes["log_bytes_before"]))
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # SIGTERM (a `timeout` around the run) unwinds like Ctrl-C, so the servers this run
    # started (each in its own session) are stopped by the finally blocks, not orphaned.
    stop_on_signals()
    scratch = Path(tempfile.mkdtemp(prefix="bench-attack-"))
    rng = np.random.default_rng(0)
    model_dir = args.model or write_model(args.params, None, scratch / "untrained")
    inputs = scratch / "inputs"
    inputs.mkdir()
    good = inputs / "good.mp4"
    write_phone_clip(good, 0, args.clip_seconds, (args.clip_size, args.clip_size), rng)
    started = time.perf_counter()
    bomb = write_decode_bomb(inputs / "bomb.mp4", args.bomb_side, args.bomb_frames)
    bomb_s = time.perf_counter() - started
    ctx: dict[str, Any] = {
        "good": good,
        "bomb": bomb,
        "tiny": write_tiny_image(inputs / "tiny.png"),
        "bomb_clients": args.bomb_clients,
        "stalled": args.stalled,
        "half_open": args.half_open,
        "header_mb": args.header_mb,
        "max_upload_mb": args.max_upload_mb,
    }
    only = {int(x) for x in args.only.split(",")} if args.only else None
    server = start_server(
        "attack", scratch, model_dir, args.params, {"max_upload_mb": args.max_upload_mb}
    )
    rows: list[dict[str, Any]] = []
    try:
        idle, idle_statuses = good_latencies(server, good, args.seconds)
        for row, name, start in ATTACKS:
            if only is None or row in only or row == 0:  # row 0 is every run's reference
                print(f"attack {row} {name} ...", file=sys.stderr, flush=True)
                rows.append(run_attack(server, ctx, row, name, start, args))
        good_latencies(server, good, 0.01)  # settled after the last attack
        idle_end, _ = good_latencies(server, good, args.seconds)
    finally:
        server.stop()
    baseline = _median_ms(idle + idle_end) or float("nan")
    reference = next((r["good_p50_ms"] for r in rows if r["row"] == 0), None)
    for result in rows:
        p50 = result["good_p50_ms"]
        result["ratio"] = None if p50 is None else round(p50 / baseline, 2)
        if reference and p50 is not None:
            result["vs_probe_flood"] = round(p50 / reference, 2)
    report = {
        "idle_p50_ms": round(baseline, 1),
        "idle_p50_ms_start_end": [_median_ms(idle), _median_ms(idle_end)],
        "idle_statuses": {str(k): v for k, v in idle_statuses.items()},
        "bomb": {"side": args.bomb_side, "frames": args.bomb_frames, "write_s": round(bomb_s, 1)},
        "seconds": args.seconds,
        "client_rps": args.client_rps,
        "attacks": rows,
        "scratch": str(scratch),
    }
    print(json.dumps(report, indent=2))
    _print_table(report)
    worst = [r["ratio"] for r in rows if r["ratio"] is not None and r["row"] != 0]
    ok = all(r["good_failed"] == 0 for r in rows) and all(x <= TARGET_RATIO for x in worst)
    return 0 if ok else 1


def _median_ms(latencies: list[float]) -> float | None:
    return round(statistics.median(latencies) * 1000, 1) if latencies else None


def _print_table(report: dict[str, Any]) -> None:
    print(f"\nidle good-request p50: {report['idle_p50_ms']} ms\n")
    print(
        "| row | attack | attacker got | good p50 ms | × idle | × probe flood | good failed | notes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    skip = {"row", "attack", "attacker", "good_p50_ms", "ratio", "vs_probe_flood", "good_failed"}
    skip.add("good_statuses")
    for r in report["attacks"]:
        got = ", ".join(f"{k}×{v}" for k, v in r["attacker"].items())
        notes = ", ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
        p50 = "-" if r["good_p50_ms"] is None else f"{r['good_p50_ms']:.0f}"
        print(
            f"| {r['row']} | {r['attack']} | {got} | {p50} | {r['ratio']} | "
            f"{r.get('vs_probe_flood', '-')} | {r['good_failed']} | {notes} |"
        )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=None, help="a trained model folder")
    parser.add_argument("--seconds", type=float, default=8.0, help="good-client time per phase")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="attack time before measuring")
    parser.add_argument("--only", default="", help="comma-separated rows, e.g. 2,3,4")
    parser.add_argument("--max-upload-mb", type=float, default=2.0)
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--clip-size", type=int, default=96, help="good clip side, px")
    parser.add_argument("--bomb-side", type=int, default=4096)
    parser.add_argument("--bomb-frames", type=int, default=3600)
    parser.add_argument("--bomb-clients", type=int, default=2)
    parser.add_argument("--stalled", type=int, default=32)
    parser.add_argument("--half-open", type=int, default=1000)
    parser.add_argument("--header-mb", type=float, default=100.0)
    parser.add_argument(
        "--client-rps",
        type=float,
        default=25.0,
        help="pace of each request-sending attacker (rows 1, 5-8); 0: as fast as it can",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_stoppable(main, Path(__file__).name)
