"""Padding is masked, never read as signal (issue 12): in every fusion and in the audio branch.

A clip whose sound ends half-way has zero rows after ``audio_frames``; the audio tokens lying
wholly in them are padding. Two probes show they are neither attention keys nor pooled:

- perturbing the learned missing token (what padded tokens are swapped for) leaves the outputs
  that should not see padding unchanged;
- filling the padded rows with noise instead of zeros leaves every output unchanged (the AST
  masks padded patch columns as keys; the ResNet reads each slice on its own).

The sound ends on a patch-column (AST) or slice (ResNet) boundary so that no token holding
sound also covers padded rows: such a token is signal and reads its zero rows as they are.
"""

from __future__ import annotations

import pytest
import torch

from emotions.models.avcanet import AVCANet
from emotions.models.settings import AudioSettings, ModelSettings

K = 6
FUSIONS = ["concat", "local", "global", "lgfm", "pyramid"]
ARCHS = ["ast", "resnet18"]
FRAMES = 400
# Rows of sound in clip 0: 13 of the AST's 25 columns of 16 rows, 2 of the ResNet's 4 slices.
SOUND = {"ast": 208, "resnet18": 200}
# Windows (of 4) of clip 0 holding a valid audio token: AST token 12 is centred at 0.5.
WINDOWS_WITH_SOUND = {"ast": [0, 1, 2], "resnet18": [0, 1]}
# Clip-level outputs; ``audio_logits`` (the auxiliary head) is a masked mean of branch tokens.
CLIP_KEYS = ("logits", "embedding")


def make_model(fusion: str, arch: str, modality: str = "both") -> AVCANet:
    torch.manual_seed(0)
    settings = ModelSettings(
        fusion=fusion, modality=modality, dropout=0.0, audio=AudioSettings(arch=arch)
    )
    return AVCANet(settings, K).eval()


def make_batch(arch: str, sound: int | None = None) -> dict[str, torch.Tensor]:
    """Three clips: sound ending part-way (clip 0), sound throughout, no audio at all."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(3, FRAMES, 128, generator=g)
    rows = SOUND[arch] if sound is None else sound
    audio[0, rows:] = 0.0  # the loader's padding: zeros, the normalised mean
    return {
        "video": torch.randint(0, 256, (3, 8, 3, 64, 64), generator=g, dtype=torch.uint8),
        "audio": audio,
        "has_audio": torch.tensor([True, True, False]),
        "audio_frames": torch.tensor([rows, FRAMES, 0]),
    }


def run(model: AVCANet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(**batch)


def perturb_missing_audio(model: AVCANet) -> None:
    with torch.no_grad():
        missing = model.fusion.missing["audio"]
        missing.add_(torch.randn(missing.shape, generator=torch.Generator().manual_seed(1)))


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_padded_tokens_are_neither_keys_nor_pooled(fusion: str, arch: str) -> None:
    model = make_model(fusion, arch)
    batch = make_batch(arch)
    before = run(model, batch)
    perturb_missing_audio(model)
    after = run(model, batch)

    # Windows whose sound is valid: their features are per window and never read padding.
    if fusion in ("local", "lgfm", "pyramid"):
        w = WINDOWS_WITH_SOUND[arch]
        assert_same(before["window_logits"][0, w], after["window_logits"][0, w])
    # The clip without audio is its missing token (expected to move), and so is clip 0's
    # window after the sound in every fusion: "no sound here" is what that window shows.
    assert not torch.allclose(before["logits"][2], after["logits"][2])
    assert not torch.allclose(before["window_logits"][0, -1], after["window_logits"][0, -1])

    if fusion in ("local", "lgfm"):
        # Their clip pools the windows, and a window past the sound still holds video: its audio
        # half is the missing token by design (see LocalFusion), as for a clip without audio.
        assert not torch.allclose(before["logits"][0], after["logits"][0])
    else:
        for key in CLIP_KEYS:
            assert_same(before[key][0], after[key][0])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_audio_only_clip_does_not_depend_on_padding(fusion: str, arch: str) -> None:
    """Without video a window past the sound holds nothing: no fusion's clip output uses it."""
    model = make_model(fusion, arch, modality="audio")
    batch = make_batch(arch)
    del batch["video"]
    before = run(model, batch)
    perturb_missing_audio(model)
    after = run(model, batch)
    for key in CLIP_KEYS:
        assert_same(before[key][0], after[key][0])
    w = WINDOWS_WITH_SOUND[arch]
    if fusion in ("local", "lgfm", "pyramid"):
        assert_same(before["window_logits"][0, w], after["window_logits"][0, w])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_noise_in_the_padded_rows_changes_nothing(fusion: str, arch: str) -> None:
    model = make_model(fusion, arch)
    batch = make_batch(arch)
    noisy = dict(batch, audio=batch["audio"].clone())
    noisy["audio"][0, SOUND[arch] :] = 5.0 * torch.randn(FRAMES - SOUND[arch], 128)
    clean, loud = run(model, batch), run(model, noisy)
    for key in (*CLIP_KEYS, "window_logits", "audio_logits"):
        assert_same(clean[key], loud[key])


def test_the_ast_masks_padded_columns_as_keys() -> None:
    branch = make_model("concat", "ast").audio
    batch = make_batch("ast")
    audio, sound = batch["audio"][:1], batch["audio_frames"][:1]
    noisy = audio.clone()
    noisy[0, SOUND["ast"] :] = 5.0 * torch.randn(FRAMES - SOUND["ast"], 128)
    columns = SOUND["ast"] // 16
    with torch.no_grad():
        masked = branch(audio, sound)[0], branch(noisy, sound)[0]
        unmasked = branch(audio)[0], branch(noisy)[0]
    assert_same(masked[0][:, :columns], masked[1][:, :columns])
    # Without the mask the sound's tokens attend to the padding: the probe is sensitive.
    assert not torch.allclose(unmasked[0][:, :columns], unmasked[1][:, :columns])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_no_sound_row_is_no_audio_and_never_nan(fusion: str, arch: str) -> None:
    """``has_audio`` True with 0 or 1 sound rows: finite outputs and gradients; with 0 rows the
    clip is exactly a clip without audio (every token padding, every key masked)."""
    model = make_model(fusion, arch)
    batch = make_batch(arch)
    batch["audio_frames"] = torch.tensor([1, 0, 0])
    batch["has_audio"] = torch.tensor([True, True, False])
    out = run(model, batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    # The same clip twice: once has_audio True with no sound row, once has_audio False.
    same = run(model, dict(batch, audio=batch["audio"][[0, 1, 1]], video=batch["video"][[0, 1, 1]]))
    for key in ("logits", "window_logits", "embedding"):
        assert_same(same[key][1], same[key][2])

    model.train()
    out = model(**batch)
    sum(v.sum() for v in out.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_masked_fusion_and_ast_trace_as_one_graph(fusion: str) -> None:
    """With padding masks (the compile test's inputs have none) still no graph break."""
    model = make_model(fusion, "ast")
    batch = make_batch("ast")
    captured: dict[str, tuple] = {}
    hook = model.fusion.register_forward_pre_hook(lambda _, args: captured.setdefault("a", args))
    run(model, batch)
    hook.remove()
    assert captured["a"][3], "the fusion got no padding mask"
    for module, args in (
        (model.fusion, captured["a"]),
        (model.audio, (batch["audio"], batch["audio_frames"])),
    ):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(module)(*args)
        assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
