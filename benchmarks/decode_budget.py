"""Does the decode budget refuse a small clip of huge frames at once, and cost good clips nothing?

Issue 21, row 1: a 170 KB h264 file of 3600 black 4096² frames behind one keyframe keeps every
clip bound (size, duration, rate, side) and held a decoder until ``serve.decode_timeout_s``.
``ingest.max_decode_pixels`` now refuses it from its keyframe index, before a frame is decoded
(:func:`emotions.media.clipcheck.check_decode_cost`). Measured in one run:

1. Attack: the service's decoder pool (``emotions.serve.decoding.DecoderPool``, its default two
   workers and ``decode_timeout_s``) gets two attack clips and, right behind them, one good
   clip. *Before*: the budget set out of reach (10¹⁸ px), the path as it was, so each attack
   decodes until it is done or killed at the timeout. *After*: params.yaml's budget. Figures:
   seconds until each attack is answered, and the good clip's latency as a ratio to its idle
   latency in the same pool (target ≤ 2×, the issue's goal).
2. Good clips: ``decode_clip`` on phone-like clips (h264, 2 s GOP) with the budget (the extra
   packet scan and check) and without, interleaved, ``--repeats`` times each (6): the ratio of
   median times (target ≤ 1.05).

    .venv/bin/python benchmarks/decode_budget.py                 # the issue's file: 3600 frames
    .venv/bin/python benchmarks/decode_budget.py --frames 900    # a quicker file, same shape

Building the 3600-frame file costs a few minutes of one core (x264 at 4096²); ``--keep DIR``
keeps the clips for a second run. A shared machine: only the ratios are meant to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from phone_clips import write_phone_clip

from emotions.config import IngestConfig, PreprocessConfig, ServeConfig, load_params
from emotions.media.clipcheck import ClipBounds
from emotions.media.decode import decode_clip, decode_limit
from emotions.media.encode import write_blank_clip
from emotions.serve.decoding import DecodeFailed, DecoderPool
from emotions.serve.sizing import without_measuring

OUT_OF_REACH = 10**18
TARGET_GOOD_LATENCY = 2.0
TARGET_OVERHEAD = 1.05


def settings(params_path: Path) -> tuple[PreprocessConfig, IngestConfig, ServeConfig]:
    """The preprocessing a served model decodes with (one view), and the clip and serve
    settings, from params.yaml when it exists."""
    if params_path.is_file():
        params = load_params(params_path)
        preprocess, ingest, serve = params.preprocess, params.ingest, params.serve
    else:
        preprocess, ingest, serve = PreprocessConfig(), IngestConfig(), ServeConfig()
    return preprocess.model_copy(update={"positions": 1}), ingest, serve


def attack_round(
    config: PreprocessConfig,
    bounds: ClipBounds,
    serve: ServeConfig,
    attack: Path,
    good: Path,
    attackers: int,
) -> dict[str, Any]:
    """Idle latency of the good clip, then ``attackers`` attacks with the good clip behind."""
    pool = DecoderPool(
        config,
        # auto: the CPU's count (no model here to size it by); this benchmark runs on a CPU.
        workers=without_measuring(serve).decode_workers,
        timeout_s=serve.decode_timeout_s,
        bounds=bounds,
    )
    try:
        pool.warm_up()

        async def timed(path: Path, name: str) -> tuple[float, str]:
            started = time.perf_counter()
            try:
                await pool.decode(path, name)
                outcome = "decoded"
            except DecodeFailed as failed:
                outcome = failed.rejection.detail
            return time.perf_counter() - started, outcome

        async def idle() -> list[float]:
            return [(await timed(good, "good.mp4"))[0] for _ in range(3)]

        async def under_attack() -> list[tuple[float, str]]:
            attacks = [timed(attack, "attack.mp4") for _ in range(attackers)]
            return await asyncio.gather(*attacks, timed(good, "good.mp4"))

        idle_s = statistics.median(asyncio.run(idle()))
        answers = asyncio.run(under_attack())
    finally:
        pool.close()
    attack_s = [seconds for seconds, _ in answers[:-1]]
    good_s, good_outcome = answers[-1]
    return {
        "idle_good_s": round(idle_s, 3),
        "attack_answered_s": [round(s, 3) for s in attack_s],
        "attack_answer": answers[0][1],
        "good_under_attack_s": round(good_s, 3),
        "good_outcome": good_outcome,
        "good_latency_ratio": round(good_s / idle_s, 2),
    }


def overhead(config: PreprocessConfig, limit: int, clips: list[Path], repeats: int) -> dict:
    """decode_clip with and without the budget, interleaved (each first in turn): median
    seconds per clip."""
    for clip in clips:  # imports and first-use costs out of the way
        decode_clip(clip, config, max_decode_pixels=limit)
    timings: dict[str, list[float]] = {"bounded": [], "unbounded": []}
    pairs = [("bounded", limit), ("unbounded", None)]
    for repeat in range(repeats):
        for clip in clips:
            for name, budget in pairs if repeat % 2 else pairs[::-1]:  # either goes first
                started = time.perf_counter()
                decode_clip(clip, config, max_decode_pixels=budget)
                timings[name].append(time.perf_counter() - started)
    bounded, unbounded = (statistics.median(timings[k]) for k in ("bounded", "unbounded"))
    return {
        "bounded_s": round(bounded, 4),
        "unbounded_s": round(unbounded, 4),
        "ratio": round(bounded / unbounded, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=3600)
    parser.add_argument("--attackers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--keep", type=Path, help="folder to keep (and reuse) the clips in")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="decode-budget-") as scratch:
            run(args, Path(scratch))


def run(args: argparse.Namespace, where: Path) -> None:
    """Build (or reuse) the clips under ``where``, measure, print and write the figures."""
    config, ingest, serve = settings(args.params)
    attack = where / f"attack-{args.side}-{args.frames}.mp4"
    if not attack.is_file():
        started = time.perf_counter()
        write_blank_clip(attack, args.side, args.frames)
        print(f"attack clip built in {time.perf_counter() - started:.1f} s", flush=True)
    rng = np.random.default_rng(0)
    good = []
    for index, size in enumerate([(540, 960), (720, 1280), (360, 640)]):
        path = where / f"phone-{size[0]}x{size[1]}.mp4"
        if not path.is_file():
            write_phone_clip(path, index, 4.0, size, rng)
        good.append(path)

    bounds = ClipBounds.of(ingest)
    limit = decode_limit(bounds)
    result: dict[str, Any] = {
        "attack_file": {"side": args.side, "frames": args.frames, "bytes": attack.stat().st_size},
        "max_decode_pixels": limit,
        "decode_workers": without_measuring(serve).decode_workers,
        "decode_timeout_s": serve.decode_timeout_s,
    }
    print(json.dumps(result), flush=True)
    before_bounds = ClipBounds.of(ingest.model_copy(update={"max_decode_pixels": OUT_OF_REACH}))
    for name, chosen in (("before", before_bounds), ("after", bounds)):
        result[name] = attack_round(config, chosen, serve, attack, good[0], args.attackers)
        print(name, json.dumps(result[name]), flush=True)
    result["refusal_speedup"] = round(
        statistics.median(result["before"]["attack_answered_s"])
        / statistics.median(result["after"]["attack_answered_s"]),
        1,
    )
    result["good_clips"] = overhead(config, limit, good, args.repeats)
    print("good clips", json.dumps(result["good_clips"]), flush=True)
    after = result["after"]
    print(
        f"attack answered in {statistics.median(after['attack_answered_s']):.3f} s "
        f"(before {statistics.median(result['before']['attack_answered_s']):.1f} s, "
        f"{result['refusal_speedup']}× sooner); good clip under attack "
        f"{after['good_latency_ratio']}× idle (before {result['before']['good_latency_ratio']}×, "
        f"target ≤ {TARGET_GOOD_LATENCY}×); good clips with/without the budget "
        f"{result['good_clips']['ratio']}× (target ≤ {TARGET_OVERHEAD})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
