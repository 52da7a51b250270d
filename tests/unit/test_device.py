"""Device correctness without a GPU: every model/loss/ablation configuration on ``meta``.

No kernel runs on the ``meta`` device, but every op still checks that its operands share a
device, so a tensor the code leaves on the CPU (an unmoved criterion buffer, a tensor created
without ``device=``) raises here exactly as it would on the first CUDA step. Host reads of a
tensor's value (``bool(t)``, ``.item()``) raise too, which is what a graph break or a device
sync per step would cost on a GPU. The configurations are read from the config's Literal types,
so a new fusion, modality or loss is covered without editing this file.
"""

from __future__ import annotations

import itertools
import math
import typing
from pathlib import Path

import pytest
import torch
from authors_options import authors_options

from emotions.config import AblationCell, Params, load_params
from emotions.models.settings import VideoAttention
from emotions.stages.ablate import params_for_cell
from emotions.training.runtime import Runtime
from emotions.training.trainer import build_training_modules, training_loss

REPO = Path(__file__).resolve().parents[2]
BATCH = 2


def literal_values(field: str) -> tuple[str, ...]:
    values = typing.get_args(AblationCell.model_fields[field].annotation)
    assert values, f"AblationCell.{field} is no longer a Literal"
    return values


CELLS = [
    AblationCell(modality=m, fusion=f, loss=loss)
    for m, f, loss in itertools.product(
        literal_values("modality"), literal_values("fusion"), literal_values("loss")
    )
]


@pytest.fixture(scope="module")
def base_params() -> Params:
    return load_params(REPO / "params.yaml")


def polarity_of(params: Params) -> list[str]:
    return list(params.taxonomy_for(params.ablate.dataset).values())


def make_batch(params: Params, classes: int, device: torch.device) -> dict[str, object]:
    pre = params.preprocess
    generator = torch.Generator().manual_seed(0)
    video = torch.randint(
        0,
        256,
        (BATCH, pre.num_frames, 3, pre.crop, pre.crop),
        dtype=torch.uint8,
        generator=generator,
    )
    audio = torch.randn(BATCH, pre.audio.target_frames, pre.audio.n_mels, generator=generator)
    batch = {
        "video": video,
        "audio": audio,
        "has_audio": torch.tensor([True, False]),
        # The first clip's sound ends half-way: its later audio tokens are padding, masked.
        "audio_frames": torch.tensor([pre.audio.target_frames // 2, 0]),
        "label": torch.arange(BATCH) % classes,
    }
    return {key: value.to(device) for key, value in batch.items()}


def test_the_matrix_covers_every_value_of_the_config():
    assert len(CELLS) == math.prod(len(literal_values(f)) for f in ("modality", "fusion", "loss"))
    assert {"both", "video", "audio"} <= {cell.modality for cell in CELLS}
    assert {"ce", "soft", "reweight"} <= {cell.loss for cell in CELLS}
    assert "pyramid" in {cell.fusion for cell in CELLS}


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.modality}-{c.fusion}-{c.loss}")
def test_forward_loss_backward_on_meta(base_params: Params, cell: AblationCell):
    params = params_for_cell(base_params, cell)
    meta = torch.device("meta")
    polarity = polarity_of(params)
    # channels_last as on CUDA: the audio-only model has no video branch to convert.
    model, criterion = build_training_modules(params, polarity, meta, channels_last=True)
    assert all(b.device == meta for b in criterion.buffers()), "criterion buffers left behind"
    batch = make_batch(params, len(polarity), meta)
    loss = training_loss(model, criterion, batch, params, Runtime(meta))
    assert loss.device == meta and loss.ndim == 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(g.device == meta for g in grads if g is not None)


@pytest.mark.parametrize("attention", typing.get_args(VideoAttention))
def test_video_attention_on_meta(base_params: Params, attention: str):
    """Either attention of the Video Swin blocks; the fused one's cached shift masks are built
    on the model's device (a mask left on the CPU would fail the first CUDA step)."""
    params = params_for_cell(base_params, AblationCell(modality="video"))
    video = params.model.video.model_copy(update={"attention": attention})
    params = params.model_copy(update={"model": params.model.model_copy(update={"video": video})})
    meta = torch.device("meta")
    polarity = polarity_of(params)
    model, criterion = build_training_modules(params, polarity, meta, channels_last=True)
    loss = training_loss(
        model, criterion, make_batch(params, len(polarity), meta), params, Runtime(meta)
    )
    loss.backward()
    table = model.video.swin.features[0][1].attn.relative_position_bias_table
    assert table.grad is not None and table.grad.device == meta
    masks = [
        mask for module in model.modules() for mask in getattr(module, "_shift_masks", {}).values()
    ]
    assert bool(masks) == (attention == "sdpa")
    assert all(mask.device == meta for mask in masks)


@pytest.mark.parametrize("modality", literal_values("modality"))
def test_real_training_step_on_cpu(base_params: Params, modality: str):
    params = params_for_cell(base_params, AblationCell(modality=modality))
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    polarity = polarity_of(params)
    model, criterion = build_training_modules(params, polarity, cpu, channels_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch(params, len(polarity), cpu)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = training_loss(model, criterion, batch, params, Runtime(cpu))
    assert torch.isfinite(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert moved, "one optimizer step changed no parameter"
    # The branch the modality leaves out is not built, so nothing of it can train.
    if modality == "audio":
        assert not any(name.startswith("video.") for name in moved)
    if modality == "video":
        assert not any(name.startswith("audio.") for name in moved)
    again = training_loss(model, criterion, batch, params, Runtime(cpu))
    assert torch.isfinite(again)


def test_the_authors_options_on_meta(base_params: Params):
    params = authors_options(base_params)
    meta = torch.device("meta")
    polarity = polarity_of(params)
    model, criterion = build_training_modules(params, polarity, meta, channels_last=True)
    batch = make_batch(params, len(polarity), meta)
    loss = training_loss(model, criterion, batch, params, Runtime(meta))
    assert loss.device == meta and loss.ndim == 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.device == meta for g in grads)


def test_the_authors_options_train_a_step_on_cpu(base_params: Params):
    params = authors_options(base_params)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    polarity = polarity_of(params)
    model, criterion = build_training_modules(params, polarity, cpu, channels_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch(params, len(polarity), cpu)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = training_loss(model, criterion, batch, params, Runtime(cpu))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = {
        name.split(".")[0]
        for name, p in model.named_parameters()
        if not torch.equal(p, before[name])
    }
    assert moved == {"video", "audio", "fusion"}
