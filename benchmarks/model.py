"""What does AV-CANet cost, at the size we train on CPU and at the paper's size?

For each configuration, measured in one run on the same machine:

- parameters and forward FLOPs per clip (PyTorch's FlopCounterMode through
  ``emotions.models.avcanet.estimate_flops``; a multiply-add counts 2),
- CPU inference clips/s (eval mode, ``torch.no_grad``, fp32, one torch thread unless
  ``--threads`` says otherwise): batch 8 for the tiny model, batch 1 and two iterations for the
  paper size (seconds per clip on a small CPU),
- each figure as a ratio against the tiny model measured in the same run,
- the bf16 GPU training step estimated from FLOPs, and measured when CUDA is present.

The estimate: a training step costs about 3× the forward FLOPs (the backward pass computes
gradients for activations and for weights, each about one forward), run at an assumed
sustained bf16 throughput of 40 % of the H100 SXM's dense bf16 peak (989 TFLOP/s), i.e.
~396 TFLOP/s. 40 % is a typical model-FLOPs utilisation for transformer training with
PyTorch autocast; Video Swin's windowed attention and small matrices often reach less. For
the tiny model the estimate is only a floor: at a few GFLOPs per step, kernel launches and
the Python loop, not arithmetic, set the time on a GPU.

    .venv/bin/python benchmarks/model.py                       # both sizes
    .venv/bin/python benchmarks/model.py --json reports/bench_model.json
    .venv/bin/python benchmarks/model.py --skip-paper          # seconds, tiny only
    .venv/bin/python benchmarks/model.py --skip-paper --preset params/ours-closest.yaml --preset-only

``--preset`` (default params/ours-closest.yaml) also measures that preset: params.yaml with the
overlay applied (pyramid fusion, ResNet-34 audio over 16 segments, Swin-T on 16 × 8 frames at
112², see docs/model.md), on the inputs its preprocess settings make.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emotions.config import Params, load_params
from emotions.models.avcanet import AVCANet, count_parameters, estimate_flops
from emotions.models.settings import ModelSettings, paper_size, without_weights
from emotions.params_overlay import apply_overlay

H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM5, dense (no sparsity) bf16 tensor-core peak
ASSUMED_UTILISATION = 0.40
TRAIN_FLOPS_PER_FORWARD = 3.0
NUM_CLASSES = 6  # emotions6


@dataclass(frozen=True)
class Shape:
    """One model configuration and the input it is fed."""

    name: str
    settings: ModelSettings
    frames: int  # T
    crop: int  # H = W
    audio_frames: int  # log-mel frames
    mel_bins: int

    def describe(self) -> str:
        audio = self.settings.audio
        branch = (
            f"{audio.size}, stride {audio.stride}"
            if audio.arch == "ast"
            else f"{audio.arch} × {audio.segments} segments"
        )
        return (
            f"{self.name}: video {self.frames}×{self.crop}×{self.crop} "
            f"({self.settings.video.arch}), audio {self.audio_frames}×{self.mel_bins} "
            f"({branch}), fusion {self.settings.fusion} dim {self.settings.dim}"
        )


def tiny_shape(params_path: Path) -> Shape:
    """The params.yaml model on the inputs the preprocess stage makes for it."""
    return params_shape("tiny", load_params(params_path))


def preset_shape(params_path: Path, overlay: Path) -> Shape:
    """params.yaml with a preset overlay (params/ours-closest.yaml) on its own preprocess inputs."""
    params, _ = apply_overlay(params_path, overlay)
    return params_shape(f"preset {overlay.stem}", params)


def params_shape(name: str, params: Params) -> Shape:
    pre = params.preprocess
    return Shape(
        name,
        without_weights(params.model),
        pre.num_frames,
        pre.crop,
        pre.audio.target_frames,
        pre.audio.n_mels,
    )


def paper_shape() -> Shape:
    """Swin-T on 32×224×224 and AST-base on 1024×128 (stride 10), as in the paper."""
    settings = paper_size()
    return Shape("paper", settings, 32, 224, settings.audio.frames, settings.audio.mel_bins)


def make_batch(shape: Shape, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random inputs of the loader's dtypes: uint8 video, normalised float log-mel."""
    generator = torch.Generator().manual_seed(0)
    video = torch.randint(
        0,
        256,
        (batch, shape.frames, 3, shape.crop, shape.crop),
        dtype=torch.uint8,
        generator=generator,
    )
    audio = torch.randn(batch, shape.audio_frames, shape.mel_bins, generator=generator)
    return {
        "video": video.to(device),
        "audio": audio.to(device),
        "has_audio": torch.ones(batch, dtype=torch.bool, device=device),
    }


