"""Pretrained starts from foreign checkpoint layouts: where every tensor lands.

Each checkpoint is written here from a randomly initialised reference module (timm builds the
2D Swin and the ViT locally, pretrained=False; nothing is downloaded), in the layout its
publisher uses, and loaded through the branch's settings as a user would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer

from emotions.models.audio import AudioBackbone
from emotions.models.pretrained import detect_video_layout
from emotions.models.pretrained.ast import AUDIOSET_MEAN, AUDIOSET_STD, interpolate_time
from emotions.models.pretrained.swin2d import inflate_bias_table
from emotions.models.settings import AudioSettings, VideoSettings
from emotions.models.video import VideoBackbone, WeightsError, build_swin3d


def _swin2d(window: int = 4) -> SwinTransformer:
    """A 2D Swin with the tiny 3D config's widths: patch 8, dim 48, depths 2-2, heads 3-6."""
    torch.manual_seed(3)
    return SwinTransformer(
        img_size=64,
        patch_size=8,
        embed_dim=48,
        depths=(2, 2),
        num_heads=(3, 6),
        window_size=window,
        num_classes=10,
    ).eval()


def _original_swin_layout(state: dict) -> dict:
    """timm's keys → the Microsoft release's: merging at the end of the previous stage, the
    relative-position index and attention-mask buffers saved, a plain ``head``."""
    out = {}
    for key, value in state.items():
        if m := re.match(r"layers\.(\d+)\.downsample\.(.+)", key):
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        out[key.replace("head.fc.", "head.")] = value
        if key.endswith("attn.qkv.weight"):
            out[key.replace("qkv.weight", "relative_position_index")] = torch.zeros(16, 16).long()
        if key.endswith("norm1.weight"):
            out[key.replace("norm1.weight", "attn_mask")] = torch.zeros(4, 16, 16)
    return out


def _features(backbone: VideoBackbone, clip: torch.Tensor) -> torch.Tensor:
    swin = backbone.swin
    return swin.norm(swin.features(swin.patch_embed(clip)))  # B T' H' W' C


@pytest.mark.parametrize("layout", ["timm", "original"])
def test_inflated_2d_swin_on_a_repeated_frame_gives_the_image_features(
    layout: str, tmp_path: Path
) -> None:
    image_model = _swin2d()
    state = image_model.state_dict()
    if layout == "original":
        state = {"model": _original_swin_layout(state)}
        assert "layers.0.downsample.reduction.weight" in state["model"]
    path = tmp_path / f"swin2d_{layout}.pth"
    torch.save(state, path)
    video = VideoBackbone(VideoSettings(weights=str(path), drop_path=0.0)).eval()

    kernel = image_model.patch_embed.proj.weight
    assert torch.equal(video.swin.patch_embed.proj.weight[:, :, 1], kernel / 2)
    assert torch.equal(
        video.swin.features[2][1].mlp[3].weight, image_model.layers[1].blocks[1].mlp.fc2.weight
    )
    assert torch.equal(
        video.swin.features[1].reduction.weight, image_model.layers[1].downsample.reduction.weight
    )
    images = torch.randn(2, 3, 64, 64)
    clip = images.unsqueeze(2).repeat(1, 1, 8, 1, 1)  # B C T H W: one frame, 8 times
    with torch.no_grad():
        expected = image_model.forward_features(images)  # B H' W' C
        got = _features(video, clip)
    assert got.shape == (2, 4, 4, 4, 96)
    for t in range(4):
        torch.testing.assert_close(got[:, t], expected, rtol=1e-4, atol=1e-5)


def test_bias_tables_are_resized_then_repeated_over_time() -> None:
    table = torch.randn(13 * 13, 3)  # a window-7 table
    inflated = inflate_bias_table(table, [2, 4, 4])
    assert inflated.shape == (3 * 7 * 7, 3)
    assert torch.equal(inflated[:49], inflated[49:98])  # the same for every temporal offset
    same = inflate_bias_table(table, [8, 7, 7])  # swin3d_t's window keeps the spatial table
    assert same.shape == (15 * 13 * 13, 3) and torch.equal(same[:169], table)
    constant = inflate_bias_table(torch.full((169, 2), 0.25), [2, 4, 4])
    torch.testing.assert_close(constant, torch.full_like(constant, 0.25))

    path_model = _swin2d(window=8)  # 15×15 tables into the tiny model's 7×7 (window 4)
    target = build_swin3d(VideoSettings())
    from emotions.models.pretrained import to_torchvision_swin3d

    state = to_torchvision_swin3d(path_model.state_dict(), target)
    assert state["features.0.0.attn.relative_position_bias_table"].shape == (3 * 49, 3)
    target.load_state_dict(state, strict=False)  # all but the (unused) classifier head
    assert set(target.state_dict()) - set(state) == {"head.weight", "head.bias"}


