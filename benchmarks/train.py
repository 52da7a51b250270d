"""Does training keep the device busy, and what do the speed settings buy? One run, every ratio.

One command, on whatever device is present, measures the train stage's own step
(``emotions.training.trainer.training_loss`` → backward → grad clip → AdamW, no scheduler)
fed either by the train stage's own input pipeline (``make_loader``: persistent workers,
pinned memory, prefetch, ``EpochSampler`` keys over a memory-mapped clip pool with the cache's
layout, so each sample costs what a cached clip costs: crop, flip, SpecAugment in
``make_sample``) or, with ``--no-loader``, by one synthetic batch already on the device, so the
model's speed and the input's speed are separate figures.

Rows, each pair that a ratio compares measured back to back:

- presets: ``tiny`` (params.yaml's model and preprocess sizes); ``paper`` (``paper_size()``:
  Swin-T on 32×224², AST-base on 1024×128, stride 10) on CUDA; and ``--overlay PATH``, a params
  overlay such as params/ours-closest.yaml applied on params.yaml with its weight files stripped,
  named after the file. On a CPU the last two run only with ``--allow-slow`` (minutes a step);
- ``--attention``: the Video Swin blocks' attention (``model.video.attention``), a
  comma-separated list of torchvision, sdpa, flex, or ``both`` (torchvision,sdpa) or ``all``
  (all three); the sdpa and flex rows get their step-time ratio against torchvision, the flex
  rows against sdpa too (on a CPU flex runs its composite; FlexAttention's kernel is a GPU's);
- eager and compiled (``torch.compile`` as the train stage calls it; inductor on CUDA,
  aot_eager on a CPU, where inductor's C++ build of the whole model takes over ten minutes on
  two cores), with the compile warm-up reported apart from the steady-state step;
- bf16 autocast and fp32 (TF32 matmuls on CUDA, as emotions.training.runtime sets);
- the figures the train stage logs per epoch (emotions.training.throughput): step time,
  clips/s, the data-wait share and MFU against the device's dense peak (n/a on a CPU unless
  ``--peak-tflops``); ``--profile N`` adds each row's top N kernels by self time;
- ``--input``, where the loader's frames come from: ``pool`` (raw uint8 frames memory-mapped,
  what a raw cache costs), or a real jpeg cache of generated clips written by the preprocess
  stage's ``write_cache`` and read by the train stage's ``CachedClipDataset``: ``jpeg``
  decodes in the workers (``train.jpeg_decode: worker``), ``jpeg-device`` has the workers
  slice bytes and the step decode the batch on its device (``device``; nvJPEG on CUDA, so
  its time is part of the step's).

The ratios compare median step times. On a CPU all rows of a preset take turns step by step
(``--interleave``), so load from other work, which drifts within seconds on a shared machine,
reaches every row alike.

The default (the tiny preset, both attentions) runs on a 2-core CPU in under three minutes.
Ready as-is for a one-GPU, 16-core machine (workers default to the train stage's "auto":
cores − 1, at most 16):

    python benchmarks/train.py --attention both                 # the table, on this device
    python benchmarks/train.py --attention all --presets tiny   # + FlexAttention
    python benchmarks/train.py --attention both --no-loader --overlay params/ours-closest.yaml \\
        --overlay-batch 32 --presets overlay --profile 15 --json reports/bench_train.json
    python benchmarks/train.py --attention sdpa --overlay params/ours-closest.yaml \\
        --overlay-batch 32 --presets overlay --modes eager --precisions bf16 --workers 15 \\
        --input jpeg-device             # the input path the train stage takes on CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from emotions.config import Params, PreprocessConfig, load_params
from emotions.models.avcanet import count_parameters, estimate_flops
from emotions.models.settings import paper_size, without_weights
from emotions.params_overlay import apply_overlay
from emotions.training.dataset import CachedClipDataset, SpecAugment, make_sample
from emotions.training.prefetch import prefetched, prefetches
from emotions.training.runtime import Runtime
from emotions.training.samplers import EpochSampler
from emotions.training.throughput import EpochThroughput, ThroughputMeter, mfu, peak_tflops
from emotions.training.trainer import build_training_modules, make_loader, move_batch, training_loss

REPO = Path(__file__).resolve().parents[1]
ATTENTION_CHOICES = ("torchvision", "sdpa", "flex")
# Shorthands for --attention: "both" is the fused/torchvision pair, "all" adds FlexAttention.
ATTENTION_ALIASES = {"both": ["torchvision", "sdpa"], "all": list(ATTENTION_CHOICES)}
# --input: the loader's frames from a raw memory-mapped pool, or from a jpeg cache decoded in
# the workers or on the training device.
INPUTS = ("pool", "jpeg", "jpeg-device")


@dataclass(frozen=True)
class Preset:
    name: str
    params: Params
    frames: int
    cached: int  # the cache's square frame size (preprocess.resize)
    crop: int
    audio_frames: int
    mel_bins: int
    batch: int


@dataclass(frozen=True)
class Setting:
    """One row's knobs besides the preset."""

    attention: str
    compiled: bool
    bf16: bool
    # The loader's next batches moved and decoded in a thread (train.device_prefetch).
    prefetch: bool = False

    @property
    def mode(self) -> str:
        return "compiled" if self.compiled else "eager"

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"


