"""The fused window attentions compute torchvision's ``ShiftedWindowAttention3d``, on the CPU.

``model.video.attention: sdpa`` (and ``flex``) is only a speed setting if it changes nothing
else: the same
outputs and gradients (of the input, the bias table and every weight) as torchvision's module
for shifted and unshifted windows, inputs that need padding and inputs smaller than a window;
the same state-dict keys and shapes, so the weight loaders and checkpoints are shared; and a
shift mask built once per shape rather than per forward. Both of its paths are checked on the
CPU: the SDPA call (math backend here; memory-efficient on CUDA) and the CPU's composite. The
FlexAttention module likewise on both of its CPU paths: FlexAttention's eager reference (the
score_mod that gathers the bias from its table and compares region ids, as the GPU kernel
runs it) and the composite that evaluates the same score_mod into an additive mask.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from emotions.models.settings import VideoAttention, VideoSettings
from emotions.models.video import VideoBackbone, build_swin3d
from emotions.models.window_attention import (
    ATTENTION_LAYERS,
    FlexWindowAttention3d,
    SdpaWindowAttention3d,
    window_and_shift,
)

DIM, HEADS = 48, 3
KERNELS = ["composite", "sdpa"]
FLEX_KERNELS = ["composite", "flex"]
WINDOW = [2, 4, 4]
# (input T, H, W; shift): multiples of the window; sizes that need padding; an input smaller
# than the window along some dimensions (the window shrinks and does not shift there); and an
# input smaller than the window along all of them.
CASES = {
    "unshifted": ((4, 8, 8), [0, 0, 0]),
    "shifted": ((4, 8, 8), [1, 2, 2]),
    "unshifted-padded": ((3, 7, 6), [0, 0, 0]),
    "shifted-padded": ((5, 9, 10), [1, 2, 2]),
    "shifted-window-larger-in-t-and-h": ((2, 3, 8), [1, 2, 2]),
    "window-larger-than-input": ((1, 3, 2), [1, 2, 2]),
}
# bf16 keeps 8 significant bits (a relative step of 2⁻⁸ ≈ 0.4 %): outputs and gradients are
# allowed 2 % of the reference's largest magnitude. A wrong mask or bias costs tens of percent.
BF16_SHARE = 0.02


T = typing.TypeVar("T", bound=nn.Module)


def _twin(
    module_class: type[T], shift: list[int], **settings: str
) -> tuple[ShiftedWindowAttention3d, T]:
    """torchvision's module and a ``module_class`` one with the same weights and ``settings``."""
    torch.manual_seed(0)
    reference = ShiftedWindowAttention3d(DIM, list(WINDOW), list(shift), HEADS)
    other = module_class(DIM, list(WINDOW), list(shift), HEADS)
    other.load_state_dict(reference.state_dict())
    for name, value in settings.items():
        setattr(other, name, value)
    return reference, other


def pair(
    shift: list[int], kernel: str = "composite"
) -> tuple[ShiftedWindowAttention3d, SdpaWindowAttention3d]:
    """torchvision's module and the fused one (on the CPU path ``kernel``), same weights."""
    return _twin(SdpaWindowAttention3d, shift, cpu_kernel=kernel)


def flex_pair(
    shift: list[int], kernel: str = "flex"
) -> tuple[ShiftedWindowAttention3d, FlexWindowAttention3d]:
    """torchvision's module and the FlexAttention one (on the CPU path ``kernel``), same weights."""
    return _twin(FlexWindowAttention3d, shift, flex_cpu_kernel=kernel)


def run(
    module: torch.nn.Module, x: Tensor, upstream: Tensor, bf16: bool = False
) -> dict[str, Tensor]:
    """Output and gradients (input and every parameter) for the loss ⟨output, upstream⟩."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = module(x)
    (out.float() * upstream).sum().backward()
    grads = {f"grad {name}": p.grad for name, p in module.named_parameters()}
    return {"output": out.float().detach(), "grad input": x.grad, **grads}


def inputs(size: tuple[int, int, int], seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *size, DIM, generator=generator)
    return x, torch.randn(x.shape, generator=generator)


def assert_equal_in_fp32(reference: nn.Module, other: nn.Module, size) -> None:
    """Output and every gradient of ``other`` equal torchvision's in fp32."""
    x, upstream = inputs(size)
    expected, actual = run(reference, x, upstream), run(other, x, upstream)
    assert expected.keys() == actual.keys()
    assert "grad relative_position_bias_table" in actual
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, msg=lambda m, n=name: f"{n}: {m}")


def assert_within_share(
    actual: dict[str, Tensor], exact: dict[str, Tensor], share: float = BF16_SHARE
) -> None:
    """Output, input and bias-table gradients within ``share`` of the exact one's largest
    magnitude."""
    for name in ("output", "grad input", "grad relative_position_bias_table"):
        tolerance = share * exact[name].abs().max().item()
        error = (actual[name].float() - exact[name]).abs().max().item()
        assert error <= tolerance, f"{name}: error {error:.3g} > {tolerance:.3g} ({share:g})"