def _video_swin_layout(state: dict, mmaction: bool) -> dict:
    """torchvision's Swin3d keys written the way the Video Swin release / mmaction2 save them."""
    out = {}
    last = max(int(k.split(".")[1]) for k in state if k.startswith("features.")) // 2
    for key, value in state.items():
        if m := re.match(r"features\.(\d+)\.(\d+)\.(.+)", key):
            rest = m.group(3).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            key = f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.{rest}"
        elif m := re.match(r"features\.(\d+)\.(.+)", key):
            key = f"layers.{int(m.group(1)) // 2}.downsample.{m.group(2)}"
        elif key.startswith("norm.") and mmaction:
            key = key.replace("norm.", f"norm{last}.")
        elif key.startswith("head."):
            key = key.replace("head.", "cls_head.fc_cls.")
            out[key] = value
            continue
        out[f"backbone.{key}"] = value
    return out


@pytest.mark.parametrize("mmaction", [False, True])
def test_kinetics_video_swin_layout_lands_on_torchvision(mmaction: bool, tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = build_swin3d(VideoSettings()).eval()
    foreign = _video_swin_layout(source.state_dict(), mmaction)
    assert "backbone.layers.1.blocks.0.mlp.fc1.weight" in foreign
    assert "backbone.layers.0.downsample.reduction.weight" in foreign
    assert detect_video_layout(foreign) == "video_swin"
    path = tmp_path / "k400.pth"
    torch.save({"state_dict": foreign, "meta": {"epoch": 30}}, path)
    video = VideoBackbone(VideoSettings(weights=str(path), drop_path=0.0)).eval()
    for key, value in source.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(video.swin.state_dict()[key], value), key
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            _features(video, clip), source.norm(source.features(source.patch_embed(clip)))
        )


def test_a_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    state = _swin2d().state_dict()
    state["layers.1.blocks.1.mlp.fc3.weight"] = torch.zeros(3, 3)
    del state["layers.0.blocks.1.norm2.bias"]
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        VideoBackbone(VideoSettings(weights=str(path), weights_layout="swin2d"))
    message = str(error.value)
    assert "odd.pth" in message
    assert "missing keys: features.0.1.norm2.bias" in message
    assert "unexpected keys: features.2.1.mlp.fc3.weight" in message
    wide = tmp_path / "wide.pth"
    torch.save(
        SwinTransformer(
            img_size=64, patch_size=8, embed_dim=96, depths=(2, 2), num_heads=(3, 6), window_size=4
        ).state_dict(),
        wide,
    )
    with pytest.raises(
        WeightsError, match=r"shape mismatch: patch_embed\.proj\.weight \(96, 3, 2, 8, 8\)"
    ):
        VideoBackbone(VideoSettings(weights=str(wide)))


def test_ast_checkpoint_position_embeddings_are_interpolated_along_time(tmp_path: Path) -> None:
    torch.manual_seed(7)
    # AST's own geometry: 1024 frames × 128 bins at stride 10 → a 12 × 101 grid, plus the
    # class and distillation tokens; saved the AST way (DataParallel "module.", the ViT under
    # "v.", an AudioSet head "mlp_head").
    source = AudioBackbone(AudioSettings(stride=10, frames=1024))
    assert source.grid == (12, 101)
    state = {f"module.v.{k}": v for k, v in source.vit.state_dict().items()}
    tokens = torch.randn(1, 2, 96)
    state["module.v.pos_embed"] = torch.cat([tokens, source.vit.pos_embed], dim=1)
    state["module.v.cls_token"], state["module.v.dist_token"] = tokens[:, :1], tokens[:, 1:]
    state["module.mlp_head.0.weight"] = torch.ones(96)
    state["module.mlp_head.1.weight"] = torch.zeros(527, 96)
    path = tmp_path / "ast_audioset.pth"
    torch.save(state, path)

    ours = AudioBackbone(AudioSettings(stride=10, frames=400, weights=str(path)))
    assert ours.grid == (12, 39)
    pos = ours.vit.pos_embed.reshape(12, 39, 96)
    grid = source.vit.pos_embed.reshape(12, 101, 96)
    for row in (0, 5, 11):  # each frequency row resampled on its own, along time
        expected = F.interpolate(grid[row].T[None], size=39, mode="linear", align_corners=False)
        torch.testing.assert_close(pos[row], expected[0].T)
    torch.testing.assert_close(
        interpolate_time(source.vit.pos_embed, 12, 101), source.vit.pos_embed
    )
    assert torch.equal(ours.vit.blocks[1].attn.qkv.weight, source.vit.blocks[1].attn.qkv.weight)


def test_ast_input_normalisation_option() -> None:
    torch.manual_seed(0)
    raw = torch.randn(2, 400, 128) * 3 - 5  # a raw log-mel
    data_mean, data_std = -5.5, 2.5
    normalised = (raw - data_mean) / data_std  # what the loader hands the model
    plain = AudioBackbone(AudioSettings()).eval()
    scaled = AudioBackbone(AudioSettings(input_norm="ast")).eval()
    scaled.load_state_dict(plain.state_dict(), strict=False)
    scaled.set_input_stats(data_mean, data_std)
    assert "data_mean" in scaled.state_dict() and "data_mean" not in plain.state_dict()
    with torch.no_grad():
        want = plain((raw - AUDIOSET_MEAN) / (2 * AUDIOSET_STD))[0]
        torch.testing.assert_close(scaled(normalised)[0], want, rtol=1e-4, atol=1e-5)
