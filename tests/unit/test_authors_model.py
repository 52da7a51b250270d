"""The model options that state the authors' AV-CANet: pixels, per-snippet video, the shared
head, the mpam fusion and their audio branch (XuecWu/eMotions, AV-CANet/models/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import Tensor, nn

from emotions.config import ConfigError, parse_params
from emotions.models.audio.authors_resnet import AuthorsResNetAudio
from emotions.models.avcanet import AVCANet
from emotions.models.fusions.mpam import band_mask
from emotions.models.losses import EPCELoss, ReweightedCELoss
from emotions.models.objective import objective
from emotions.models.settings import AudioSettings, LossSettings, ModelSettings, VideoSettings
from emotions.models.video import VideoBackbone, WeightsError

REPO = Path(__file__).resolve().parents[2]

AUTHORS_MEAN = (100 / 255,) * 3  # VisualStream._init_norm_val: MEAN = 100 / NORM_VALUE


def test_pixels_as_the_authors_scale_them() -> None:
    settings = VideoSettings(mean=AUTHORS_MEAN, std=(1.0, 1.0, 1.0))
    backbone = VideoBackbone(settings)
    video = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    expected = video.permute(0, 2, 1, 3, 4).float() / 255 - 100 / 255  # AVNet.forward
    assert torch.allclose(backbone.normalise(video), expected, atol=1e-7)
    ours = VideoBackbone(VideoSettings()).normalise(video)  # ImageNet's, unchanged
    assert ours[:, 0].mean() != expected[:, 0].mean()


SNIPPETS = 16


def authors_settings(**changes: object) -> ModelSettings:
    """A tiny CPU-sized model with every authors' option on."""
    base = {
        "fusion": "mpam",
        "head": "shared",
        "windows": SNIPPETS,
        "dim": 32,
        "heads": 4,
        "pyramid_levels": 3,
        "video": VideoSettings(per_snippet=True),
        "audio": AudioSettings(arch="authors_resnet34", segments=SNIPPETS, embed=32),
    }
    return ModelSettings(**{**base, **changes})


