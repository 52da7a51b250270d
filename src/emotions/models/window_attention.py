"""Shifted-window attention of the Video Swin blocks, fused into ``scaled_dot_product_attention``.

Why: torchvision's ``ShiftedWindowAttention3d`` computes attention by hand (q @ kᵀ, add an fp32
relative-position bias, add an fp32 shift mask rebuilt every forward, fp32 softmax, @ v), so
under bf16 autocast the scores round-trip memory in fp32 several times per block and the
autocast casts, the mask build and the adds cost more GPU time than the matrix products.
:class:`SdpaWindowAttention3d` computes the same function with one fused kernel:

- the relative-position bias and the shift mask are folded into ONE additive mask in the
  compute dtype; the shift mask depends only on the padded input shape, so it is built once
  per (shape, device, dtype) and cached, while the bias (a learnable table) is gathered once
  per forward and added to it;
- q/k/v are 4-D with the mask broadcast over the batch: unshifted blocks run
  (B·windows, heads, N, d) against a (1, heads, N, N) bias; shifted blocks, whose mask differs
  per window, run (B, windows·heads, N, d) against a (1, windows·heads, N, N) mask, so the mask
  is never materialised per clip;
- the backend is explicit: memory-efficient, else math. Flash refuses any mask (and on the CPU
  any mask that needs a gradient, which the bias does); cuDNN is left out until a GPU test shows
  its gradients match the math backend's;
- on the CPU, where no fused kernel takes a mask with a gradient, the same folded mask and
  layout go through matmul + softmax, which at Swin's small windows beats both SDPA's math
  fallback and torchvision's module (figures in benchmarks/README.md, ``train.py``).

:class:`FlexWindowAttention3d` (``flex``) goes one step further on a GPU: one FlexAttention
call whose ``score_mod`` gathers the bias from the table and applies the shift mask from int
region ids, so no dense mask (nor its gradient) exists at all.

Both subclass torchvision's module and keep its parameters and buffer (``qkv``, ``proj``,
``relative_position_bias_table``, ``relative_position_index``) and their initialisation, so
every weight file and loader written for torchvision's Swin3d loads into them unchanged, and a
seed gives the same weights with any attention. Numerically they reproduce torchvision's
quirks on purpose: zero-padded tokens take part in unshifted windows, the shift mask is −100
(not −inf), and a window clipped to a smaller input reads the top-left corner of the index.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torchvision.models.swin_transformer import SwinTransformerBlock
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from emotions.models.settings import VideoAttention

# Memory-efficient first (accepts an additive bf16 mask and gives it a gradient), math as the
# fallback every device has.
BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# torchvision's value for "other region" in the shift mask (kept so outputs match its module).
MASKED = -100.0

Triple = tuple[int, int, int]
# score_mod(score, batch, head, q_idx, kv_idx) → score, as FlexAttention calls it.
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
# The devices FlexAttention accepts (torch.nn.attention.flex_attention._validate_device).
FLEX_DEVICES = frozenset({"cuda", "cpu", "xpu", "hpu"})


def window_and_shift(size: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """The window and shift used for an input of ``size`` (T, H, W): torchvision's rule.

    Along a dimension no longer than the window, the window shrinks to the input and does not
    shift.
    """
    w = tuple(s if s <= k else k for s, k in zip(size, window, strict=True))
    h = tuple(0 if s <= k else m for s, k, m in zip(size, window, shift, strict=True))
    return (w[0], w[1], w[2]), (h[0], h[1], h[2])


def region_ids(
    padded: Triple, window: Triple, shift: Triple, device: torch.device | None = None
) -> Tensor:
    """(windows, N) int32 region of each token of each window of the rolled input.

    torchvision's labels: the rolled input is cut into up to 3 × 3 × 3 regions (the bands a
    shifted window may join across the wrap-around), and two tokens of a window may attend to
    each other only if they share one.
    """
    labels = torch.zeros(padded, dtype=torch.int32, device=device)
    count = 0
    bands = [((0, -k), (-k, -s), (-s, None)) for k, s in zip(window, shift, strict=True)]
    for d in bands[0]:
        for h in bands[1]:
            for w in bands[2]:
                labels[d[0] : d[1], h[0] : h[1], w[0] : w[1]] = count
                count += 1
    grid = [p // k for p, k in zip(padded, window, strict=True)]
    labels = labels.view(grid[0], window[0], grid[1], window[1], grid[2], window[2])
    return labels.permute(0, 2, 4, 1, 3, 5).reshape(-1, window[0] * window[1] * window[2])


def shift_mask(
    padded: Triple, window: Triple, shift: Triple, device: torch.device | None = None
) -> Tensor:
    """(windows, 1, N, N) fp32 mask: 0 within a region of the rolled input, ``MASKED`` across.

    torchvision's region labels, built on ``device`` (so a compiled graph that builds it moves
    nothing from the host); callers cast and cache it.
    """
    labels = region_ids(padded, window, shift, device)
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differ.shape, device=device).masked_fill(differ, MASKED).unsqueeze(1)


class SdpaWindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's ``ShiftedWindowAttention3d`` as one SDPA call per block (on the CPU, as
    its composite), with the bias and shift mask folded into one cached-shape mask."""

    def __init__(
        self,
        dim: int,
        window_size: list[int],
        shift_size: list[int],
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            dim,
            window_size,
            shift_size,
            num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attention_dropout=attention_dropout,
            dropout=dropout,
        )
        # (padded size, window, shift, device, dtype) → shift mask; not a buffer, so it stays
        # out of state dicts and checkpoints. ``mask_builds`` counts misses (a test reads it).
        self._shift_masks: dict[tuple, Tensor] = {}
        self.mask_builds = 0
        # The CPU has no fused kernel for a mask that needs a gradient (its flash kernel refuses
        # one), and SDPA's math fallback (checks for fully masked rows, q and k scaled apart) is
        # slower than torchvision's hand-written attention at Swin's small windows; so on the CPU
        # the same cached, folded mask goes through matmul + softmax. "sdpa" forces the SDPA
        # call there too (the tests check both paths against torchvision).
        self.cpu_kernel: Literal["composite", "sdpa"] = "composite"

    def cached_shift_mask(
        self, padded: Triple, window: Triple, shift: Triple, like: Tensor
    ) -> Tensor:
        """The shift mask for this shape on ``like``'s device and dtype, built on first use."""
        key = (padded, window, shift, like.device, like.dtype)
        mask = self._shift_masks.get(key)
        if mask is None:
            mask = shift_mask(padded, window, shift, like.device).to(like.dtype)
            if not torch.compiler.is_compiling():
                self._shift_masks[key] = mask
                self.mask_builds += 1
        return mask

    def relative_bias(self, window: Triple, dtype: torch.dtype) -> Tensor:
        """(heads, N, N) relative-position bias in ``dtype``, gathered from the learnable table.

        Gathered in the table's precision and cast after, so the backward accumulates the
        N² gradients into the table's few entries in fp32, not in bf16.
        """
        volume = window[0] * window[1] * window[2]
        index = self.relative_position_index[:volume, :volume].reshape(-1)
        bias = self.relative_position_bias_table[index].to(dtype)
        # Contiguous: SDPA's fused kernels want the mask's last dimension dense.
        return bias.view(volume, volume, -1).permute(2, 0, 1).contiguous()

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """softmax(q kᵀ / √d + mask) v: one SDPA call, or its composite on the CPU."""
        dropout = self.attention_dropout if self.training else 0.0
        if q.device.type == "cpu" and self.cpu_kernel == "composite":
            scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + mask
            weights = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=self.training)
            return torch.matmul(weights, v)
        with sdpa_kernel(BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)

    def windows_qkv(self, x: Tensor) -> tuple[Tensor, Geometry]:
        """Pad, roll and cut ``x`` into windows; q/k/v as one (3, B, windows, heads, N, d)
        tensor, and the geometry :meth:`merge_windows` needs to undo it."""
        b, t, h, w, c = x.shape
        window, shift = window_and_shift(
            (t, h, w), _triple(self.window_size), _triple(self.shift_size)
        )
        pad = [(k - s % k) % k for s, k in zip((t, h, w), window, strict=True)]
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded: Triple = (t + pad[0], h + pad[1], w + pad[2])
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
        grid = [p // k for p, k in zip(padded, window, strict=True)]
        windows = grid[0] * grid[1] * grid[2]
        n = window[0] * window[1] * window[2]
        heads = self.num_heads
        x = x.view(b, grid[0], window[0], grid[1], window[1], grid[2], window[2], c)
        x = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, windows, n, c)

        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).view(b, windows, n, 3, heads, c // heads)
        # One copy into (3, B, windows, heads, N, d): the layouts q/k/v take are views of it,
        # and batched matmuls get one batch stride (the CPU's bmm copies each matrix otherwise).
        qkv = qkv.permute(3, 0, 1, 4, 2, 5).contiguous()
        return qkv, Geometry((t, h, w), padded, window, shift, windows, n)

    def merge_windows(self, out: Tensor, geometry: Geometry) -> Tensor:
        """(B, windows, heads, N, d) attention output → projected, unrolled (B, T, H, W, C)."""
        b, windows, heads, n, d = out.shape
        c = heads * d
        window, padded, (t, h, w) = geometry.window, geometry.padded, geometry.size
        grid = [p // k for p, k in zip(padded, window, strict=True)]
        out = out.transpose(2, 3).reshape(b, windows, n, c)
        out = F.linear(out, self.proj.weight, self.proj.bias)
        out = F.dropout(out, p=self.dropout, training=self.training)

        out = out.view(b, grid[0], grid[1], grid[2], window[0], window[1], window[2], c)
        out = out.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, *padded, c)
        if any(geometry.shift):
            out = torch.roll(out, shifts=geometry.shift, dims=(1, 2, 3))
        return out[:, :t, :h, :w, :].contiguous()

    def forward(self, x: Tensor) -> Tensor:
        qkv, geometry = self.windows_qkv(x)
        _, b, windows, heads, n, d = qkv.shape
        bias = self.relative_bias(geometry.window, qkv.dtype)
        if any(geometry.shift):
            # The mask differs per window: windows and heads share one axis, the batch broadcasts.
            q, k, v = qkv.view(3, b, windows * heads, n, d).unbind(0)
            mask = bias + self.cached_shift_mask(
                geometry.padded, geometry.window, geometry.shift, bias
            )
            mask = mask.view(1, windows * heads, n, n)
        else:
            q, k, v = qkv.view(3, b * windows, heads, n, d).unbind(0)
            mask = bias.unsqueeze(0)
        out = self.attend(q, k, v, mask)
        return self.merge_windows(out.view(b, windows, heads, n, d), geometry)


class FlexWindowAttention3d(SdpaWindowAttention3d):
    """torchvision's ``ShiftedWindowAttention3d`` as one FlexAttention call per block: the
    bias gathered from its table and the shift mask applied inside the kernel's ``score_mod``.

    Why: the fused SDPA path still materialises a dense additive mask per window and head, and
    its memory-efficient backward spends most of its time writing that mask's gradient. Here
    no (windows, heads, N, N) tensor exists: ``score_mod`` reads the bias from
    ``relative_position_bias_table`` through ``relative_position_index`` (so the table gets its
    gradient from FlexAttention's backward, accumulated in fp32), and compares two int region
    ids per score for the shift mask (cached per shape, like the SDPA path's mask). The mask
    stays torchvision's additive −100, not a ``mask_mod``: a block mask could skip only the
    few all-masked blocks of the border windows (a window holds at most 392 tokens, four
    128-token blocks), and −100 keeps the outputs torchvision's.

    FlexAttention is fast only compiled: under ``torch.compile`` (``train.compile``) it is
    traced into the model's graph; called eagerly on a GPU it goes through a compiled
    ``flex_attention`` of its own. On the CPU, where torch 2.9's compiled FlexAttention does
    inference only, the same score_mod becomes an additive mask for the SDPA path's composite
    (``flex_cpu_kernel``), so ``flex`` costs there what ``sdpa`` does. Attention dropout,
    which FlexAttention lacks, falls back to the SDPA path (Swin3d's default is 0).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # (padded size, window, shift, device) → (windows, N) region ids; not a buffer.
        self._regions: dict[tuple, Tensor] = {}
        # On the CPU (and on devices FlexAttention refuses, such as meta) the score_mod is
        # evaluated once over the (windows·heads, N, N) index grid into an additive mask that
        # the SDPA path's composite attends with: FlexAttention's eager reference evaluates
        # it per score under vmap, several times slower. "flex" forces that reference (the
        # tests check both against torchvision, and the CPU compile test traces it).
        self.flex_cpu_kernel: Literal["composite", "flex"] = "composite"

    def cached_regions(
        self, padded: Triple, window: Triple, shift: Triple, device: torch.device
    ) -> Tensor:
        """The shift regions for this shape on ``device``, built on first use."""
        key = (padded, window, shift, device)
        regions = self._regions.get(key)
        if regions is None:
            regions = region_ids(padded, window, shift, device)
            if not torch.compiler.is_compiling():
                self._regions[key] = regions
                self.mask_builds += 1
        return regions

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.attention_dropout > 0:
            return super().forward(x)
        qkv, geometry = self.windows_qkv(x)
        _, b, windows, heads, n, d = qkv.shape
        # One layout for shifted and unshifted blocks: (B, windows·heads, N, d), so the
        # score_mod's head index h names the window (h // heads) and the head (h % heads).
        q, k, v = qkv.view(3, b, windows * heads, n, d).unbind(0)
        table = self.relative_position_bias_table
        index = self.relative_position_index[:n, :n]
        if any(geometry.shift):
            regions = self.cached_regions(
                geometry.padded, geometry.window, geometry.shift, x.device
            )

            def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
                win = h // heads
                biased = score + table[index[q_idx, kv_idx], h % heads]
                other = regions[win, q_idx] != regions[win, kv_idx]
                return torch.where(other, biased + MASKED, biased)

        else:

            def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
                return score + table[index[q_idx, kv_idx], h % heads]

        if (
            q.device.type not in FLEX_DEVICES
            or (q.device.type == "cpu" and self.flex_cpu_kernel == "composite")
            or _dispatch_mode_active()
        ):
            if not any(geometry.shift):
                # The same mask for every window: (B·windows, heads) against (1, heads, N, N).
                q, k, v = qkv.view(3, b * windows, heads, n, d).unbind(0)
            out = self.attend(q, k, v, additive_mask(score_mod, q.shape[1], n, q))
        else:
            out = flex(q, k, v, score_mod)
        return self.merge_windows(out.view(b, windows, heads, n, d), geometry)


def _dispatch_mode_active() -> bool:
    """Whether eager code runs under a dispatch mode such as FlopCounterMode: FlexAttention's
    eager op has no rule for one (a TypeError on CUDA), so the same score_mod goes through the
    additive-mask path, whose FLOPs the counter knows."""
    if torch.compiler.is_compiling():
        return False
    return _get_current_dispatch_mode() is not None


def additive_mask(score_mod: ScoreMod, heads: int, n: int, like: Tensor) -> Tensor:
    """(1, heads, N, N) mask in ``like``'s dtype: ``score_mod`` evaluated at a zero score.

    The window score_mods only add to the score (a bias, −100 across regions), so their value
    at zero is the additive mask; the index tensors broadcast, so each table entry is gathered
    once per (head, q, kv) in the table's precision and the gradient reaches it in fp32.
    """
    device = like.device
    zero = torch.zeros((), device=device)
    mask = score_mod(
        zero,
        torch.zeros((), dtype=torch.long, device=device),
        torch.arange(heads, device=device).view(heads, 1, 1),
        torch.arange(n, device=device).view(1, n, 1),
        torch.arange(n, device=device).view(1, 1, n),
    )
    return mask.to(like.dtype).unsqueeze(0)


def flex(q: Tensor, k: Tensor, v: Tensor, score_mod: ScoreMod) -> Tensor:
    """FlexAttention as the context allows: traced when compiling, its own compiled kernel
    when eager on a GPU, its eager reference on the CPU (where compiled training is not
    supported)."""
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, score_mod=score_mod)
    if q.device.type == "cpu":
        with warnings.catch_warnings():
            # The eager reference's "use torch.compile" advice: on the CPU there is no choice.
            warnings.filterwarnings("ignore", message="flex_attention called without")
            return flex_attention(q, k, v, score_mod=score_mod)
    # Every block shape is one compile of its own (stages × shifted/unshifted × dtypes).
    with torch._dynamo.config.patch(recompile_limit=64):
        return _compiled_flex()(q, k, v, score_mod=score_mod)


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    return torch.compile(flex_attention, dynamic=False)


@dataclass(frozen=True)
class Geometry:
    """How a block's input was padded, rolled and cut into windows."""

    size: Triple
    padded: Triple
    window: Triple
    shift: Triple
    windows: int
    n: int


def _triple(values: list[int]) -> Triple:
    return (values[0], values[1], values[2])


ATTENTION_LAYERS: dict[str, type[ShiftedWindowAttention3d]] = {
    "flex": FlexWindowAttention3d,
    "sdpa": SdpaWindowAttention3d,
    "torchvision": ShiftedWindowAttention3d,
}


def swin_block(attention: VideoAttention) -> Callable[..., nn.Module]:
    """A ``block`` for ``SwinTransformer3d`` whose blocks use ``attention``.

    ``SwinTransformer3d`` passes ``attn_layer=ShiftedWindowAttention3d`` to every block itself,
    which would override a ``functools.partial``; this factory replaces that argument instead.
    """
    layer = ATTENTION_LAYERS[attention]

    def block(*args, **kwargs) -> nn.Module:
        kwargs["attn_layer"] = layer
        return SwinTransformerBlock(*args, **kwargs)

    return block