def build(shape: Shape, device: torch.device) -> AVCANet:
    torch.manual_seed(0)
    return AVCANet(shape.settings, NUM_CLASSES).to(device)


@torch.no_grad()
def cpu_clips_per_s(model: AVCANet, batch: dict[str, torch.Tensor], warmup: int, iters: int):
    """Median clips/s of eval-mode forwards (fp32, no grad) and the per-iteration seconds."""
    model.eval()
    for _ in range(warmup):
        model(**batch)
    times = []
    for _ in range(iters):
        tick = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - tick)
    size = batch["video"].shape[0]
    return size / statistics.median(times), times


def estimated_step_s(forward_flops_per_clip: float, batch: int) -> float:
    """Training-step seconds on an H100 in bf16 under the module docstring's assumptions."""
    sustained = ASSUMED_UTILISATION * H100_BF16_DENSE_TFLOPS * 1e12
    return TRAIN_FLOPS_PER_FORWARD * forward_flops_per_clip * batch / sustained


def measure_train_step(
    model: AVCANet,
    batch: dict[str, torch.Tensor],
    *,
    bf16: bool,
    warmup: int = 3,
    iters: int = 10,
) -> dict[str, float]:
    """Median seconds of one AdamW training step (forward, backward, step) and of one
    eval forward, with bf16 autocast as the train stage uses it; peak memory on CUDA."""
    device = batch["video"].device
    cuda = device.type == "cuda"
    labels = torch.zeros(batch["video"].shape[0], dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def step() -> None:
        with autocast():
            out = model(**batch)
        loss = torch.nn.functional.cross_entropy(out["logits"].float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def forward() -> None:
        with autocast():
            model(**batch)

    def timed(run, train: bool) -> float:
        model.train(train)
        for _ in range(warmup):
            run()
        sync()
        times = []
        for _ in range(iters):
            tick = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - tick)
        return statistics.median(times)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result = {"train_step_s": timed(step, True), "forward_s": timed(forward, False)}
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def bench_shape(shape: Shape, args: argparse.Namespace, cpu_batch: int, iters: int) -> dict:
    print(shape.describe(), flush=True)
    cpu = torch.device("cpu")
    model = build(shape, cpu)
    params = count_parameters(model)
    flops = estimate_flops(model, make_batch(shape, 1, cpu))
    clips_per_s, times = cpu_clips_per_s(
        model, make_batch(shape, cpu_batch, cpu), warmup=1, iters=iters
    )
    row: dict[str, Any] = {
        "config": shape.describe(),
        "parameters": params,
        "forward_gflops_per_clip": flops / 1e9,
        "cpu_batch": cpu_batch,
        "cpu_iterations_s": times,
        "cpu_clips_per_s": clips_per_s,
        "gpu_batch": args.gpu_batch,
        "estimated_h100_bf16_train_step_s": estimated_step_s(flops, args.gpu_batch),
        "estimated_h100_bf16_train_clips_per_s": args.gpu_batch
        / estimated_step_s(flops, args.gpu_batch),
    }
    print(
        f"  parameters {params / 1e6:.2f} M, forward {flops / 1e9:.2f} GFLOPs/clip, "
        f"CPU {clips_per_s:.2f} clips/s (batch {cpu_batch}, {len(times)} iterations)",
        flush=True,
    )
    print(
        f"  H100 bf16 train step, batch {args.gpu_batch}, estimated: "
        f"{duration(row['estimated_h100_bf16_train_step_s'])} "
        f"({row['estimated_h100_bf16_train_clips_per_s']:.0f} clips/s)",
        flush=True,
    )
    del model
    if torch.cuda.is_available():
        device = torch.device("cuda")
        gpu_model = build(shape, device)
        measured = measure_train_step(
            gpu_model, make_batch(shape, args.gpu_batch, device), bf16=True
        )
        row["measured_gpu"] = {"device": torch.cuda.get_device_name(device), **measured}
        achieved = TRAIN_FLOPS_PER_FORWARD * flops * args.gpu_batch / measured["train_step_s"]
        row["measured_gpu"]["achieved_train_tflops"] = achieved / 1e12
        print(
            f"  GPU bf16 measured ({row['measured_gpu']['device']}): train step "
            f"{duration(measured['train_step_s'])}, forward {duration(measured['forward_s'])}, "
            f"{achieved / 1e12:.1f} TFLOP/s achieved, peak "
            f"{measured['peak_memory_gib']:.1f} GiB",
            flush=True,
        )
        del gpu_model
        torch.cuda.empty_cache()
    return row


def duration(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def ratios(row: dict, base: dict) -> dict[str, float]:
    out = {
        "parameters": row["parameters"] / base["parameters"],
        "forward_flops": row["forward_gflops_per_clip"] / base["forward_gflops_per_clip"],
        "cpu_clips_per_s": row["cpu_clips_per_s"] / base["cpu_clips_per_s"],
    }
    if "measured_gpu" in row and "measured_gpu" in base:
        out["gpu_train_step_s"] = (
            row["measured_gpu"]["train_step_s"] / base["measured_gpu"]["train_step_s"]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "assumptions": {
            "train_flops_per_forward": TRAIN_FLOPS_PER_FORWARD,
            "h100_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS,
            "assumed_utilisation": ASSUMED_UTILISATION,
            "sustained_tflops": ASSUMED_UTILISATION * H100_BF16_DENSE_TFLOPS,
        },
    }
    print(
        f"{result['machine']['cpus']} CPUs, {result['machine']['torch_threads']} torch threads, "
        f"torch {torch.__version__}, CUDA: {result['machine']['cuda'] or 'none'}",
        flush=True,
    )
    print(
        f"estimate: train step = {TRAIN_FLOPS_PER_FORWARD:g} × forward FLOPs / "
        f"({ASSUMED_UTILISATION:.0%} × {H100_BF16_DENSE_TFLOPS:g} TFLOP/s H100 bf16 dense "
        f"= {ASSUMED_UTILISATION * H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s)",
        flush=True,
    )
    if args.preset_only:
        result["preset"] = bench_shape(
            preset_shape(args.params, args.preset), args, args.paper_batch, args.paper_iters
        )
        if args.json:
            write_json(args.json, result)
        return 0
    tiny = bench_shape(tiny_shape(args.params), args, args.batch, args.iters)
    result["tiny"] = tiny
    if args.preset:
        preset = bench_shape(
            preset_shape(args.params, args.preset), args, args.paper_batch, args.paper_iters
        )
        preset["vs_tiny"] = ratios(preset, tiny)
        result["preset"] = preset
    if not args.skip_paper:
        paper = bench_shape(paper_shape(), args, args.paper_batch, args.paper_iters)
        paper["vs_tiny"] = ratios(paper, tiny)
        result["paper"] = paper
        r = paper["vs_tiny"]
        print(
            f"paper vs tiny: parameters {r['parameters']:.1f}×, forward FLOPs "
            f"{r['forward_flops']:.0f}×, CPU clips/s {r['cpu_clips_per_s']:.4f}× "
            f"(tiny is {1 / r['cpu_clips_per_s']:.0f}× faster)"
            + (
                f", GPU train step {r['gpu_train_step_s']:.1f}× longer"
                if "gpu_train_step_s" in r
                else ""
            ),
            flush=True,
        )
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def write_json(path: Path, data: dict) -> None:
    """Atomic: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--batch", type=int, default=8, help="CPU batch of the tiny model")
    parser.add_argument("--iters", type=int, default=5, help="timed CPU iterations, tiny")
    parser.add_argument("--paper-batch", type=int, default=1)
    parser.add_argument("--paper-iters", type=int, default=2)
    parser.add_argument("--gpu-batch", type=int, default=8, help="GPU train-step batch")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: a per-core figure that stays stable on a shared "
        "machine, where OpenMP threads competing with other processes made 2-thread timings "
        "vary 10×; 0 keeps torch's default)",
    )
    parser.add_argument("--skip-paper", action="store_true", help="tiny model only")
    parser.add_argument(
        "--preset",
        type=Path,
        default=Path("params/ours-closest.yaml"),
        help="also measure params.yaml with this overlay (default: ours-closest)",
    )
    parser.add_argument("--no-preset", dest="preset", action="store_const", const=None)
    parser.add_argument("--preset-only", action="store_true", help="measure only the preset")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
