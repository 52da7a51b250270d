"""The fusion and audio-branch registries, and the pyramid fusion's masks and properties."""

from __future__ import annotations

import typing

import pytest
import torch

from emotions.config import AblationCell
from emotions.models.avcanet import AVCANet
from emotions.models.fusions.pyramid import PyramidFusion, level_mask
from emotions.models.registry import AUDIO_BRANCHES, FUSIONS, Registry
from emotions.models.settings import AudioArch, AudioSettings, Fusion, ModelSettings

K = 6


def test_registries_list_exactly_the_settings_names() -> None:
    assert FUSIONS.names() == sorted(typing.get_args(Fusion))
    assert AUDIO_BRANCHES.names() == sorted(typing.get_args(AudioArch))
    assert typing.get_args(AblationCell.model_fields["fusion"].annotation) == typing.get_args(
        Fusion
    )
    with pytest.raises(ValueError, match=r"unknown fusion 'sum' \(registered: concat, global"):
        FUSIONS.create("sum")


def test_a_new_part_is_one_registration() -> None:
    registry = Registry("widget", "emotions.models.fusions")

    @registry.register("plain", "alias")
    class Widget:
        def __init__(self, size: int) -> None:
            self.size = size

    assert registry.create("alias", 3).size == 3
    assert "plain" in registry.names() and "pyramid" not in registry.names()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("plain")(dict)


def test_level_masks_grow_from_local_to_global() -> None:
    # 8 snippets, two modalities laid out video 0-7 then audio 0-7.
    first = level_mask(8, 2, 0, torch.device("cpu"))
    assert first.shape == (16, 16)
    assert first[0, 1] and not first[1, 2]  # blocks of 2 snippets
    assert first[0, 8 + 1] and not first[0, 8 + 2]  # across modalities, the same window
    second = level_mask(8, 2, 1, torch.device("cpu"))
    assert second[0, 3] and not second[3, 4]  # blocks of 4
    assert level_mask(8, 2, 2, torch.device("cpu")).all()  # 2^3 = 8: global


def _fusion(levels: int = 2, windows: int = 8) -> PyramidFusion:
    torch.manual_seed(0)
    settings = ModelSettings(fusion="pyramid", windows=windows, pyramid_levels=levels, dropout=0.0)
    return PyramidFusion(settings, {"video": 48, "audio": 96}, K).eval()


def _tokens(b: int = 2, windows: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = {"video": torch.randn(b, windows * 2, 48, generator=g)}
    tokens["audio"] = torch.randn(b, windows, 96, generator=g)
    times = {
        "video": (torch.arange(windows * 2) + 0.5) / (windows * 2),
        "audio": (torch.arange(windows) + 0.5) / windows,
    }
    present = {"video": torch.ones(b, dtype=torch.bool), "audio": torch.tensor([True, False])}
    return tokens, times, present


def test_pyramid_ignores_absent_audio_and_is_local_at_its_first_level() -> None:
    fusion = _fusion()
    tokens, times, present = _tokens()
    other = {k: v.clone() for k, v in tokens.items()}
    other["audio"][0, -1] = torch.randn(96)  # clip 0 has audio: its last snippet changes
    other["audio"][1] = torch.randn(8, 96) * 10  # clip 1 has none: must not matter
    with torch.no_grad():
        a = fusion(tokens, times, present)
        b = fusion(other, times, present)
    torch.testing.assert_close(a["logits"][1], b["logits"][1], rtol=0, atol=1e-6)
    assert not torch.allclose(a["logits"][0], b["logits"][0])

    # A single level with window 2 and its dilation-1 convolution: snippet 7's audio reaches
    # snippets 6-7 through attention and 5-7 through the conv, but never snippets 0-3 before
    # the global cross-attention. Probe the level output directly.
    one = _fusion(levels=1)
    seen = {}
    one.level_gate.register_forward_hook(lambda mod, args, out: seen.setdefault(len(seen), out))
    with torch.no_grad():
        one(tokens, times, present)
        one(other, times, present)
    diff = (seen[0] - seen[1])[0].abs().amax(dim=-1)  # (2·S,) for clip 0
    video, audio = diff[:8], diff[8:]
    assert video[:5].max() == 0 and audio[:5].max() == 0
    assert video[6:].min() > 0 and audio[7] > 0


def test_pyramid_compiles_without_graph_breaks_and_runs_on_meta() -> None:
    fusion = _fusion()
    tokens, times, present = _tokens()
    x, member, valid = {}, {}, {}
    with torch.no_grad():
        for m in fusion.modalities:
            x[m] = fusion.proj[m](tokens[m])
            member[m] = (times[m] * 8).floor().long() == torch.arange(8).unsqueeze(1)
            valid[m] = present[m].unsqueeze(1).expand(-1, x[m].shape[1]).clone()
        valid["audio"][0, 5:] = False  # clip 0's sound ends after 5 of its 8 audio tokens
        eager = fusion.fuse(x, member, valid)
        compiled = torch.compile(fusion.fuse, backend="eager", fullgraph=True)(x, member, valid)
    torch.testing.assert_close(eager, compiled)

    with torch.device("meta"):
        meta = _fusion()
        mx = {m: torch.empty(2, 16 if m == "video" else 8, 128) for m in meta.modalities}
        mm = {m: torch.ones(8, v.shape[1], dtype=torch.bool) for m, v in mx.items()}
        mv = {m: torch.ones(2, v.shape[1], dtype=torch.bool) for m, v in mx.items()}
        embedding, windows = meta.fuse(mx, mm, mv)
    assert embedding.device.type == "meta" and windows.shape == (2, 8, 128)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_resnet_audio_branch_gives_one_token_per_segment(arch: str) -> None:
    torch.manual_seed(0)
    settings = ModelSettings(fusion="pyramid", audio=AudioSettings(arch=arch, segments=4))
    model = AVCANet(settings, K).eval()
    assert model.audio.dim == 512
    audio = torch.randn(2, 402, 128)  # 402 frames: 4 slices of 100, 2 frames dropped
    tokens, centres = model.audio(audio)
    assert tokens.shape == (2, 4, 512)
    torch.testing.assert_close(centres, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    # Slice 2 depends only on its own frames.
    changed = audio.clone()
    changed[:, 200:300] += 1.0
    with torch.no_grad():
        delta = (model.audio(changed)[0] - model.audio(audio)[0]).abs().amax(dim=-1)
    assert delta[:, [0, 1, 3]].max() == 0 and delta[:, 2].min() > 0
    video = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    out = model(video, audio, torch.tensor([True, False]))
    assert out["logits"].shape == (2, K) and torch.isfinite(out["logits"]).all()
    with pytest.raises(ValueError, match="cannot be cut into 4 segments"):
        model.audio(torch.randn(1, 3, 128))
