"""`train.compile: true` on the CPU: the fusion and the video branch trace as one graph each,
and training runs compiled.

A graph break inside the fusion would split it into several compiled pieces with a return to
Python (and, on CUDA, a device sync) between them, every step. Dynamo's ``explain`` reports
the breaks without compiling kernels, so every fusion is checked in seconds; one real
training epoch then runs through ``torch.compile`` on the small corpus, with the aot_eager
backend: Dynamo and AOTAutograd trace forward and backward exactly as for inductor, without
inductor's C++ code generation, which takes over ten minutes for the whole model on two cores.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
import torch
from authors_options import authors_options
from smallcorpus import RUN, SmallCorpus, keep_torch_threads, shared_corpus

from emotions.config import AblationCell, load_params
from emotions.layout import BEST
from emotions.models.avcanet import AVCANet
from emotions.models.settings import VideoSettings
from emotions.models.video import VideoBackbone
from emotions.models.window_attention import FlexWindowAttention3d, SdpaWindowAttention3d
from emotions.stages.ablate import params_for_cell
from emotions.training.checkpoints import load_checkpoint
from emotions.training.trainer import train_run

REPO = Path(__file__).resolve().parents[2]
FUSIONS = typing.get_args(AblationCell.model_fields["fusion"].annotation)
CASES = [("both", f) for f in FUSIONS] + [("video", "lgfm"), ("audio", "lgfm")]


def fusion_inputs(model: AVCANet) -> tuple:
    """The (tokens, times, present) the model hands its fusion, captured from a real forward."""
    captured: dict[str, tuple] = {}
    handle = model.fusion.register_forward_pre_hook(lambda _, args: captured.setdefault("a", args))
    try:
        with torch.no_grad():
            model(
                torch.zeros(2, 8, 3, 64, 64, dtype=torch.uint8),
                torch.zeros(2, 400, 128),
                torch.tensor([True, False]),
            )
    finally:
        handle.remove()
    return captured["a"]


@pytest.mark.parametrize(("modality", "fusion"), CASES)
def test_fusion_has_no_graph_breaks(modality: str, fusion: str):
    params = params_for_cell(
        load_params(REPO / "params.yaml"), AblationCell(modality=modality, fusion=fusion)
    )
    model = AVCANet(params.model, num_classes=6)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.fusion)(*fusion_inputs(model))
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_the_authors_options_have_no_graph_breaks():
    """Per-snippet Swin, the authors' audio branch, mpam and the shared head: the whole forward
    is one graph."""
    params = authors_options(load_params(REPO / "params.yaml"))
    model = AVCANet(params.model, num_classes=6)
    inputs = (
        torch.zeros(2, 8, 3, 64, 64, dtype=torch.uint8),
        torch.zeros(2, 400, 128),
        torch.tensor([True, False]),
    )
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(*inputs)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def sdpa_video_branch(kernel: str = "composite") -> VideoBackbone:
    """The video branch with fused attention, on the CPU path ``kernel``."""
    torch.manual_seed(0)
    video = VideoBackbone(VideoSettings(attention="sdpa"))
    for module in video.modules():
        if isinstance(module, SdpaWindowAttention3d):
            module.cpu_kernel = kernel
    return video


@pytest.mark.parametrize("kernel", ["composite", "sdpa"])
@pytest.mark.parametrize("warm", [False, True], ids=["cold-mask-cache", "warm-mask-cache"])
def test_video_branch_with_sdpa_attention_has_no_graph_breaks(warm: bool, kernel: str):
    """Traced before any eager forward, the shift masks are built inside the graph (no cache
    write under tracing); after one, they are read from the cache. One graph either way, with
    the SDPA call under its ``sdpa_kernel`` backend choice or with the CPU's composite."""
    video = sdpa_video_branch(kernel)
    clip = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    if warm:
        with torch.no_grad():
            video(clip)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(video)(clip)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


Grads = dict[str, torch.Tensor]


