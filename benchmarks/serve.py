"""Does micro-batching pay, which batcher wins, and does the service hold under a mixed soak?

Everything runs in one invocation, against the real service (`emotions serve`, i.e. ``bentoml
serve emotions.serve.service:EmotionService``) started on loopback in a second process:

1. In-process floor: decode ms per clip, and forward ms per clip at batch 1 and at batch 8
   (the predictor's three passes: full, audio masked, video masked). It states the case being
   measured: *forward-bound* when the forward pass costs more than decoding, which is when
   batching forward passes can pay at all; the ratio batch-8/batch-1 forward is the most the
   server can gain from batching on this machine.
2. Throughput: requests/s, p50 and p95 for 1 and 8 concurrent clients with batching off
   (``serve.batch_size: 1``), with the service's micro-batcher (``serve.batcher: micro``) and
   with BentoML's adaptive batching of the inner batchable API (``serve.batcher: bentoml``),
   each a fresh server; ratios against batching off at the same client count. Target: ≥ 2× at
   8 clients for the forward-bound case.
3. Soak: 16 clients for ``--soak-s`` seconds (default 60) of mixed good and bad uploads (half
   good clips; too large 413, not a video 415, undecodable 422, no file 400) against the
   winning batcher: status counts, 5xx count (target 0) and the server's RSS (all its
   processes) before and after (target: flat within 10 %).

    .venv/bin/python benchmarks/serve.py                    # full: 20 s per point, 60 s soak
    .venv/bin/python benchmarks/serve.py --quick            # 6 s per point, 15 s soak
    .venv/bin/python benchmarks/serve.py --model artifacts/models/emotions/full --soak-s 120
    .venv/bin/python benchmarks/serve.py --device cuda --batch-size auto --max-latency-ms auto \
        --decode-workers auto                       # the servers size themselves; printed

Each server's resolved sizes (``GET /model``'s ``batching``: the values, whether configured or
``auto`` measured on its device, and the forward timings they came from) are printed when it
starts and kept in the JSON under ``sizes``.

The model: ``--model`` (a trained folder), else an untrained AV-CANet built from params.yaml's
``model:`` section and written as a model folder (model.json + best.pt) in a scratch folder;
the forward cost depends on the architecture, not on the weights. ``--params`` (with
``--overlay`` for a preset such as params/ours-closest.yaml) chooses that architecture: a larger one
makes the forward share larger. The clips are generated (``--clip-seconds``, ``--clip-size``):
short, small clips keep decoding cheap, so the forward pass dominates.

This is a shared machine: the clients, the server's decoder processes and its forward thread
share its cores (2 here), so absolute figures move with other load; the ratios are taken
between points measured minutes apart in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
import yaml
from phone_clips import write_phone_clip

from emotions.config import load_params
from emotions.lifetime import stop_on_signals
from emotions.serve.launch import wait_until_ready
from emotions.serve.prediction_log import read_prediction_log

TARGET_BATCHING = 2.0
TARGET_RSS_GROWTH = 0.10
MAX_UPLOAD_MB = 2.0  # small, so the soak's too-large uploads are cheap to send
BATCH = 8


# --------------------------------------------------------------------------- inputs


def write_model(params_path: Path, overlay: Path | None, out: Path) -> Path:
    """An untrained model folder for params' architecture (throughput does not need weights)."""
    import torch

    from emotions.cache.format import STATS
    from emotions.layout import BEST, META, RunPaths
    from emotions.models.avcanet import AVCANet
    from emotions.models.settings import ModelSettings, without_weights
    from emotions.training.checkpoints import atomic_torch_save
    from emotions.training.trainer import model_metadata

    params = load_params(params_path)
    if overlay is not None:
        from emotions.params_overlay import apply_overlay

        params, _ = apply_overlay(params_path, overlay)
    stats = out / "stats"
    stats.mkdir(parents=True)
    (stats / STATS).write_text(json.dumps({"fbank_mean": 0.0, "fbank_std": 1.0}))
    model_dir = out / "model"
    model_dir.mkdir()
    run = params.serve.run
    meta = model_metadata(params, run, RunPaths(cache=stats, split=stats, model_dir=model_dir))
    torch.manual_seed(0)
    settings = without_weights(ModelSettings.model_validate(meta["model"]))
    model = AVCANet(settings, num_classes=len(meta["classes"]))
    (model_dir / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    atomic_torch_save({"model": model.state_dict(), "epoch": 0}, model_dir / BEST)
    return model_dir


@dataclass(frozen=True)
class Uploads:
    good: list[Path]
    too_large: Path
    text: Path
    undecodable: Path


def write_uploads(root: Path, clips: int, seconds: float, size: tuple[int, int]) -> Uploads:
    """Phone-like h264/AAC clips, and one upload of each kind the service must refuse."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = []
    for i in range(clips):
        path = root / f"clip_{i:02d}.mp4"
        write_phone_clip(path, i, seconds, size, rng)
        good.append(path)
    too_large = root / "too_large.mp4"
    too_large.write_bytes(rng.bytes(int((MAX_UPLOAD_MB + 0.5) * 1024 * 1024)))
    text = root / "notes.txt"
    text.write_text("shot list\n1. smile\n", encoding="utf-8")
    undecodable = root / "random.mp4"
    undecodable.write_bytes(rng.bytes(200_000))
    return Uploads(good, too_large, text, undecodable)


def in_process_floor(
    model_dir: Path,
    clips: list[Path],
    repeat: int,
    device: str = "cpu",
    precision: str = "auto",
    compare_with_cpu: bool = True,
) -> dict[str, float]:
    """Decode ms/clip and forward ms/clip at batch 1 and batch 8, one torch thread (the
    forward on ``device``; results are read back to the host, so CUDA time is waited for).
    ``compare_with_cpu`` reruns the batch on the CPU in fp32 (one thread: minutes at the
    paper's size, so the server runs skip it)."""
    import torch

    from emotions.serve.predictor import Predictor

    torch.set_num_threads(1)
    predictor = Predictor(model_dir, device=device, precision=precision)
    started = time.perf_counter()
    decoded = [predictor.decode(path) for path in clips]
    decode_ms = (time.perf_counter() - started) / len(clips) * 1000
    batch = [decoded[i % len(decoded)] for i in range(BATCH)]
    with torch.inference_mode():
        predictor.predict_clips_with_embeddings(batch[:1])  # warm-up
        one, eight = [], []
        for _ in range(repeat):  # interleaved, best of each
            started = time.perf_counter()
            for clip in batch:
                predictor.predict_clips_with_embeddings([clip])
            one.append((time.perf_counter() - started) / BATCH * 1000)
            started = time.perf_counter()
            predictor.predict_clips_with_embeddings(batch)
            eight.append((time.perf_counter() - started) / BATCH * 1000)
    floor = {
        "decode_ms": decode_ms,
        "forward_b1_ms": min(one),
        "forward_b8_ms": min(eight),
        "device": str(predictor.device),
        "precision": "bf16" if predictor.placement.bf16 else "fp32",
    }
    if compare_with_cpu and predictor.device.type != "cpu":
        # The served probabilities off the CPU against the CPU's fp32 ones, same weights and
        # clips: what the bf16 tolerance in docs/serving.md is read from.
        reference = Predictor(model_dir, device="cpu", precision="fp32")
        ours, _ = predictor.predict_clips_with_embeddings(batch)
        theirs, _ = reference.predict_clips_with_embeddings(batch)
        floor["max_abs_prob_diff_vs_cpu_fp32"] = max(
            abs(a["probabilities"][k] - b["probabilities"][k])
            for a, b in zip(ours, theirs, strict=True)
            for k in a["probabilities"]
        )
        floor["same_label_as_cpu"] = sum(
            a["label"] == b["label"] for a, b in zip(ours, theirs, strict=True)
        ) / len(ours)
    return floor


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    output: Path

    def rss_mb(self) -> float:
        """Resident memory of the server and every process under it (workers, decoders)."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 1e6

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def start_server(
    name: str, scratch: Path, model_dir: Path, params_path: Path, serve: dict[str, Any]
) -> Server:
    """`emotions serve` with params.yaml's serve: section updated by ``serve``."""
    where = scratch / name
    where.mkdir()
    raw = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    raw["serve"].update(serve)
    (where / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    port = free_port()
    log = where / "predictions.jsonl"
    argv = [
        sys.executable, "-m", "emotions", "--params", "params.yaml", "serve",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--log", str(log),
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENTOML_HOME": str(where / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in ("EMOTIONS_MODEL_DIR", "EMOTIONS_PREDICTION_LOG", "EMOTIONS_PARAMS"):
        env.pop(key, None)
    output = where / "server.out"
    with output.open("wb") as handle:
        process = subprocess.Popen(
            argv, cwd=where, env=env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(name, f"http://127.0.0.1:{port}", process, log, output)
    try:
        wait_until_ready(
            f"{server.url}/readyz", process, timeout_s=300, tail=lambda: output.read_text()[-3000:]
        )
    except RuntimeError as error:
        server.stop()
        raise RuntimeError(f"{name}: {error}") from None
    return server


# --------------------------------------------------------------------------- load


def post(session: requests.Session, url: str, path: Path | None, type_: str = "video/mp4"):
    if path is None:
        return session.post(f"{url}/predict", timeout=300)
    files = {"video": (path.name, path.read_bytes(), type_)}
    return session.post(f"{url}/predict", files=files, timeout=300)


def load(
    server: Server, clients: int, seconds: float, pick: Any
) -> tuple[list[float], Counter, float]:
    """``clients`` threads posting ``pick(i)`` uploads for ``seconds``: latencies (s) of the
    200s, status counts, elapsed seconds."""
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    counter = iter(range(10**9))

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter)
                path, type_ = pick(i)
                started = time.perf_counter()
                try:
                    status = post(session, server.url, path, type_).status_code
                except requests.RequestException as error:
                    status = type(error).__name__
                except OSError:
                    return  # the run is ending: its scratch folder is gone
                took = time.perf_counter() - started
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(took)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def throughput(server: Server, uploads: Uploads, clients: int, seconds: float) -> dict[str, Any]:
    def good(i: int) -> tuple[Path, str]:
        return uploads.good[i % len(uploads.good)], "video/mp4"

    load(server, clients, min(3.0, seconds), good)  # warm-up at this concurrency
    before = sum(1 for _ in read_prediction_log(server.log))
    latencies, statuses, elapsed = load(server, clients, seconds, good)
    batches = [r.get("batch_size", 1) for r in list(read_prediction_log(server.log))[before:]]
    return {
        "clients": clients,
        "requests": len(latencies),
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "non_200": {str(k): v for k, v in statuses.items() if k != 200},
        "mean_batch": statistics.fmean(batches) if batches else float("nan"),
    }


def soak(server: Server, uploads: Uploads, seconds: float, clients: int) -> dict[str, Any]:
    bad: list[tuple[Path | None, str]] = [
        (uploads.too_large, "video/mp4"),
        (uploads.text, "text/plain"),
        (uploads.undecodable, "video/mp4"),
        (None, ""),
    ]

    def mixed(i: int) -> tuple[Path | None, str]:
        if i % 2 == 0:
            return uploads.good[(i // 2) % len(uploads.good)], "video/mp4"
        return bad[(i // 2) % len(bad)]

    rss_before = server.rss_mb()
    latencies, statuses, elapsed = load(server, clients, seconds, mixed)
    rss_after = server.rss_mb()
    five = sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500)
    errors = sum(v for k, v in statuses.items() if not isinstance(k, int))
    return {
        "clients": clients,
        "seconds": elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "5xx": five,
        "connection_errors": errors,
        "good_p50_ms": percentile(latencies, 50),
        "good_p95_ms": percentile(latencies, 95),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth": rss_after / rss_before - 1.0,
    }


# --------------------------------------------------------------------------- main

CONFIGS = {
    "off": {"batch_size": 1, "batcher": "micro"},
    "micro": {"batch_size": BATCH, "batcher": "micro"},
    "bentoml": {"batch_size": BATCH, "batcher": "bentoml"},
}


def configs(batch_size: int | str) -> dict[str, dict[str, Any]]:
    """CONFIGS with the batched servers' ``serve.batch_size`` (``auto``: the server sizes it)."""
    return {
        name: {**config, "batch_size": batch_size} if name != "off" else config
        for name, config in CONFIGS.items()
    }


def served_sizes(server: Server) -> dict[str, Any]:
    """The sizes the server resolved (``auto`` measured on its device) and where they came
    from: ``GET /model``'s ``batching``."""
    return requests.get(f"{server.url}/model", timeout=30).json()["batching"]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # SIGTERM (a `timeout` around the run) unwinds like Ctrl-C, so the servers this run
    # started (each in its own session) are stopped by the finally blocks, not orphaned.
    stop_on_signals()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"$ {command}", flush=True)
    seconds = 6.0 if args.quick else args.seconds
    soak_s = (15.0 if args.quick else 60.0) if args.soak_s is None else args.soak_s
    result: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
        "seconds_per_point": seconds,
    }
    common = {
        "max_upload_mb": MAX_UPLOAD_MB,
        "max_latency_ms": args.max_latency_ms,
        "decode_workers": args.decode_workers,
        "torch_threads": 1,
        "workers": 1,
        "max_concurrency": 64,
        "device": args.device,
        "precision": args.precision,
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch_name:
        scratch = Path(scratch_name)
        model_dir = args.model or write_model(args.params, args.overlay, scratch / "untrained")
        size = tuple(int(v) for v in args.clip_size.split("x"))
        uploads = write_uploads(scratch / "uploads", 4, args.clip_seconds, size)  # type: ignore[arg-type]
        floor = in_process_floor(
            model_dir,
            uploads.good,
            repeat=2 if args.quick else 3,
            device=args.device,
            precision=args.precision,
            compare_with_cpu=args.in_process_only,
        )
        floor["forward_bound"] = floor["forward_b1_ms"] > floor["decode_ms"]
        floor["batch_gain_ceiling"] = floor["forward_b1_ms"] / floor["forward_b8_ms"]
        result["floor"] = floor
        if args.in_process_only:
            print(json.dumps(floor, indent=2), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
            return 0
        case = "forward-bound" if floor["forward_bound"] else "decode-bound"
        print(
            f"in-process, one thread: decode {floor['decode_ms']:.0f} ms/clip, forward "
            f"{floor['forward_b1_ms']:.0f} ms/clip at batch 1, {floor['forward_b8_ms']:.0f} at "
            f"batch {BATCH} ({floor['batch_gain_ceiling']:.2f}x): {case}",
            flush=True,
        )
        points: dict[str, list[dict[str, Any]]] = {}
        servers: dict[str, Server] = {}
        chosen = configs(args.batch_size)
        result["sizes"] = {}
        try:
            for name in args.configs:
                print(f"server '{name}' ({chosen[name]}) ...", flush=True)
                server = start_server(
                    name, scratch, model_dir, args.params, {**common, **chosen[name]}
                )
                try:
                    sizes = result["sizes"][name] = served_sizes(server)
                    print(f"  resolved: {_sizes_line(sizes)}", flush=True)
                    points[name] = [
                        throughput(server, uploads, clients, seconds) for clients in (1, 8)
                    ]
                finally:
                    server.stop()
                for point in points[name]:
                    print(f"  {point['clients']} clients: {point['req_per_s']:.2f} req/s, "
                          f"p50 {point['p50_ms']:.0f} ms, p95 {point['p95_ms']:.0f} ms, "
                          f"mean batch {point['mean_batch']:.1f}", flush=True)  # fmt: skip
            result["throughput"] = points
            batched = [n for n in ("micro", "bentoml") if n in points]
            winner = max(batched, key=lambda n: points[n][1]["req_per_s"]) if batched else "off"
            result["winner"] = winner
            if soak_s > 0:
                print(f"soak: 16 clients x {soak_s:g} s, batcher '{winner}' ...", flush=True)
                server = start_server(
                    "soak", scratch, model_dir, args.params, {**common, **chosen[winner]}
                )
                servers["soak"] = server

                def good(i: int) -> tuple[Path, str]:
                    return uploads.good[i % len(uploads.good)], "video/mp4"

                load(server, 16, min(5.0, soak_s), good)  # warm-up
                result["soak"] = soak(server, uploads, soak_s, 16)
        finally:
            for server in servers.values():
                server.stop()
    _print_tables(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def _sizes_line(sizes: dict[str, Any]) -> str:
    origin = sizes.get("sizing", {})
    line = ", ".join(
        f"{key} {sizes[key]} ({origin.get(key, '?')})"
        for key in ("batch_size", "max_latency_ms", "decode_workers")
    )
    timed = sizes.get("forward_ms_per_clip") or {}
    if timed:
        line += "; forward ms/clip by batch " + ", ".join(f"{b}: {ms}" for b, ms in timed.items())
    return line


def _print_tables(result: dict[str, Any]) -> None:
    points = result["throughput"]
    base = {p["clients"]: p for p in points.get("off", [])}
    print()
    print(f"$ {result['command']}")
    for name, sizes in result.get("sizes", {}).items():
        print(f"sizes of '{name}': {_sizes_line(sizes)}")
    print("| batcher | clients | req/s | p50 ms | p95 ms | mean batch | vs off (req/s) |")
    print("|---|---|---|---|---|---|---|")
    for name, series in points.items():
        for p in series:
            ref = base.get(p["clients"])
            ratio = f"{p['req_per_s'] / ref['req_per_s']:.2f}x" if ref else "-"
            print(
                f"| {name} | {p['clients']} | {p['req_per_s']:.2f} | {p['p50_ms']:.0f} | "
                f"{p['p95_ms']:.0f} | {p['mean_batch']:.1f} | {ratio} |"
            )
    if "micro" in points and "bentoml" in points:
        ratio = points["micro"][1]["req_per_s"] / points["bentoml"][1]["req_per_s"]
        print(f"\nmicro vs bentoml at 8 clients: {ratio:.2f}x; kept: {result['winner']}")
    if base and result["winner"] in points:
        gain = points[result["winner"]][1]["req_per_s"] / base[8]["req_per_s"]
        verdict = "yes" if gain >= TARGET_BATCHING else "NO"
        print(f"batching at 8 clients: {gain:.2f}x (target >= {TARGET_BATCHING:g}x): {verdict}")
    if "soak" in result:
        s = result["soak"]
        flat = abs(s["rss_growth"]) <= TARGET_RSS_GROWTH
        print(
            f"\nsoak: {s['clients']} clients x {s['seconds']:.0f} s, statuses {s['statuses']}, "
            f"5xx {s['5xx']} (target 0), connection errors {s['connection_errors']}; good p50 "
            f"{s['good_p50_ms']:.0f} ms, p95 {s['good_p95_ms']:.0f} ms; RSS "
            f"{s['rss_before_mb']:.0f} -> {s['rss_after_mb']:.0f} MB "
            f"({s['rss_growth']:+.1%}, target within 10 %: {'yes' if flat else 'NO'})"
        )


def _auto_or(kind: type) -> Any:
    """An argparse type: ``auto`` as is (the server resolves it), else ``kind``."""

    def parse(text: str) -> Any:
        return text if text == "auto" else kind(text)

    parse.__name__ = f"auto or {kind.__name__}"
    return parse


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 s per point, 15 s soak")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per throughput point")
    parser.add_argument("--soak-s", type=float, default=None, help="soak length (default 60)")
    parser.add_argument("--model", type=Path, default=None, help="a trained model folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overlay", type=Path, default=None, help="e.g. params/ours-closest.yaml")
    parser.add_argument("--clip-seconds", type=float, default=1.5)
    parser.add_argument("--clip-size", default="160x120", help="WIDTHxHEIGHT of the clips")
    # auto: the server sizes it (on a CPU 8, 25 ms, 2; on a GPU measured at its start).
    parser.add_argument("--batch-size", type=_auto_or(int), default=BATCH, help="micro/bentoml")
    parser.add_argument("--decode-workers", type=_auto_or(int), default=2, help="N or auto")
    parser.add_argument("--max-latency-ms", type=_auto_or(float), default=25.0, help="or auto")
    parser.add_argument(
        "--configs",
        type=lambda text: text.split(","),
        default=list(CONFIGS),
        help="which of off,micro,bentoml to measure (off is the baseline)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="cpu",
        help="where the forward runs, in-process and in the servers (serve.device)",
    )
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="only the in-process decode/forward ceiling (no servers; off the CPU it also "
        "compares the probabilities with the CPU's fp32 ones)",
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def run_stoppable(main: Callable[[], int], name: str) -> None:
    """Exit with ``main()``'s status, or 130 with one line when Ctrl-C or SIGTERM stopped it
    (its ``finally`` blocks have stopped the servers by then)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt as stopped:
        print(f"{name}: stopped ({stopped or 'Ctrl-C'}); its servers too", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_stoppable(main, Path(__file__).name)
