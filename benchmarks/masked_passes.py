"""Modality share at serving: three forward passes against one backbone pass, same run.

The service reports how much each modality moves a prediction by comparing the full
prediction with one audio-masked and one video-masked prediction. Masking changes only what
the fusion sees, so ``AVCANet.forward_masked`` runs the branches once and the fusion three
times, where the earlier code ran the whole model three times. This prints the forward time
per clip of both ways, at batch 1 and batch 8, on the model ``params.yaml`` (or ``--overlay``)
describes, and the ratio (three passes / one backbone pass) measured in the same run:

    .venv/bin/python benchmarks/masked_passes.py
    .venv/bin/python benchmarks/masked_passes.py --threads 2 --repeat 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from emotions.config import load_params
from emotions.models.avcanet import AVCANet

MASKS = [None, "audio", "video"]


def inputs(params, batch: int) -> dict[str, torch.Tensor]:
    pre = params.preprocess
    g = torch.Generator().manual_seed(0)
    shape = (batch, pre.num_frames, 3, pre.crop, pre.crop)
    return {
        "video": torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
        "audio": torch.randn(batch, pre.audio.target_frames, pre.audio.n_mels, generator=g),
        "has_audio": torch.ones(batch, dtype=torch.bool),
        "audio_frames": torch.full((batch,), pre.audio.target_frames),
    }


def per_clip_ms(run, batch: int, repeat: int) -> float:
    """Median over ``repeat`` timed calls (after one warm-up), per clip."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, as served)")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    torch.manual_seed(0)
    model = AVCANet(params.model, num_classes=len(next(iter(params.taxonomies.values())))).eval()
    print(
        f"model: {params.model.fusion} fusion, {params.model.audio.arch} audio, "
        f"{params.model.video.arch} video; {args.threads} torch thread(s)"
    )
    print(f"{'batch':>5}{'3 passes ms/clip':>18}{'1 backbone ms/clip':>20}{'ratio':>8}")
    for batch in (1, 8):
        x = inputs(params, batch)
        with torch.no_grad():
            three = per_clip_ms(
                lambda x=x: [model(**x, mask_modality=m) for m in MASKS], batch, args.repeat
            )
            one = per_clip_ms(lambda x=x: model.forward_masked(MASKS, **x), batch, args.repeat)
        print(f"{batch:>5}{three:>18.1f}{one:>20.1f}{three / one:>7.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