def from_params(name: str, params: Params, batch: int) -> Preset:
    """A preset with ``params``' model and preprocess geometry, its weight files stripped."""
    pre = params.preprocess
    return Preset(
        name,
        params.model_copy(update={"model": without_weights(params.model)}),
        pre.num_frames,
        pre.resize,
        pre.crop,
        pre.audio.target_frames,
        pre.audio.n_mels,
        batch,
    )


def presets(base: Params, args: argparse.Namespace, cuda: bool) -> list[Preset]:
    out = []
    if "tiny" in args.presets:
        out.append(from_params("tiny", base, args.tiny_batch or (64 if cuda else 8)))
    if "paper" in args.presets and (cuda or args.allow_slow):
        paper = paper_size()
        out.append(
            Preset(
                "paper",
                base.model_copy(update={"model": paper}),
                32,
                256,
                224,
                paper.audio.frames,
                paper.audio.mel_bins,
                args.paper_batch or (16 if cuda else 1),
            )
        )
    if "overlay" in args.presets:
        for path in args.overlay:
            merged, _ = apply_overlay(args.params, path)
            batch = args.overlay_batch or merged.train.batch_size
            out.append(from_params(Path(path).name, merged, batch))
    return out


class ClipPool(torch.utils.data.Dataset):
    """``size`` keys over a memory-mapped pool of random clips in the cache's layout.

    The samples go through ``make_sample`` as the cached dataset's do, so the per-sample host
    work is the training loader's; the pool is small so building it costs seconds.
    """

    def __init__(self, folder: Path, preset: Preset, size: int, pool: int = 16) -> None:
        rng = np.random.default_rng(0)
        pool = min(pool, size)
        shape = (pool, preset.frames, preset.cached, preset.cached, 3)
        self.frames_path = folder / f"{preset.name}-frames.npy"
        frames = np.lib.format.open_memmap(self.frames_path, "w+", np.uint8, shape)
        for i in range(pool):
            frames[i] = rng.integers(0, 256, shape[1:], dtype=np.uint8)
        frames.flush()
        self.fbank = rng.standard_normal((pool, preset.audio_frames, preset.mel_bins)).astype(
            np.float32
        )
        self.size, self.pool, self.crop = size, pool, preset.crop
        self.source = "pool"
        self.classes = len(preset.params.taxonomy_for(preset.params.ablate.dataset))
        self.augment = SpecAugment(time_mask=40, freq_mask=16)
        self._frames: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frames": None}

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        if self._frames is None:
            self._frames = np.load(self.frames_path, mmap_mode="r")
        row = i % self.pool
        video, audio = make_sample(
            self._frames[row],
            self.fbank[row],
            self.fbank.shape[1],
            crop=self.crop,
            rng=np.random.default_rng([epoch, i]),
            mean=0.0,
            std=1.0,
            spec_augment=self.augment,
        )
        return {
            "video": video,
            "audio": audio,
            "has_audio": torch.tensor(True),
            "label": torch.tensor(i % self.classes),
        }