def tokens_and_grads(
    model: torch.nn.Module, module, clip: torch.Tensor, keep=lambda name: True
) -> tuple[torch.Tensor, Grads]:
    """One forward and backward of ``module`` (``model`` itself or its compiled wrapper): the
    tokens and ``model``'s gradients (those whose name ``keep`` accepts)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same stochastic-depth draws in every run (training mode)
    tokens, _ = module(clip)
    tokens.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and keep(n)}
    return tokens.detach(), grads


def assert_same_run(
    actual: tuple[torch.Tensor, Grads], expected: tuple[torch.Tensor, Grads], **tolerance
) -> None:
    (tokens, grads), (expected_tokens, expected_grads) = actual, expected
    torch.testing.assert_close(tokens, expected_tokens, **tolerance)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in expected_grads.items():
        torch.testing.assert_close(
            grads[name], grad, **tolerance, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("kernel", ["composite", "sdpa"])
def test_compiled_video_branch_equals_eager(kernel: str):
    """Forward and backward of the compiled sdpa video branch (aot_eager traces both exactly as
    inductor would) equal eager mode's, and compiling writes nothing into the mask cache."""
    video = sdpa_video_branch(kernel)
    clip = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    torch._dynamo.reset()
    compiled = torch.compile(video, backend="aot_eager", fullgraph=True)
    compiled_run = tokens_and_grads(video, compiled, clip)
    attention = [m for m in video.modules() if isinstance(m, SdpaWindowAttention3d)]
    assert attention and not any(m._shift_masks for m in attention)
    assert_same_run(compiled_run, tokens_and_grads(video, video, clip))


def flex_video_branch(kernel: str) -> VideoBackbone:
    """The video branch with FlexAttention, on the CPU path ``kernel``."""
    torch.manual_seed(0)
    video = VideoBackbone(VideoSettings(attention="flex"))
    for module in video.modules():
        if isinstance(module, FlexWindowAttention3d):
            module.flex_cpu_kernel = kernel
    return video


@pytest.mark.parametrize("kernel", ["composite", "flex"])
def test_video_branch_with_flex_attention_has_no_graph_breaks(kernel: str):
    """The score_mod closures (bias table, index, region ids) trace into one graph with the
    FlexAttention higher-order op, or with the CPU's composite."""
    video = flex_video_branch(kernel)
    clip = torch.randint(0, 256, (1, 8, 3, 64, 64), dtype=torch.uint8)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(video)(clip)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_flex_video_branch_equals_eager():
    """Forward and backward through the traced FlexAttention op (aot_eager: inductor's trace,
    run by FlexAttention's reference) equal eager mode's, the bias tables' gradients included.
    (The composite is the sdpa path's, compiled in the test above.)"""
    video = flex_video_branch("flex")
    clip = torch.randint(0, 256, (1, 8, 3, 64, 64), dtype=torch.uint8)
    torch._dynamo.reset()
    compiled = torch.compile(video, backend="aot_eager", fullgraph=True)
    compiled_run = tokens_and_grads(video, compiled, clip)
    eager_run = tokens_and_grads(video, video, clip)
    assert any(name.endswith("relative_position_bias_table") for name in eager_run[1])
    assert_same_run(compiled_run, eager_run)


@pytest.mark.parametrize(
    "device",
    [
        pytest.param(
            "cpu",
            marks=pytest.mark.skip(
                reason="torch 2.9's inductor lowers FlexAttention on the CPU for inference only "
                "(torch/_inductor/kernel/flex/flex_cpu.py raises NotImplementedError when the "
                "backward needs the logsumexp); the CPU trains through the composite"
            ),
        ),
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_inductor_flex_video_branch_equals_eager(device: str):
    """With inductor, FlexAttention becomes a generated kernel with its own score_mod backward:
    forward and the bias tables' gradients equal the eager run's (eager on CUDA also runs a
    compiled FlexAttention, so the reference is torchvision's attention)."""
    torch.manual_seed(0)
    reference = VideoBackbone(VideoSettings(attention="torchvision")).to(device)
    video = flex_video_branch("flex").to(device)
    video.load_state_dict(reference.state_dict())
    clip = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8, device=device)
    torch._dynamo.reset()
    compiled = torch.compile(video, backend="inductor", fullgraph=True)
    tables = lambda name: name.endswith("bias_table")  # noqa: E731
    compiled_run = tokens_and_grads(video, compiled, clip, tables)
    reference_run = tokens_and_grads(reference, reference, clip, tables)
    # TF32 may be on; the kernels sum in another order.
    assert_same_run(compiled_run, reference_run, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SmallCorpus:
    return shared_corpus(tmp_path_factory)


@pytest.mark.slow
def test_training_runs_compiled(corpus: SmallCorpus, tmp_path):
    torch._dynamo.reset()
    with keep_torch_threads():
        summary = train_run(
            corpus.params(epochs=1, compile=True, compile_backend="aot_eager"),
            RUN,
            paths=corpus.paths(tmp_path / "compiled"),
            progress=False,
        )
    assert summary["epochs"] == 1
    assert math.isfinite(summary["history"][0]["train_loss"])
    # The compiled wrapper shares the weights: the checkpoint holds plain module keys.
    best = load_checkpoint(tmp_path / "compiled" / BEST)["model"]
    assert not any(key.startswith("_orig_mod.") for key in best)
