"""Parameter groups (weight decay, backbone lr, layer decay) and gradient accumulation."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from smallcorpus import RUN, SmallCorpus, keep_torch_threads
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from emotions.config import TrainConfig
from emotions.models.avcanet import AVCANet
from emotions.models.settings import AudioSettings, ModelSettings
from emotions.training.optim import build_optimizer, ddp_sync, micro_group, param_groups
from emotions.training.trainer import train_run

K = 6


def _model(**changes) -> AVCANet:
    torch.manual_seed(0)
    return AVCANet(ModelSettings(**changes), K)


def _by_name(groups: list[dict]) -> dict[str, dict]:
    return {name: group for group in groups for name in group["names"]}


def test_every_parameter_once_and_no_decay_on_norms_biases_tables_and_tokens() -> None:
    model = _model()
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    named = dict(model.named_parameters())
    by_name = _by_name(groups)
    assert sorted(by_name) == sorted(named)
    assert sum(len(g["params"]) for g in groups) == len(named)
    no_decay = {name for name, g in by_name.items() if g["weight_decay"] == 0.0}
    for name in (
        "video.swin.patch_embed.norm.weight",  # a norm
        "video.swin.features.0.0.attn.qkv.bias",  # a bias
        "video.swin.features.0.0.attn.relative_position_bias_table",  # a position table
        "audio.vit.pos_embed",
        "fusion.window_embed",  # learned tokens and embeddings
        "fusion.missing.audio",
        "fusion.modality_embed.video",
        "fusion.glob.clip_token",
        "fusion.local.blocks.video.0.null",
    ):
        assert name in no_decay, name
    for name in (
        "video.swin.features.0.0.attn.qkv.weight",
        "audio.vit.patch_embed.proj.weight",
        "fusion.head.1.weight",
        "aux.audio.1.weight",
    ):
        assert by_name[name]["weight_decay"] == 0.05, name
    assert all(named[n].ndim > 1 for n in by_name if n not in no_decay)


def test_backbone_lr_multiplier_and_layer_decay() -> None:
    model = _model()
    groups = param_groups(model, lr=1e-3, weight_decay=0.0, backbone_lr_mult=0.1)
    lr = {name: g["lr"] for name, g in _by_name(groups).items()}
    assert lr["video.swin.features.2.1.mlp.0.weight"] == pytest.approx(1e-4)
    assert lr["audio.vit.blocks.0.attn.qkv.weight"] == pytest.approx(1e-4)
    assert lr["fusion.head.1.weight"] == lr["aux.video.1.weight"] == pytest.approx(1e-3)

    decay = 0.5
    groups = param_groups(model, lr=1.0, weight_decay=0.0, backbone_lr_mult=1.0, layer_decay=decay)
    lr = {name: g["lr"] for name, g in _by_name(groups).items()}
    # The tiny Video Swin: depths 2-2, so 6 layers: embedding 0, blocks 1-4, final norm 5.
    assert model.video.num_layers == 6
    assert lr["video.swin.patch_embed.proj.weight"] == pytest.approx(decay**5)
    assert lr["video.swin.features.0.0.attn.qkv.weight"] == pytest.approx(decay**4)
    assert lr["video.swin.features.1.reduction.weight"] == pytest.approx(decay**3)  # merging
    assert lr["video.swin.features.2.1.attn.qkv.weight"] == pytest.approx(decay**1)
    assert lr["video.swin.norm.weight"] == pytest.approx(1.0)
    # The tiny AST: 2 blocks.
    assert lr["audio.vit.pos_embed"] == pytest.approx(decay**3)
    assert lr["audio.vit.blocks.1.mlp.fc1.weight"] == pytest.approx(decay**1)
    assert lr["fusion.head.1.weight"] == pytest.approx(1.0)

    resnet = _model(audio=AudioSettings(arch="resnet18"))
    lr = {
        n: g["lr"]
        for n, g in _by_name(
            param_groups(resnet, lr=1.0, weight_decay=0.0, layer_decay=decay)
        ).items()
    }
    assert resnet.audio.num_layers == 10  # stem, 8 basic blocks, top
    assert lr["audio.net.conv1.weight"] == pytest.approx(decay**9)
    assert lr["audio.net.layer1.0.conv1.weight"] == pytest.approx(decay**8)
    assert lr["audio.net.layer4.1.conv2.weight"] == pytest.approx(decay**1)


def test_optimizer_from_train_settings_and_frozen_parameters() -> None:
    model = _model(modality="video")
    model.video.swin.patch_embed.requires_grad_(False)
    cfg = TrainConfig(lr=2e-3, weight_decay=0.02, backbone_lr_mult=0.5)
    optimizer = build_optimizer(model, cfg)
    names = {n for g in optimizer.param_groups for n in g["names"]}
    assert not any(n.startswith("video.swin.patch_embed") for n in names)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-3, 2e-3])
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.02}


def test_micro_groups_cover_an_epoch() -> None:
    groups = [micro_group(step, 7, 3) for step in range(7)]
    assert groups[:3] == [range(0, 3)] * 3 and groups[6] == range(6, 7)
    assert [micro_group(s, 4, 1) for s in range(4)] == [range(s, s + 1) for s in range(4)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accumulated_micro_batches_give_the_full_batch_gradient_and_ddp_skips_sync() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(net(x), y).backward()
    full = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        ddp = nn.parallel.DistributedDataParallel(net)
        for step in range(4):  # 4 micro-batches of 2, one group
            group = micro_group(step, 4, 4)
            final = step + 1 == group.stop
            with ddp_sync(ddp, final):
                assert ddp.require_backward_grad_sync == final
                part = slice(2 * step, 2 * step + 2)
                loss = nn.functional.cross_entropy(ddp(x[part]), y[part])
                (loss / len(group)).backward()
    finally:
        dist.destroy_process_group()
    for g, expected in zip((p.grad for p in net.parameters()), full, strict=True):
        torch.testing.assert_close(g, expected)


@pytest.mark.slow
def test_training_with_accumulation_steps_once_per_group(
    corpus: SmallCorpus, tmp_path: Path
) -> None:
    split = pd.read_parquet(corpus.paths(Path("unused")).split)
    train = int((split["split"] == "train").sum())
    batches = train // 4 if train > 4 else 1
    steps = {"n": 0}
    handle = register_optimizer_step_post_hook(lambda *a: steps.__setitem__("n", steps["n"] + 1))
    try:
        with keep_torch_threads():
            summary = train_run(
                corpus.params(epochs=2, batch_size=4, accumulate=3),
                RUN,
                paths=corpus.paths(tmp_path / "model"),
                progress=False,
            )
    finally:
        handle.remove()
    assert summary["epochs"] == 2
    assert steps["n"] == 2 * math.ceil(batches / 3)