class JpegCachePool(torch.utils.data.Dataset):
    """``size`` keys over a real jpeg cache of ``pool`` generated clips at the preset's geometry,
    read by the train stage's ``CachedClipDataset``: the workers decode (``on_device`` False)
    or only slice each clip's JPEG bytes for the step to decode on its device (True).

    Why a real cache: the jpeg paths' host work (shard reads, the crop draw, byte slicing,
    the collate of variable-length bytes) and the device's decode are the train stage's own
    code, so their cost here is the cost in training.
    """

    def __init__(
        self, folder: Path, preset: Preset, size: int, *, on_device: bool, pool: int = 16
    ) -> None:
        # Imported here: the preprocess stage needs pebble, which the pool input does without.
        from loader import generated_split, write_generated_cache  # benchmarks/loader.py

        pre = preset.params.preprocess
        audio = pre.audio.model_copy(
            update={"target_frames": preset.audio_frames, "n_mels": preset.mel_bins}
        )
        config = PreprocessConfig.model_validate(
            {
                **pre.model_dump(),
                "num_frames": preset.frames,
                "snippet_frames": pre.snippet_frames
                if preset.frames % pre.snippet_frames == 0
                else 1,
                "resize": preset.cached,
                "crop": preset.crop,
                "audio": audio.model_dump(),
                "cache_format": "jpeg",
            }
        )
        classes = list(preset.params.taxonomy_for(preset.params.ablate.dataset))
        table, split_file = generated_split(folder, min(pool, size), classes)
        self.source = "jpeg-device" if on_device else "jpeg"
        cache = folder / f"{preset.name}-{self.source}-cache"
        write_generated_cache(cache, table, config)
        self.dataset = CachedClipDataset(
            cache,
            split_file,
            "train",
            crop=preset.crop,
            train=True,
            classes=classes,
            spec_augment=SpecAugment(time_mask=40, freq_mask=16),
            defer_decode=on_device,
        )
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        return self.dataset[(epoch, i % len(self.dataset))]

    @property
    def collate_fn(self):
        return self.dataset.collate_fn


def input_pool(folder: Path, preset: Preset, size: int, source: str) -> ClipPool | JpegCachePool:
    """The loader's dataset for ``--input`` ``source``."""
    if source == "pool":
        return ClipPool(folder, preset, size)
    return JpegCachePool(folder, preset, size, on_device=source == "jpeg-device")


def collated(pool: torch.utils.data.Dataset, n: int) -> dict[str, Any]:
    """The first ``n`` samples as the loader would batch them."""
    collate = getattr(pool, "collate_fn", None) or default_collate
    return collate([pool[(0, i)] for i in range(n)])


def synthetic(batch: dict[str, Any], steps: int) -> Iterator[dict[str, Any]]:
    """The same on-device batch ``steps`` times: the step without any input cost."""
    for _ in range(steps):
        yield batch


