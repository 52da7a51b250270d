"""Does the drift monitor scale with the prediction log?

For 1k, 10k and 100k answered predictions (plus 5 % refusals and one torn last line, as a
crashed worker leaves it), a prediction log is generated in the service's own record format
(``prediction_record`` / ``error_record`` through :class:`PredictionLog`, embeddings of the
model's width at 4 decimals), and the monitor's whole check (:func:`check_log`: read the log,
the traffic snapshot, the Evidently drift report, report.html, snapshot.json, summary.json and
the dashboard workspace) is timed against a fixed 1,000-row reference, after Evidently has been
imported (its import, timed apart, is paid once per process). Reported per size:
seconds, seconds per 1k rows and that figure as a ratio against the 1k log measured in the
same run (≤ 1 is linear or better). Targets: linear, and 100k under 60 s.

    .venv/bin/python benchmarks/drift.py                     # 1k, 10k, 100k
    .venv/bin/python benchmarks/drift.py --quick             # 1k, 10k
    .venv/bin/python benchmarks/drift.py --sizes 1000,30000 --json reports/bench_drift.json

The reference is generated too (same generator, another seed: no drift), stored where
``load_or_build_reference`` looks for it, under the fingerprint of the (absent) model, cache
and split it names, so the check reuses it as it reuses a real one instead of running a model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from emotions.atomic import atomic_write_json
from emotions.config import load_params
from emotions.monitor.drift import check_log
from emotions.monitor.reference import log_table, reference_key
from emotions.serve.limits import Rejection
from emotions.serve.prediction_log import PredictionLog, error_record, prediction_record

TARGET_100K_S = 60.0
LINEAR_TOLERANCE = 1.2  # per-row time may be this much above the 1k log's and count as linear
CLASSES = ["Excitation", "Fear", "Neutral", "Relaxation", "Sadness", "Tension"]  # emotions6
POLARITY = ["positive", "negative", "neutral", "positive", "negative", "negative"]
REFUSALS = [
    Rejection(413, "payload_too_large", "the upload exceeds serve.max_upload_mb"),
    Rejection(415, "unsupported_media_type", "notes.txt: not a video"),
    Rejection(422, "undecodable_video", "clip.mp4: no video stream"),
]


def write_log(path: Path, rows: int, dim: int, seed: int, *, torn: bool = True) -> float:
    """A prediction log of ``rows`` answered requests (and 5 % refusals); seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    log = PredictionLog(path)
    logits = rng.normal(size=(rows, len(CLASSES))) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    embeddings = rng.normal(size=(rows, dim)).astype(np.float32)
    stats = np.column_stack(
        [
            rng.beta(5, 4, rows),  # brightness
            rng.gamma(2.0, 0.01, rows),  # motion
            rng.normal(-6.0, 1.5, rows),  # loudness (mean log-mel)
            rng.uniform(1.5, 6.0, rows),  # duration_s
            rng.random(rows) < 0.9,  # has_audio
        ]
    )
    for i in range(rows):
        best = int(probs[i].argmax())
        result = {
            "label": CLASSES[best],
            "polarity": POLARITY[best],
            "probabilities": dict(zip(CLASSES, probs[i].round(6).tolist(), strict=True)),
            "modality_share": {"audio": 0.4, "visual": 0.6},
        }
        brightness, motion, loudness, duration, has_audio = stats[i]
        inputs = {
            "brightness": brightness,
            "motion": motion,
            "loudness": loudness if has_audio else float("nan"),
            "duration_s": duration,
            "has_audio": float(has_audio),
        }
        log.append(
            prediction_record(
                request_id=f"{seed}-{i}",
                filename=f"clip_{i:06d}.mp4",
                result=result,
                stats=inputs,
                embedding=embeddings[i],
                model="emotions-full:bench",
                size_bytes=int(2e6),
                latency_ms=40.0,
                batch_size=1,
            )
        )
        if i % 20 == 19:
            rejection = REFUSALS[(i // 20) % len(REFUSALS)]
            log.append(error_record(request_id=f"{seed}-x{i}", rejection=rejection))
    log.close()
    if torn:
        with path.open("ab") as handle:
            handle.write(b'{"id": "killed", "status": "ok", "filename": "clip')
    return time.perf_counter() - started


def prepare_reference(scratch: Path, out: Path, rows: int, dim: int) -> dict[str, Path]:
    """The reference table in ``out``, keyed as the check will look it up."""
    log = scratch / "reference.jsonl"
    write_log(log, rows, dim, seed=1, torn=False)
    table = log_table(log)
    table.insert(0, "clip_id", [f"ref{i:05d}" for i in range(len(table))])
    where = {
        "model_dir": scratch / "no-model",
        "cache_dir": scratch / "no-cache",
        "split_file": scratch / "no-split.parquet",
    }
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "reference.parquet", index=False)
    key = reference_key(where["model_dir"], where["cache_dir"], where["split_file"], "val")
    atomic_write_json({"key": key, "rows": len(table), "split": "val"}, out / "reference.json")
    return where


def measure(scratch: Path, rows: int, dim: int, reference_rows: int) -> dict[str, Any]:
    where = scratch / f"n{rows}"
    where.mkdir()
    log = where / "predictions.jsonl"
    write_s = write_log(log, rows, dim, seed=rows)
    out = where / "monitor"
    fake = prepare_reference(where, out, reference_rows, dim)
    started = time.perf_counter()
    summary = check_log(log, out, **fake, split="val", min_rows=30, workspace=where / "workspace")
    seconds = time.perf_counter() - started
    assert summary.rows_current == rows, summary.rows_current
    return {
        "rows": rows,
        "log_mb": log.stat().st_size / 1e6,
        "write_s": write_s,
        "monitor_s": seconds,
        "s_per_1k": seconds / rows * 1000,
        "torn_lines": int(summary.window["torn_lines"]),
        "requests": int(summary.window["requests"]),
        "drifted": summary.drifted,
        "skipped": summary.skipped,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]), flush=True)
    dim = args.dim or load_params(args.params).model.dim
    sizes = [1000, 10000] if args.quick else args.sizes
    print(f"{os.cpu_count()} CPUs, embedding dim {dim}, reference {args.reference_rows} rows")
    started = time.perf_counter()
    import evidently.legacy.metrics.data_drift.embeddings_drift
    import evidently.metrics
    import evidently.presets
    import evidently.ui.workspace  # noqa: F401

    import_s = time.perf_counter() - started
    print(f"importing Evidently: {import_s:.1f} s (once per process; not in the table)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        for rows in sizes:
            print(f"monitor on {rows} logged predictions ...", flush=True)
            results.append(measure(Path(scratch), rows, dim, args.reference_rows))
    base = results[0]
    for result in results:
        result["per_row_ratio"] = result["s_per_1k"] / base["s_per_1k"]
        result["time_ratio"] = result["monitor_s"] / base["monitor_s"]
    print()
    print(
        f"| logged predictions | log MB | monitor s | s per 1k rows | per-row ratio vs "
        f"{base['rows']} | time ratio | torn lines |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['log_mb']:.1f} | {r['monitor_s']:.2f} | {r['s_per_1k']:.3f} | "
            f"{r['per_row_ratio']:.2f} | {r['time_ratio']:.1f} | {r['torn_lines']} |"
        )
    linear = all(r["per_row_ratio"] <= LINEAR_TOLERANCE for r in results)
    largest = results[-1]
    print()
    print(f"linear (per-row ratio <= {LINEAR_TOLERANCE}): {'yes' if linear else 'NO'}")
    if largest["rows"] >= 100_000:
        ok = largest["monitor_s"] < TARGET_100K_S
        print(
            f"{largest['rows']:,} rows in {largest['monitor_s']:.1f} s (target < 60 s): "
            f"{'yes' if ok else 'NO'}"
        )
    if args.json:
        payload = {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "cpus": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
            "dim": dim,
            "reference_rows": args.reference_rows,
            "evidently_import_s": import_s,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[1000, 10000, 100000],
        help="comma-separated log sizes (answered predictions); the first is the baseline",
    )
    parser.add_argument("--quick", action="store_true", help="1k and 10k only")
    parser.add_argument("--reference-rows", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=None, help="default: params model.dim")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
