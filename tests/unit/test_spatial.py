"""The authors' spatial sampling (train.spatial: authors) on small arrays.

What it must do, from ``Preprocessing`` in XuecWu/eMotions AV-CANet/transforms/spatial.py:
training takes the square of the full short side at the centre or a corner, resized to the
crop, then with p 0.3 one of flip / rotation ±20° / brightness × U(0.5, 1); evaluation takes the
centre square of the full short side.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emotions.config import ConfigError, parse_params
from emotions.training.transforms import (
    AUTHORS_POSITIONS,
    authors_view,
    draw_authors,
    make_sample,
    square_box,
)

REPO = Path(__file__).resolve().parents[2]
T = 3


def portrait(height: int = 10, width: int = 6) -> torch.Tensor:
    """(T, 3, H, W) uint8 whose every pixel encodes its row and column, all frames alike."""
    rows = torch.arange(height).view(height, 1) * 20
    cols = torch.arange(width).view(1, width)
    picture = (rows + cols).to(torch.uint8)
    return picture.expand(T, 3, height, width).clone()


def test_five_squares_of_the_full_short_side() -> None:
    assert square_box(10, 6, "c") == (2, 0, 6)
    assert square_box(10, 6, "tl") == square_box(10, 6, "tr") == (0, 0, 6)
    assert square_box(10, 6, "bl") == square_box(10, 6, "br") == (4, 0, 6)
    assert square_box(6, 10, "tr") == (0, 4, 6) and square_box(6, 10, "bl") == (0, 0, 6)
    assert square_box(8, 8, "br") == (0, 0, 8)  # a square picture: every position is itself


def test_on_cached_squares_every_position_is_the_centre_square() -> None:
    """The approximation docs/model.md and the presets state: the cache keeps the centre
    square, so a drawn corner gives the same pixels as the centre (the draw is still made)."""
    cached = portrait()[..., 2:8, :]  # what the cache keeps of a portrait picture
    centre = authors_view(cached, 6, None)
    positions = set()
    for seed in range(40):
        positions.add(draw_authors(np.random.default_rng(seed)).position)
        view = authors_view(cached, 6, np.random.default_rng(seed), augment=False)
        assert torch.equal(view, centre)
    assert positions == set(AUTHORS_POSITIONS)
    assert not torch.equal(portrait()[..., :6, :], portrait()[..., 2:8, :])  # theirs differ


def test_evaluation_is_the_centre_square() -> None:
    frames = portrait()
    view = authors_view(frames, 6, None)
    assert torch.equal(view, frames[..., 2:8, :])
    resized = authors_view(frames, 3, None)
    assert resized.shape == (T, 3, 3, 3) and resized.dtype == torch.uint8


@pytest.mark.parametrize("seed", range(40))
def test_training_draws_one_view_per_clip(seed: int) -> None:
    frames = portrait()
    draw = draw_authors(np.random.default_rng(seed))
    view = authors_view(frames, 6, np.random.default_rng(seed))
    top, left, side = square_box(10, 6, draw.position)
    square = frames[..., top : top + side, left : left + side]
    if draw.augment is None:
        assert torch.equal(view, square)
    elif draw.augment == "flip":
        assert torch.equal(view, square.flip(-1))
    elif draw.augment == "brightness":
        assert 0.5 <= draw.factor <= 1.0
        assert torch.equal(view, (square.float() * draw.factor).round().to(torch.uint8))
    else:
        assert abs(draw.angle) <= 20.0
        assert view.shape == square.shape and not torch.equal(view, square)
    # One draw for the whole clip: every frame got the same view.
    assert all(torch.equal(view[0], view[k]) for k in range(1, T))


def test_the_draws_follow_the_authors_rates() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_authors(rng) for _ in range(6000)]
    positions = Counter(d.position for d in draws)
    assert set(positions) == set(AUTHORS_POSITIONS)
    assert all(abs(n / 6000 - 0.2) < 0.03 for n in positions.values())
    augmented = Counter(d.augment for d in draws if d.augment is not None)
    assert abs(sum(augmented.values()) / 6000 - 0.3) < 0.03
    assert set(augmented) == {"flip", "rotate", "brightness"}


def test_make_sample_takes_the_cache_layout_too() -> None:
    frames = portrait().permute(0, 2, 3, 1).numpy()  # (T, H, W, 3), the raw cache's layout
    fbank = np.zeros((16, 8), dtype=np.float16)
    rng = np.random.default_rng(3)
    video, _ = make_sample(frames, fbank, 16, crop=4, rng=rng, mean=0.0, std=1.0, spatial="authors")
    expected = authors_view(portrait(), 4, np.random.default_rng(3))
    assert torch.equal(video, expected)
    ours, _ = make_sample(frames[:, :6], fbank, 16, crop=4, rng=None, mean=0.0, std=1.0)
    assert ours.shape == (T, 3, 4, 4)  # ours: the centre 4 × 4 crop, not a resize
    assert torch.equal(ours, torch.from_numpy(frames[:, 1:5, 1:5]).permute(0, 3, 1, 2))


def test_the_authors_pipeline_needs_host_decoding() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["spatial"] = "authors"
    assert parse_params(raw).train.spatial == "authors"
    raw["preprocess"]["cache_format"] = "jpeg"
    raw["train"]["jpeg_decode"] = "device"
    with pytest.raises(ConfigError, match=r"train\.spatial 'authors'"):
        parse_params(raw)


def test_jpeg_decode_auto_decodes_on_cuda_with_our_crop_only() -> None:
    """auto moves a jpeg cache's decoding onto a CUDA device (nvJPEG), never onto a CPU, and
    never under the authors' crops, which transform decoded frames in the loader."""
    from emotions.training.dataset import decodes_on_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert decodes_on_device("auto", cuda, "ours")
    assert not decodes_on_device("auto", cuda, "authors")
    assert not decodes_on_device("auto", cpu, "ours")
    assert not decodes_on_device("auto", None, "ours")  # evaluation: plain batches
    assert decodes_on_device("device", cpu, "ours")  # forced: how the CPU tests run it
    assert not decodes_on_device("worker", cuda, "ours")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["spatial"] = "authors"
    raw["preprocess"]["cache_format"] = "jpeg"
    assert parse_params(raw).train.jpeg_decode == "auto"  # auto is valid with any crop