def clip_batch(frames_per_snippet: int = 2, size: int = 32, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(
        0, 256, (2, SNIPPETS * frames_per_snippet, 3, size, size), dtype=torch.uint8, generator=g
    )
    return {
        "video": video,
        "audio": torch.randn(2, 256, 32, generator=g),
        "has_audio": torch.tensor([True, False]),
    }


def video_tokens(model: AVCANet, batch: dict[str, Tensor]) -> Tensor:
    """The video tokens the fusion receives (B, L, D), in time order."""
    with torch.no_grad():
        return model.encode(batch["video"], batch["audio"], batch["has_audio"], None).tokens[
            "video"
        ]


def test_per_snippet_gives_one_token_per_snippet_and_no_window_crosses_one() -> None:
    torch.manual_seed(0)
    model = AVCANet(authors_settings(), num_classes=6).eval()
    batch = clip_batch()
    tokens = video_tokens(model, batch)
    assert tokens.shape == (2, SNIPPETS, 32)
    changed = dict(batch, video=batch["video"].clone())
    changed["video"][:, 10:12] = 255 - changed["video"][:, 10:12]  # snippet 5's two frames
    after = video_tokens(model, changed)
    others = [k for k in range(SNIPPETS) if k != 5]
    assert not torch.allclose(after[:, 5], tokens[:, 5])
    torch.testing.assert_close(after[:, others], tokens[:, others], rtol=0, atol=1e-6)
    # The whole-clip layout's windows straddle snippets: a neighbour's tokens move too.
    torch.manual_seed(0)
    whole = AVCANet(authors_settings(video=VideoSettings(), head="separate"), 6).eval()
    before, moved = video_tokens(whole, batch), video_tokens(whole, changed)
    per_position = before.shape[1] // SNIPPETS  # 16 temporal positions × 2 × 2 tokens
    neighbour = slice(4 * per_position, 5 * per_position)
    assert not torch.allclose(before[:, neighbour], moved[:, neighbour], atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_shared_head_modality_logits_sum_to_the_fused_logits(train: bool) -> None:
    torch.manual_seed(0)
    model = AVCANet(authors_settings(), num_classes=6).train(train)
    assert not model.aux  # no auxiliary heads: the shared head's halves are the modality heads
    out = model(**clip_batch())
    torch.testing.assert_close(out["audio_logits"] + out["video_logits"], out["logits"])
    head = model.fusion.head
    assert isinstance(head, nn.Linear) and head.in_features == 2 * 32


def authors_band(snippets: int, level: int) -> Tensor:
    """The mask of `attention` in AV-CANet/models/Transformer.py at pyramid level ``level``:
    masksize = dilation · 2 = 2^(level+1), halved, then zeros left and right of the band."""
    half = int(2 ** (level + 1) / 2)
    mask = torch.ones(snippets, snippets)
    for i in range(snippets):
        if i - half > 0:
            mask[i, : i - half] = 0
        if i + half + 1 < snippets:
            mask[i, half + i + 1 :] = 0
    return mask.bool()


@pytest.mark.parametrize("level", range(5))
def test_mpam_band_masks(level: int) -> None:
    mask = band_mask(SNIPPETS, level)
    assert torch.equal(mask, authors_band(SNIPPETS, level))
    q, k = torch.meshgrid(torch.arange(SNIPPETS), torch.arange(SNIPPETS), indexing="ij")
    assert torch.equal(mask, (q - k).abs() <= 2**level)


def test_mpam_ignores_what_it_must_not_read() -> None:
    torch.manual_seed(0)
    model = AVCANet(authors_settings(), num_classes=6).eval()
    batch = clip_batch()
    other = dict(batch, audio=batch["audio"].clone())
    other["audio"][1] = torch.randn(256, 32) * 10  # clip 1 has no audio: must not matter
    with torch.no_grad():
        a, b = model(**batch), model(**other)
    torch.testing.assert_close(a["logits"][1], b["logits"][1])
    assert torch.isfinite(a["logits"]).all() and torch.isfinite(a["window_logits"]).all()


def test_authors_audio_branch(tmp_path: Path) -> None:
    branch = AuthorsResNetAudio(AudioSettings(arch="authors_resnet34", segments=16, embed=512))
    stem = branch.net.conv1
    assert (stem.in_channels, stem.kernel_size, stem.stride) == (1, (7, 1), (2, 1))
    seen: list[torch.Size] = []
    branch.net.layer4.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    tokens, centres = branch.eval()(torch.randn(2, 16 * 256, 32))  # 16 chunks of 256 × 32
    assert tokens.shape == (2, 16, 512) and centres.shape == (16,)
    assert seen[0][-2:] == (8, 2)  # what AvgPool2d([8, 2]) pools whole
    assert tokens.abs().max() <= 1  # Tanh
    # ImageNet start from a local torchvision file: the body is taken, the stem is not.
    imagenet = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(imagenet.state_dict(), path)
    loaded = AuthorsResNetAudio(
        AudioSettings(arch="authors_resnet34", segments=16, weights=str(path))
    )
    assert torch.equal(loaded.net.layer3[2].conv1.weight, imagenet.layer3[2].conv1.weight)
    assert loaded.net.conv1.weight.shape == (64, 1, 7, 1)
    torch.save({"conv1.weight": imagenet.conv1.weight}, tmp_path / "stem.pth")
    with pytest.raises(WeightsError, match="not a torchvision resnet34"):
        AuthorsResNetAudio(
            AudioSettings(arch="authors_resnet34", weights=str(tmp_path / "stem.pth"))
        )


def test_the_criterion_on_all_three_heads() -> None:
    torch.manual_seed(0)
    logits = {k: torch.randn(4, 6) for k in ("logits", "audio_logits", "video_logits")}
    out = {**logits, "window_logits": torch.randn(4, 2, 6)}
    target = torch.tensor([0, 1, 2, 5])
    settings = LossSettings(
        form="reweight", aux_audio=1.0, aux_video=1.0, window_weight=0.0, apply_to="all"
    )
    polarity = ["positive", "negative", "neutral", "positive", "negative", "negative"]
    criterion = ReweightedCELoss(polarity, settings)
    total = objective(out, target, torch.ones(4, dtype=torch.bool), criterion, settings)["loss"]
    expected = sum(criterion(logits[k], target) for k in logits)
    torch.testing.assert_close(total, expected)
    ours = settings.model_copy(update={"apply_to": "fused"})
    plain = objective(out, target, torch.ones(4, dtype=torch.bool), criterion, ours)["loss"]
    assert not torch.allclose(plain, total)  # the modality terms were plain CE


def test_per_snippet_needs_the_cache_cut_into_the_windows() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["model"]["video"]["per_snippet"] = True
    with pytest.raises(ConfigError, match="per_snippet"):
        parse_params(raw)
    raw["preprocess"].update(num_frames=8, snippet_frames=2)  # 4 snippets = model.windows
    assert parse_params(raw).model.video.per_snippet


def test_per_sample_losses_average_to_the_criterion() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(8, 6), torch.randint(0, 6, (8,))
    polarity = ["positive", "negative", "neutral", "positive", "negative", "negative"]
    for criterion in (
        EPCELoss(polarity, LossSettings(w_pol=0.7, w_opp=0.3)),
        ReweightedCELoss(polarity, LossSettings(form="reweight")),
    ):
        torch.testing.assert_close(
            criterion.per_sample(logits, target).mean(), criterion(logits, target)
        )
