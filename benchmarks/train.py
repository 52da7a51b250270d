"""Does training keep the device busy? Step time, clips/s, data-wait share and MFU per preset.

One command, on whatever device is present, measures the train stage's own step
(``emotions.training.trainer.training_loss`` → backward → grad clip → AdamW → scheduler-free) fed by the
train stage's own input pipeline (``make_loader``: persistent workers, pinned memory,
prefetch, ``EpochSampler`` keys) over a memory-mapped clip pool with the cache's layout, so
each sample costs what a cached clip costs (crop, flip, SpecAugment in ``make_sample``):

- presets: ``tiny`` (params.yaml's model and preprocess sizes) and, on CUDA only, ``paper``
  (``paper_size()``: Swin-T on 32×224², AST-base on 1024×128, stride 10),
- precisions: bf16 autocast and fp32 (TF32 matmuls on CUDA, as emotions.training.runtime sets), with
  the bf16/fp32 step-time ratio from the same run,
- the figures the train stage logs per epoch (emotions.training.throughput): step time, clips/s, the
  share of the step spent waiting in the data iterator, and MFU against the device's dense
  peak (null on a CPU unless ``--peak-tflops``).

On a CPU the tiny preset alone runs, in well under three minutes. Ready as-is for a one-GPU,
16-core machine (workers default to the train stage's "auto": cores − 1, at most 16):

    .venv/bin/python benchmarks/train.py                       # the table, on this device
    .venv/bin/python benchmarks/train.py --json reports/bench_train.json
    .venv/bin/python benchmarks/train.py --workers 16 --steps 30 --paper-batch 16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotions.config import Params, load_params
from emotions.models.avcanet import count_parameters, estimate_flops
from emotions.models.settings import paper_size, without_weights
from emotions.training.dataset import SpecAugment, make_sample
from emotions.training.runtime import Runtime
from emotions.training.samplers import EpochSampler
from emotions.training.throughput import ThroughputMeter, mfu, peak_tflops
from emotions.training.trainer import build_training_modules, make_loader, move_batch, training_loss

REPO = Path(__file__).resolve().parents[1]


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


def presets(base: Params, args: argparse.Namespace, cuda: bool) -> list[Preset]:
    pre = base.preprocess
    tiny = base.model_copy(update={"model": without_weights(base.model)})
    out = [
        Preset(
            "tiny",
            tiny,
            pre.num_frames,
            pre.resize,
            pre.crop,
            pre.audio.target_frames,
            pre.audio.n_mels,
            args.tiny_batch or (64 if cuda else 8),
        )
    ]
    if cuda or args.paper_on_cpu:
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
    return out


class ClipPool(torch.utils.data.Dataset):
    """``size`` keys over a memory-mapped pool of random clips in the cache's layout.

    The samples go through ``make_sample`` as the cached dataset's do, so the per-sample host
    work is the training loader's; the pool is small so building it costs seconds.
    """

    def __init__(self, folder: Path, preset: Preset, size: int, pool: int = 16) -> None:
        rng = np.random.default_rng(0)
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


def measure(
    preset: Preset, pool: ClipPool, device: torch.device, bf16: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, then time ``args.steps`` training steps exactly as the train loop runs them."""
    params = preset.params.model_copy(
        update={
            "train": preset.params.train.model_copy(
                update={
                    "batch_size": preset.batch,
                    "num_workers": args.workers,
                    "prefetch_factor": args.prefetch,
                }
            )
        }
    )
    runtime = Runtime(device, bf16=bf16)
    torch.manual_seed(0)
    polarity = list(params.taxonomy_for(params.ablate.dataset).values())
    model, criterion = build_training_modules(
        params, polarity, device, channels_last=device.type == "cuda"
    )
    sample = pool[(0, 0)]
    one = {k: sample[k].unsqueeze(0).to(device) for k in ("video", "audio")}
    one["has_audio"] = torch.ones(1, dtype=torch.bool, device=device)
    with runtime.autocast():
        flops = float(estimate_flops(model, one))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    sampler = EpochSampler(len(pool), seed=0)
    loader = make_loader(pool, sampler, params, runtime, drop_last=True)

    def run(steps: int, epoch: int) -> ThroughputMeter:
        sampler.set_epoch(epoch)
        meter = ThroughputMeter(device)
        model.train()
        for done, batch in enumerate(meter.wrap(loader), start=1):
            batch = move_batch(batch, runtime)
            loss = training_loss(model, criterion, batch, params, runtime)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            meter.step(len(batch["label"]))
            if done == steps:
                break
        return meter

    run(args.warmup, epoch=0).finish()  # workers start, kernels autotune, allocator warms
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    figures = run(args.steps, epoch=1).finish()
    peak = peak_tflops(device, bf16, args.peak_tflops)
    row = {
        "preset": preset.name,
        "precision": "bf16" if bf16 else "fp32",
        "batch": preset.batch,
        "workers": loader.num_workers,
        "parameters_m": count_parameters(model) / 1e6,
        "forward_gflops_per_clip": flops / 1e9,
        "steps": figures.steps,
        "step_time_s": figures.step_time_s,
        "clips_per_s": figures.clips_per_s,
        "data_wait_share": figures.data_wait_share,
        "peak_tflops": peak,
        "mfu": mfu(flops, figures.clips_per_s, peak),
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| preset | precision | batch | workers | step | clips/s | data wait | MFU | bf16 speed-up |"
    lines = [head, "|" + "---|" * 9]
    fp32 = {r["preset"]: r["step_time_s"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        speedup = ""
        if r["precision"] == "bf16" and r["preset"] in fp32:
            speedup = f"{fp32[r['preset']] / r['step_time_s']:.2f}×"
        utilisation = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(
            f"| {r['preset']} | {r['precision']} | {r['batch']} | {r['workers']} | "
            f"{r['step_time_s'] * 1e3:.1f} ms | {r['clips_per_s']:.1f} | "
            f"{r['data_wait_share']:.1%} | {utilisation} | {speedup} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (20 if cuda else 5)
    args.warmup = args.warmup or (5 if cuda else 2)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    base = load_params(args.params)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        for preset in presets(base, args, cuda):
            clips = preset.batch * (args.warmup + args.steps + 1)
            pool = ClipPool(Path(scratch), preset, clips)
            print(
                f"{preset.name}: video {preset.frames}×{preset.crop}², audio "
                f"{preset.audio_frames}×{preset.mel_bins}, batch {preset.batch}",
                flush=True,
            )
            for bf16 in (True, False):
                row = measure(preset, pool, device, bf16, args)
                rows.append(row)
                if cuda:
                    torch.cuda.empty_cache()
                print(f"  {row['precision']}: {json.dumps(_short(row))}", flush=True)
    command = "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\ndevice: {name} ({device.type}), {time.perf_counter() - started:.0f} s in all")
    print(table(rows))
    print(f"\ncommand: {command.strip()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"device": name, "command": command, "rows": rows}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 0


def _short(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first (5 GPU, 2 CPU)")
    parser.add_argument(
        "--workers",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="DataLoader workers (auto: the train stage's rule)",
    )
    parser.add_argument("--prefetch", type=int, default=4, help="batches per worker ahead")
    parser.add_argument("--tiny-batch", type=int, default=None, help="default 64 GPU, 8 CPU")
    parser.add_argument("--paper-batch", type=int, default=None, help="default 16 (GPU)")
    parser.add_argument("--paper-on-cpu", action="store_true", help="slow: minutes per step")
    parser.add_argument("--cpu", action="store_true", help="ignore a GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="MFU on a CPU")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
