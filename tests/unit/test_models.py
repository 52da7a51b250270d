"""AV-CANet on tiny settings: shapes, windowing, missing modalities, weights files, learning."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from timm.models.vision_transformer import VisionTransformer

import emotions.models
from emotions.models.audio import AudioBackbone
from emotions.models.avcanet import AVCANet, count_parameters, estimate_flops
from emotions.models.fusions._base import assign_windows
from emotions.models.losses import EPCELoss
from emotions.models.settings import (
    AudioSettings,
    ModelSettings,
    VideoSettings,
    paper_size,
    without_weights,
)
from emotions.models.video import VideoBackbone, WeightsError

K = 6
FUSIONS = ["concat", "local", "global", "lgfm", "pyramid"]
MODALITIES = ["both", "video", "audio"]


def _inputs(b: int = 2, t: int = 8, size: int = 64, frames: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (b, t, 3, size, size), generator=g, dtype=torch.uint8)
    audio = torch.randn(b, frames, 128, generator=g)
    has_audio = torch.ones(b, dtype=torch.bool)
    return video, audio, has_audio


def _model(**changes) -> AVCANet:
    torch.manual_seed(0)
    return AVCANet(ModelSettings(**changes), K).eval()


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_output_shapes(fusion: str, modality: str) -> None:
    model = _model(fusion=fusion, modality=modality)
    video, audio, has_audio = _inputs()
    has_audio[1] = False
    out = model(video, audio, has_audio)
    assert out["logits"].shape == (2, K)
    assert out["window_logits"].shape == (2, 4, K)
    assert out["embedding"].shape == (2, 128)
    assert all(torch.isfinite(v).all() for v in out.values())
    aux = {"audio_logits", "video_logits"} if modality == "both" else set()
    assert set(out) == {"logits", "window_logits", "embedding"} | aux
    # Every parameter takes part (DDP without find_unused_parameters relies on it).
    sum(out[key].sum() for key in ("logits", "window_logits", *aux)).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


@pytest.mark.parametrize(
    ("fusion", "t", "frames", "windows"),
    [
        ("lgfm", 6, 250, 3),
        ("lgfm", 8, 400, 6),
        ("global", 12, 530, 2),
        ("concat", 4, 160, 5),
        ("pyramid", 8, 400, 6),  # windows not a power of two: the last block is partial
        ("pyramid", 12, 530, 3),
    ],
)
def test_windowing_is_general(fusion: str, t: int, frames: int, windows: int) -> None:
    # (8, 400, 6): more windows than the 4 video time positions, windows borrow the nearest.
    model = _model(fusion=fusion, windows=windows)
    video, audio, has_audio = _inputs(t=t, size=48, frames=frames)
    with torch.no_grad():
        out = model(video, audio, has_audio)
    assert out["window_logits"].shape == (2, windows, K)
    assert torch.isfinite(out["window_logits"]).all()


def test_window_assignment_covers_every_window_in_time_order() -> None:
    member = assign_windows(torch.tensor([0.125, 0.375, 0.625, 0.875]), 4)
    assert torch.equal(member, torch.eye(4, dtype=torch.bool))
    member = assign_windows(torch.tensor([0.25, 0.75]), 4)  # two tokens, four windows
    assert member.any(dim=1).all()
    assert member[:2, 0].all() and member[2:, 1].all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_missing_audio_output_ignores_audio_content(fusion: str) -> None:
    model = _model(fusion=fusion)
    video, audio, _ = _inputs()
    has_audio = torch.tensor([False, True])
    other = audio.clone()
    other[0] = torch.randn(400, 128) * 10  # clip 0 has no audio: its tensor must not matter
    other[1] += 1.0  # clip 1 has audio: it must matter
    with torch.no_grad():
        a = model(video, audio, has_audio)
        b = model(video, other, has_audio)
    for key in ("logits", "window_logits", "embedding"):  # not audio_logits: loss-masked
        torch.testing.assert_close(a[key][0], b[key][0], rtol=0, atol=1e-6)
        assert not torch.allclose(a[key][1], b[key][1])


def test_mask_modality() -> None:
    model = _model()
    video, audio, has_audio = _inputs()
    with torch.no_grad():
        full = model(video, audio, has_audio)
        no_audio = model(video, audio, has_audio, mask_modality="audio")
        missing = model(video, audio, torch.zeros(2, dtype=torch.bool))
        no_video = model(video, audio, has_audio, mask_modality="video")
        no_video_other = model(video.flip(0), audio, has_audio, mask_modality="video")
    torch.testing.assert_close(no_audio["logits"], missing["logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(no_video["logits"], no_video_other["logits"], rtol=0, atol=1e-6)
    assert not torch.allclose(full["logits"], no_audio["logits"])
    assert not torch.allclose(full["logits"], no_video["logits"])
    with pytest.raises(ValueError, match="mask_modality='video'"):
        _model(modality="audio")(None, audio, has_audio, mask_modality="video")


def test_single_modality_does_not_need_or_build_the_other_branch() -> None:
    video, audio, has_audio = _inputs()
    video_only = _model(modality="video")
    assert video_only.audio is None
    assert video_only(video)["logits"].shape == (2, K)
    audio_only = _model(modality="audio")
    assert audio_only.video is None
    assert audio_only(audio=audio, has_audio=has_audio)["logits"].shape == (2, K)
    with pytest.raises(ValueError, match="needs a video tensor"):
        video_only(None, audio, has_audio)


def test_uint8_and_float_video_are_the_same_clip() -> None:
    model = _model(modality="video")
    video, _, _ = _inputs()
    with torch.no_grad():
        a = model(video)["logits"]
        b = model(video.float() / 255.0)["logits"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_bad_input_shapes_are_clear_errors() -> None:
    model = _model()
    video, audio, has_audio = _inputs()
    with pytest.raises(ValueError, match=r"video must be \(B, T, 3, H, W\)"):
        model(video[:, :, :1], audio, has_audio)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(video, audio[:1], has_audio)
    with pytest.raises(ValueError, match="has_audio must be"):
        model(video, audio, has_audio[:1])
    with pytest.raises(ValueError, match="smaller than a 16×16 patch"):
        model(video, audio[:, :8], has_audio)


def test_video_weights_file(tmp_path: Path) -> None:
    source = VideoBackbone(VideoSettings())
    good = tmp_path / "kinetics.pth"
    state = source.swin.state_dict()
    state["head.weight"] = torch.zeros(400, source.dim)  # a Kinetics head is ignored
    torch.save({"state_dict": state, "epoch": 3}, good)
    loaded = VideoBackbone(VideoSettings(weights=str(good)))
    for key, value in source.swin.state_dict().items():
        assert torch.equal(loaded.swin.state_dict()[key], value), key

    bad = tmp_path / "wrong.pth"
    state = dict(source.swin.state_dict())
    state["patch_embed.proj.weight"] = torch.zeros(7, 3, 2, 8, 8)
    torch.save(state, bad)
    with pytest.raises(
        WeightsError, match=r"wrong\.pth.*shape mismatch: patch_embed\.proj\.weight"
    ):
        VideoBackbone(VideoSettings(weights=str(bad)))
    partial = tmp_path / "partial.pth"
    torch.save(
        {k: v for k, v in source.swin.state_dict().items() if "features.1" not in k}, partial
    )
    with pytest.raises(WeightsError, match=r"partial\.pth.*missing keys: features\.1"):
        AVCANet(ModelSettings(video=VideoSettings(weights=str(partial))), K)
    with pytest.raises(WeightsError, match="not found"):
        VideoBackbone(VideoSettings(weights=str(tmp_path / "absent.pth")))


def test_video_weights_of_another_arch_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(VideoBackbone(VideoSettings()).swin.state_dict(), path)
    # swin3d_t has more stages and wider layers: the error must say where it first differs.
    with pytest.raises(
        WeightsError,
        match=r"tiny\.pth: does not fit the video 'swin3d_t'.*patch_embed\.proj\.weight",
    ):
        VideoBackbone(VideoSettings(arch="swin3d_t", weights=str(path)))


def test_audio_weights_from_an_imagenet_vit(tmp_path: Path) -> None:
    torch.manual_seed(1)
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=96, depth=2, num_heads=3)
    path = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, path)  # RGB, 14×14 grid + class token, 1000-way head
    audio = AudioBackbone(AudioSettings(weights=str(path)))
    expected = vit.patch_embed.proj.weight.mean(dim=1, keepdim=True)
    assert torch.equal(audio.vit.patch_embed.proj.weight, expected)
    assert audio.vit.pos_embed.shape == (1, 8 * 25, 96)
    assert torch.equal(audio.vit.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)

    wrong = tmp_path / "small.pth"
    torch.save(vit.state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"small\.pth: does not fit the audio 'small'"):
        AudioBackbone(AudioSettings(size="small", weights=str(wrong)))


def test_audio_weights_of_the_same_grid_load_as_is(tmp_path: Path) -> None:
    source = AudioBackbone(AudioSettings(stride=10))
    path = tmp_path / "ast.pth"
    torch.save({f"module.v.{k}": v for k, v in source.vit.state_dict().items()}, path)
    loaded = AudioBackbone(AudioSettings(stride=10, weights=str(path)))
    assert torch.equal(loaded.vit.pos_embed, source.vit.pos_embed)


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = AVCANet(ModelSettings(dropout=0.0), K).train()
    video, audio, has_audio = _inputs(b=6, size=32, frames=160, seed=1)
    has_audio[5] = False
    target = torch.tensor([0, 1, 2, 3, 4, 5])
    loss_fn = EPCELoss(["negative"] * 4 + ["positive", "neutral"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = loss_fn(model(video, audio, has_audio)["logits"], target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_parameter_and_flop_helpers() -> None:
    model = _model()
    video, audio, has_audio = _inputs(b=1)
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())
    model.video.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == n - count_parameters(model.video)
    model.train()
    flops = estimate_flops(model, {"video": video, "audio": audio, "has_audio": has_audio})
    # Lower bound: the audio blocks alone spend 2 FLOPs per weight on each of 200 patches.
    assert flops > 2 * 200 * count_parameters(model.audio.vit.blocks)
    assert model.training  # counted in eval mode, handed back as it came


def test_paper_size_parameter_count() -> None:
    model = AVCANet(paper_size(), K)
    # torchvision's swin3d_t is 28,158,070 parameters with its 400-way Kinetics head.
    assert count_parameters(model.video) == 28_158_070 - (768 * 400 + 400)
    assert 85e6 < count_parameters(model.audio) < 87e6  # ViT-B/16 body
    assert model.audio.grid == (12, 101)  # AST: 1024 frames × 128 bins, stride 10


def test_without_weights_keeps_the_architecture() -> None:
    settings = ModelSettings(
        video=VideoSettings(arch="swin3d_s", weights="/gone/k400.pth"),
        audio=AudioSettings(size="small", weights="/gone/vit.pth"),
    )
    plain = without_weights(settings)
    assert plain.video.weights is None and plain.audio.weights is None
    assert plain.video.arch == "swin3d_s" and plain.audio.size == "small"
    assert settings.video.weights == "/gone/k400.pth"  # the original is untouched


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        ModelSettings(fusoin="lgfm")
    with pytest.raises(ValidationError, match="not divisible"):
        ModelSettings(dim=100, heads=3)
    with pytest.raises(ValidationError, match=r"exceeds audio\.patch"):
        AudioSettings(stride=20)
    with pytest.raises(ValidationError):
        ModelSettings(fusion="sum")
    settings = ModelSettings.model_validate({"video": {"arch": "swin3d_s"}, "windows": 8})
    assert settings.video.arch == "swin3d_s" and settings.windows == 8


def test_models_do_not_import_data_train_serve_cli_or_config() -> None:
    forbidden = (
        "emotions.data",
        "emotions.training.trainer",
        "emotions.serve",
        "emotions.cli",
        "emotions.config",
    )
    package = Path(emotions.models.__file__).parent
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), f"{source.name} imports {name}"


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_masked_equals_one_forward_per_mask(fusion: str) -> None:
    """The service's modality share: one backbone pass serves the full prediction and both
    masked ones, each exactly what forward(mask_modality=...) gives."""
    model = _model(fusion=fusion)
    video, audio, has_audio = _inputs()
    has_audio[1] = False
    frames = torch.tensor([200, 400])
    masks = [None, "video", "audio"]
    with torch.no_grad():
        together = model.forward_masked(masks, video, audio, has_audio, audio_frames=frames)
        for mask, out in zip(masks, together, strict=True):
            alone = model(video, audio, has_audio, mask_modality=mask, audio_frames=frames)
            assert out.keys() == alone.keys()
            for key in out:
                torch.testing.assert_close(out[key], alone[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mask_modality"):
        _model(modality="video").forward_masked([None, "audio"], video, audio, has_audio)