def assert_within_bf16(reference: nn.Module, other: nn.Module, size) -> None:
    """``other`` under bf16 autocast stays within BF16_SHARE of torchvision's fp32 answer."""
    x, upstream = inputs(size)
    assert_within_share(run(other, x, upstream, bf16=True), run(reference, x, upstream))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("size", "shift"), CASES.values(), ids=CASES.keys())
def test_fp32_output_and_gradients_equal_torchvision(size, shift, kernel: str) -> None:
    assert_equal_in_fp32(*pair(shift, kernel), size)


@pytest.mark.parametrize(
    ("size", "shift"),
    [CASES["unshifted"], CASES["shifted"], CASES["shifted-padded"]],
    ids=["unshifted", "shifted", "shifted-padded"],
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_autocast_stays_within_bf16_tolerance_of_fp32(size, shift, kernel: str) -> None:
    reference, fused = pair(shift, kernel)
    assert_within_bf16(reference, fused, size)
    # The mask is cached in the compute dtype: no fp32 mask next to bf16 q/k/v.
    if any(shift):
        assert {key[-1] for key in fused._shift_masks} == {torch.bfloat16}


def test_the_shift_mask_is_built_once_per_shape() -> None:
    _, fused = pair([1, 2, 2])
    x, _ = inputs((4, 8, 8))
    fused(x)
    assert fused.mask_builds == 1
    (key, first), *_ = fused._shift_masks.items()
    assert not first.requires_grad  # the learnable bias is added per forward, not cached
    fused(x)
    fused(torch.randn(3, 4, 8, 8, DIM))  # another batch size: the same mask
    assert fused.mask_builds == 1
    assert fused._shift_masks[key] is first
    fused(torch.randn(1, 4, 12, 12, DIM))  # another shape: one more
    assert fused.mask_builds == 2 and len(fused._shift_masks) == 2


def test_unshifted_blocks_need_no_mask_cache() -> None:
    _, fused = pair([0, 0, 0])
    fused(inputs((3, 7, 6))[0])
    assert fused.mask_builds == 0 and not fused._shift_masks


@pytest.mark.parametrize("kernel", FLEX_KERNELS)
@pytest.mark.parametrize(("size", "shift"), CASES.values(), ids=CASES.keys())
def test_flex_fp32_output_and_gradients_equal_torchvision(size, shift, kernel: str) -> None:
    """The bias table's gradient comes through the score_mod (FlexAttention's backward on the
    "flex" path), not through a dense mask."""
    assert_equal_in_fp32(*flex_pair(shift, kernel), size)


@pytest.mark.parametrize(
    ("size", "shift"),
    [CASES["unshifted"], CASES["shifted-padded"]],
    ids=["unshifted", "shifted-padded"],
)
@pytest.mark.parametrize("kernel", FLEX_KERNELS)
def test_flex_bf16_autocast_stays_within_bf16_tolerance_of_fp32(size, shift, kernel: str) -> None:
    assert_within_bf16(*flex_pair(shift, kernel), size)


def test_flex_caches_region_ids_not_a_dense_mask() -> None:
    """Per shape one (windows, N) int tensor of region ids; no (windows, heads, N, N) mask."""
    _, flex = flex_pair([1, 2, 2])
    x, _ = inputs((4, 8, 8))
    flex(x)
    flex(torch.randn(3, 4, 8, 8, DIM))  # another batch size: the same regions
    assert flex.mask_builds == 1 and not flex._shift_masks
    (regions,) = flex._regions.values()
    windows = (4 // 2) * (8 // 4) * (8 // 4)
    assert regions.shape == (windows, 2 * 4 * 4) and regions.dtype == torch.int32
    # Windows away from the wrap-around hold one region; the last window holds eight.
    assert regions[0].unique().numel() == 1 and regions[-1].unique().numel() == 8
    flex(torch.randn(1, 4, 12, 12, DIM))
    assert flex.mask_builds == 2


@pytest.mark.parametrize("shift", [[0, 0, 0], [1, 2, 2]], ids=["unshifted", "shifted"])
def test_flex_on_meta_keeps_everything_on_the_device(shift) -> None:
    """FlexAttention refuses the meta device; the composite runs the same score_mod there, so
    the region ids it builds and the table's gradient stay on the module's device."""
    _, flex = flex_pair(shift)
    meta = torch.device("meta")
    flex = flex.to(meta)
    x = torch.randn(2, 5, 9, 10, DIM, device=meta, requires_grad=True)
    out = flex(x)
    assert out.device == meta and out.shape == x.shape
    out.sum().backward()
    table = flex.relative_position_bias_table
    assert table.grad is not None and table.grad.device == meta
    assert x.grad is not None and x.grad.device == meta
    assert all(r.device == meta for r in flex._regions.values())
    assert bool(flex._regions) == any(shift)


def test_window_and_shift_follow_torchvision() -> None:
    assert window_and_shift((4, 8, 8), (2, 4, 4), (1, 2, 2)) == ((2, 4, 4), (1, 2, 2))
    assert window_and_shift((2, 3, 8), (2, 4, 4), (1, 2, 2)) == ((2, 3, 4), (0, 0, 2))


def test_the_attention_choices_match_the_settings() -> None:
    assert sorted(ATTENTION_LAYERS) == sorted(typing.get_args(VideoAttention))
    assert VideoSettings().attention == "sdpa"


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("arch", ["tiny", "swin3d_t"])
def test_state_dict_and_initial_weights_equal_torchvision(arch: str, attention: str) -> None:
    built = {}
    for name in ("torchvision", attention):
        torch.manual_seed(0)
        built[name] = build_swin3d(VideoSettings(arch=arch, attention=name))
    reference, fused = built["torchvision"], built[attention]
    attention_layers = [m for m in fused.modules() if isinstance(m, ShiftedWindowAttention3d)]
    layer = ATTENTION_LAYERS[attention]
    assert attention_layers and all(type(m) is layer for m in attention_layers)
    expected, actual = reference.state_dict(), fused.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        # The same RNG draws in the same order: a seed gives the same model either way.
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize(
    ("arch", "attention"),
    [("tiny", "sdpa"), ("swin3d_t", "sdpa"), ("tiny", "flex")],
)
def test_a_torchvision_weights_file_loads_and_gives_the_same_output(
    arch: str, attention: str, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    source = VideoBackbone(VideoSettings(arch=arch, attention="torchvision")).eval()
    path = tmp_path / "swin3d.pth"
    torch.save(source.swin.state_dict(), path)
    loaded = VideoBackbone(
        VideoSettings(
            arch=arch, attention=attention, weights=str(path), weights_layout="torchvision"
        )
    ).eval()
    # 8 frames of 64²: the swin3d_t window (8, 7, 7) is larger than the 4 × 16² token grid in
    # time and needs padding in space.
    video = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected, times = source(video)
        actual, actual_times = loaded(video)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(actual_times, times)


# The SDPA kernel each device should pick for a bf16 q/k/v with a bf16 mask that needs a
# gradient: on CUDA the memory-efficient kernel (flash refuses masks; a silent fall back to the
# math backend would cost the speed the setting exists for), on the CPU the math backend.
EXPECTED_KERNEL = {
    "cpu": "aten::_scaled_dot_product_attention_math",
    "cuda": "aten::_scaled_dot_product_efficient_attention",
}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", [[0, 0, 0], [1, 2, 2]], ids=["unshifted", "shifted"])
def test_the_sdpa_call_uses_the_chosen_kernel_and_matches_torchvision(device: str, shift) -> None:
    from torch.profiler import ProfilerActivity, profile

    reference, fused = pair(shift, "sdpa")
    reference, fused = reference.to(device), fused.to(device)
    x, upstream = (t.to(device) for t in inputs((5, 9, 10)))
    exact = run(reference, x, upstream)
    # On CUDA another test may have left TF32 matmuls on (emotions.training.runtime does).
    fp32 = {} if device == "cpu" else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(run(fused, x, upstream)["output"], exact["output"], **fp32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        actual = run(fused, x, upstream, bf16=True)
    names = {event.key for event in prof.key_averages()}
    assert EXPECTED_KERNEL[device] in names, sorted(n for n in names if "attention" in n)
    assert_within_share(actual, exact)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("shift", [[0, 0, 0], [1, 2, 2]], ids=["unshifted", "shifted"])
def test_flex_kernel_on_cuda_matches_torchvision(shift) -> None:
    """On CUDA the module runs FlexAttention's compiled kernel (its score_mod backward gives
    the table its gradient); bf16 stays within bf16 tolerance of torchvision in fp32."""
    reference, flex = (m.to("cuda") for m in flex_pair(shift))
    x, upstream = (t.to("cuda") for t in inputs((5, 9, 10)))
    exact = run(reference, x, upstream)
    for bf16 in (False, True):
        assert_within_share(run(flex, x, upstream, bf16=bf16), exact, BF16_SHARE if bf16 else 1e-3)


def test_flex_counts_its_flops_like_sdpa_under_the_flop_counter() -> None:
    """benchmarks/train.py counts FLOPs under FlopCounterMode, for which FlexAttention's eager
    op has no rule: the flex module takes its additive-mask path there, the same math."""
    from torch.utils.flop_counter import FlopCounterMode

    _, flex = flex_pair([1, 2, 2], kernel="flex")
    sdpa = SdpaWindowAttention3d(DIM, list(WINDOW), [1, 2, 2], HEADS)
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(1, 4, 8, 8, DIM)
    counts = []
    for module in (flex, sdpa):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = module(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0
    torch.testing.assert_close(out, flex(x))