def top_kernels(run_steps, device: torch.device, n: int, steps: int = 2) -> list[dict[str, Any]]:
    """The ``n`` ops with the most self time (CUDA time on a GPU) over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run_steps(steps)
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:n]
    return [
        {
            "name": e.key,
            "self_ms_per_step": getattr(e, attr) / 1e3 / steps,
            "share": getattr(e, attr) / total,
            "calls_per_step": e.count / steps,
        }
        for e in ranked
    ]


def combine(parts: list[EpochThroughput]) -> EpochThroughput:
    """Several timed rounds as one."""
    return EpochThroughput(
        sum(p.clips for p in parts),
        sum(p.steps for p in parts),
        sum(p.seconds for p in parts),
        sum(p.data_wait_s for p in parts),
    )


class Bench:
    """One row: its model, optimizer and input, built once and then stepped in rounds."""

    def __init__(
        self,
        preset: Preset,
        pool: ClipPool | JpegCachePool,
        device: torch.device,
        setting: Setting,
        args: argparse.Namespace,
    ) -> None:
        video = preset.params.model.video.model_copy(update={"attention": setting.attention})
        self.params = preset.params.model_copy(
            update={
                "model": preset.params.model.model_copy(update={"video": video}),
                "train": preset.params.train.model_copy(
                    update={
                        "batch_size": preset.batch,
                        "num_workers": args.workers,
                        "prefetch_factor": args.prefetch,
                    }
                ),
            }
        )
        self.preset, self.setting, self.device, self.args = preset, setting, device, args
        self.pool = pool
        self.runtime = Runtime(device, bf16=setting.bf16)
        torch.manual_seed(0)
        polarity = list(self.params.taxonomy_for(self.params.ablate.dataset).values())
        self.model, self.criterion = build_training_modules(
            self.params, polarity, device, channels_last=device.type == "cuda"
        )
        first = move_batch(collated(pool, 1), self.runtime)  # decoded, for a deferred batch
        one = {k: first[k] for k in ("video", "audio")}
        one["has_audio"] = torch.ones(1, dtype=torch.bool, device=device)
        # An eager forward first, as the train stage's FLOP count runs before its first
        # compiled step (it also fills the fused attention's shift-mask cache).
        with self.runtime.autocast():
            self.flops = float(estimate_flops(self.model, one))
        self.stepped: nn.Module = self.model
        if setting.compiled:
            self.stepped = torch.compile(
                self.model, backend=args.compile_backend, mode=args.compile_mode
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, fused=device.type == "cuda"
        )
        self.sampler = EpochSampler(len(pool), seed=0)
        self.loader = None
        self.fixed = None
        if args.no_loader:
            self.fixed = move_batch(collated(pool, preset.batch), self.runtime)
        else:
            self.loader = make_loader(pool, self.sampler, self.params, self.runtime, drop_last=True)

    @property
    def workers(self) -> int:
        return 0 if self.loader is None else self.loader.num_workers

    def run(self, steps: int, epoch: int) -> EpochThroughput:
        """``steps`` training steps exactly as the train loop runs them, timed."""
        meter = ThroughputMeter(self.device)
        if self.fixed is not None:
            batches: Any = synthetic(self.fixed, steps)
        else:
            self.sampler.set_epoch(epoch)
            batches = self.loader
        self.model.train()
        ahead = self.setting.prefetch and self.fixed is None
        if ahead:
            batches = prefetched(batches, self.runtime)
        for done, batch in enumerate(meter.wrap(batches), start=1):
            if not ahead:  # the prefetch thread has moved it already
                batch = move_batch(batch, self.runtime)
            loss = training_loss(self.stepped, self.criterion, batch, self.params, self.runtime)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            meter.step(len(batch["label"]))
            if done == steps:
                break
        return meter.finish()

    def row(self, warmup: EpochThroughput, rounds: list[EpochThroughput]) -> dict[str, Any]:
        args, setting, device = self.args, self.setting, self.device
        figures = combine(rounds)
        peak = peak_tflops(device, setting.bf16, args.peak_tflops)
        row = {
            "preset": self.preset.name,
            "attention": setting.attention,
            "mode": setting.mode,
            "compile_backend": args.compile_backend if setting.compiled else None,
            "compile_mode": args.compile_mode if setting.compiled else None,
            "precision": setting.precision,
            "batch": self.preset.batch,
            "input": "synthetic" if args.no_loader else "loader",
            "frames_from": None if args.no_loader else self.pool.source,
            "device_prefetch": setting.prefetch and not args.no_loader,
            "workers": self.workers,
            "interleaved": len(rounds) > 1,
            "parameters_m": count_parameters(self.model) / 1e6,
            "forward_gflops_per_clip": self.flops / 1e9,
            "warmup_steps": warmup.steps,
            "warmup_s": warmup.seconds,
            "steps": figures.steps,
            "step_time_s": figures.step_time_s,
            "step_time_median_s": statistics.median(r.step_time_s for r in rounds),
            "clips_per_s": figures.clips_per_s,
            "data_wait_share": figures.data_wait_share,
            "peak_tflops": peak,
            "mfu": mfu(self.flops, figures.clips_per_s, peak),
        }
        if device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if args.profile:
            row["top_kernels"] = top_kernels(
                lambda steps: self.run(steps, epoch=10**6), device, args.profile
            )
        return row


def measure(
    preset: Preset,
    pool: ClipPool | JpegCachePool,
    device: torch.device,
    settings: list[Setting],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """One preset's rows: warm up (compiling, for a compiled row), then time ``args.steps``
    steps each.

    Interleaved (the default on a CPU, whose load from other work drifts within seconds), the
    rows take turns one step at a time, in alternating order, so drift reaches every row of a
    ratio alike. Otherwise (CUDA, where each row's model is freed before the next is built)
    each row is built, timed and freed in turn.
    """
    torch._dynamo.reset()
    if not args.interleave:
        rows = []
        for setting in settings:
            torch._dynamo.reset()
            bench = Bench(preset, pool, device, setting, args)
            warmup = bench.run(args.warmup, epoch=0)  # compiles; workers start; allocator warms
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rows.append(bench.row(warmup, [bench.run(args.steps, epoch=1)]))
            del bench
            if device.type == "cuda":
                torch.cuda.empty_cache()
        return rows
    benches = [Bench(preset, pool, device, setting, args) for setting in settings]
    if any(bench.workers for bench in benches):
        # Workers would prefetch during the other rows' steps and hide their data wait.
        raise SystemExit("benchmarks/train.py: --interleave needs --workers 0 or --no-loader")
    warmups = [bench.run(args.warmup, epoch=0) for bench in benches]
    rounds: list[list[EpochThroughput]] = [[] for _ in benches]
    for step in range(args.steps):
        order = range(len(benches)) if step % 2 == 0 else reversed(range(len(benches)))
        for i in order:
            rounds[i].append(benches[i].run(1, epoch=step + 1))
    return [bench.row(w, r) for bench, w, r in zip(benches, warmups, rounds, strict=True)]


def _ratio(rows: list[dict[str, Any]], row: dict[str, Any], vary: str, base: str) -> str:
    """The median step time of the row like ``row`` but with ``vary`` = ``base``, ÷ this row's."""
    keys = ("preset", "attention", "mode", "precision", "frames_from", "device_prefetch")
    for other in rows:
        if other[vary] == base and all(other[k] == row[k] for k in keys if k != vary):
            return f"{other['step_time_median_s'] / row['step_time_median_s']:.2f}×"
    return ""


def table(rows: list[dict[str, Any]]) -> str:
    """The rows, with same-run ratios of median step times: sdpa or flex vs torchvision
    attention, flex vs sdpa, bf16 vs fp32, compiled vs eager (each > 1 means the setting is
    faster)."""
    head = (
        "| preset | attention | mode | precision | batch | input | step (mean) | step (median) "
        "| clips/s | data wait | MFU | warm-up | vs torchvision | vs sdpa | bf16 speed-up "
        "| compile speed-up |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        utilisation = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        source = (
            "synthetic"
            if r["input"] == "synthetic"
            else f"loader, {r.get('frames_from') or 'pool'} ({r['workers']} w)"
            + (", prefetched" if r.get("device_prefetch") else "")
        )
        mode = r["mode"] if r["mode"] == "eager" else f"compiled ({r['compile_backend']})"
        fused = r["attention"] != "torchvision"
        torchvision = _ratio(rows, r, "attention", "torchvision") if fused else ""
        sdpa = _ratio(rows, r, "attention", "sdpa") if r["attention"] == "flex" else ""
        bf16 = _ratio(rows, r, "precision", "fp32") if r["precision"] == "bf16" else ""
        compiled = _ratio(rows, r, "mode", "eager") if r["mode"] == "compiled" else ""
        lines.append(
            f"| {r['preset']} | {r['attention']} | {mode} | {r['precision']} | {r['batch']} | "
            f"{source} | {r['step_time_s'] * 1e3:.1f} ms | {r['step_time_median_s'] * 1e3:.1f} ms"
            f" | {r['clips_per_s']:.1f} | "
            f"{r['data_wait_share']:.1%} | {utilisation} | {r['warmup_s']:.1f} s | "
            f"{torchvision} | {sdpa} | {bf16} | {compiled} |"
        )
    return "\n".join(lines)


def kernels_text(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        if "top_kernels" not in r:
            continue
        out.append(f"\n{r['preset']} {r['attention']} {r['mode']} {r['precision']}:")
        out += [
            f"  {k['share']:6.1%} {k['self_ms_per_step']:9.2f} ms/step {k['calls_per_step']:7.0f}×"
            f"  {k['name']}"
            for k in r["top_kernels"]
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and args.overlay and "overlay" in args.presets and not args.allow_slow:
        print(
            "benchmarks/train.py: an --overlay preset on a CPU takes minutes per step; "
            "pass --allow-slow to run it anyway",
            file=sys.stderr,
        )
        return 2
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or 20
    args.interleave = not cuda if args.interleave is None else args.interleave
    args.warmup = args.warmup or (5 if cuda else 2)
    args.compile_backend = args.compile_backend or ("inductor" if cuda else "aot_eager")
    if args.compile_mode not in (None, "default") and args.compile_backend != "inductor":
        print(
            "benchmarks/train.py: --compile-mode needs --compile-backend inductor", file=sys.stderr
        )
        return 2
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    precisions = [p for p in args.precisions if p == "fp32" or bf16_ok]
    name = torch.cuda.get_device_name(device) if cuda else cpu_name()
    base = load_params(args.params)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        for preset in presets(base, args, cuda):
            clips = preset.batch * (args.warmup + args.steps + 2 * args.profile + 1)
            print(
                f"{preset.name}: video {preset.frames}×{preset.crop}², audio "
                f"{preset.audio_frames}×{preset.mel_bins}, batch {preset.batch}",
                flush=True,
            )
            # Without a loader there is nothing to move ahead: one prefetch choice suffices.
            choices = args.device_prefetch[:1] if args.no_loader else args.device_prefetch
            prefetch = sorted(
                {prefetches("auto" if c == "auto" else c == "on", device) for c in choices}
            )
            settings = [
                Setting(attention, mode == "compiled", precision == "bf16", ahead)
                for mode in args.modes
                for precision in precisions
                for attention in args.attention
                for ahead in prefetch
            ]
            # Without a loader the frames' source costs nothing per step: one suffices.
            for source in args.input[:1] if args.no_loader else args.input:
                pool = input_pool(Path(scratch), preset, clips, source)
                for row in measure(preset, pool, device, settings, args):
                    rows.append(row)
                    short = {k: v for k, v in _short(row).items() if k != "top_kernels"}
                    print(f"  {json.dumps(short)}", flush=True)
    command = "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\ndevice: {name} ({device.type}), {time.perf_counter() - started:.0f} s in all")
    print(table(rows))
    print(kernels_text(rows))
    print(f"\ncommand: {command.strip()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"device": name, "torch": torch.__version__, "command": command, "rows": rows}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def cpu_name() -> str:
    """The CPU model and core count, for the record of where the figures came from."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def _short(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def _choices(allowed: tuple[str, ...]):
    def parse_list(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if v not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
        return values

    return parse_list


def _attentions(text: str) -> list[str]:
    """``both``, ``all``, or a comma-separated list of attentions, in the order given."""
    if text in ATTENTION_ALIASES:
        return ATTENTION_ALIASES[text]
    return _choices(ATTENTION_CHOICES)(text)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--attention",
        type=_attentions,
        default=ATTENTION_ALIASES["both"],
        help="Video Swin attentions (model.video.attention), comma-separated from "
        "torchvision,sdpa,flex; both = torchvision,sdpa; all = the three",
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        action="append",
        default=[],
        help="a params overlay (e.g. params/ours-closest.yaml) as a preset named after the file",
    )
    parser.add_argument("--overlay-batch", type=int, default=None, help="default: its batch")
    parser.add_argument(
        "--presets",
        type=_choices(("tiny", "paper", "overlay")),
        default=["tiny", "paper", "overlay"],
        help="comma-separated subset of tiny,paper,overlay (paper: CUDA or --allow-slow)",
    )
    parser.add_argument(
        "--allow-slow", action="store_true", help="paper/overlay presets on a CPU (minutes/step)"
    )
    parser.add_argument(
        "--modes",
        type=_choices(("eager", "compiled")),
        default=["eager", "compiled"],
        help="comma-separated: eager,compiled",
    )
    parser.add_argument(
        "--precisions",
        type=_choices(("bf16", "fp32")),
        default=["bf16", "fp32"],
        help="comma-separated: bf16,fp32 (bf16 only where the device supports it)",
    )
    parser.add_argument(
        "--compile-backend",
        choices=["inductor", "aot_eager", "eager"],
        default=None,
        help="default: inductor on CUDA, aot_eager on a CPU",
    )
    parser.add_argument(
        "--compile-mode", choices=["default", "reduce-overhead", "max-autotune"], default=None
    )
    parser.add_argument(
        "--no-loader", action="store_true", help="one synthetic batch on the device: no input"
    )
    parser.add_argument(
        "--input",
        type=_choices(INPUTS),
        default=["pool"],
        help="comma-separated: where the loader's frames come from: pool (raw, memory-mapped), "
        "jpeg (a jpeg cache decoded in the workers), jpeg-device (decoded in the step on its "
        "device: nvJPEG on CUDA)",
    )
    parser.add_argument(
        "--device-prefetch",
        type=_choices(("auto", "on", "off")),
        default=["auto"],
        help="comma-separated: the loader's next batches moved (and jpeg-device decoded) in a "
        "thread, as train.device_prefetch (auto: on CUDA)",
    )
    parser.add_argument("--profile", type=int, default=0, help="top N kernels per row")
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="alternate a ratio's rows step by step (default: on a CPU, not on CUDA)",
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first (5 GPU, 2 CPU)")
    parser.add_argument(
        "--workers",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="DataLoader workers (auto: the train stage's rule)",
    )
    parser.add_argument("--prefetch", type=int, default=4, help="batches per worker ahead")
    parser.add_argument("--tiny-batch", type=int, default=None, help="default 64 GPU, 8 CPU")
    parser.add_argument("--paper-batch", type=int, default=None, help="default 16 GPU, 1 CPU")
    parser.add_argument("--cpu", action="store_true", help="ignore a GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="MFU on a CPU")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
