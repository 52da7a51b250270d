"""A 2D ImageNet Swin inflated into torchvision's 3D Swin (as the authors start Video Swin).

Accepted layouts: timm's (``swin_tiny_patch4_window7_224``: merging at the start of stage
i ≥ 1, ``layers.i.downsample``) and the original Microsoft release (merging at the end of stage
i, saved ``relative_position_index``/``attn_mask`` buffers, ``head``). Inflation, after Video
Swin (Liu et al. 2022, "inflate_weights"):

- the patch kernel (C, 3, p, p) is spread over the temporal kernel depth T: each temporal
  slice is kernel / T, so a clip of one repeated frame embeds exactly like the image;
- each 2D relative-position table ((2W−1)², heads) is resized bicubically to the 3D window's
  spatial extent if that differs, then repeated for every temporal offset (2Wd−1), so the bias
  depends only on the spatial offset, as in the image model;
- everything else (qkv, projections, MLPs, norms, mergings) keeps its shape.

With equal spatial windows, the inflated model on a clip of one repeated frame computes, at
every temporal position, the image model's features (tests/test_pretrained.py proves it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor
from torchvision.models.video.swin_transformer import SwinTransformer3d

from emotions.models.pretrained._swin_keys import rename_swin

_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


def to_original_layout(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm's layout → the original one: move each merging to the end of the stage before."""
    if any(k.startswith("layers.0.downsample.") for k in state):
        return dict(state)  # already original (stage 0 ends with a merging)
    out = {}
    for key, value in state.items():
        if match := _MERGE.match(key):
            stage, rest = match.groups()
            key = f"layers.{int(stage) - 1}.downsample.{rest}"
        out[key] = value
    return out


def inflate_patch_kernel(kernel: Tensor, depth: int) -> Tensor:
    """(C, 3, p, p) → (C, 3, depth, p, p), each temporal slice kernel / depth."""
    return kernel.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def inflate_bias_table(table: Tensor, window: list[int]) -> Tensor:
    """((2W−1)², heads) 2D table → ((2Wd−1)(2Wh−1)(2Ww−1), heads) for a 3D ``window``."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0]:
        raise ValueError(f"a 2D relative position table must be square, got {tuple(table.shape)}")
    heads = table.shape[1]
    size = (2 * window[1] - 1, 2 * window[2] - 1)
    grid = table.T.reshape(1, heads, side, side)
    if (side, side) != size:
        grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    spatial = grid.reshape(heads, size[0] * size[1]).T
    return spatial.repeat(2 * window[0] - 1, 1)  # depth-major, as torchvision indexes it


def inflate_swin2d(state: Mapping[str, Tensor], target: SwinTransformer3d) -> dict[str, Tensor]:
    """A 2D Swin state dict (timm or original layout) as ``target``'s 3D state dict."""
    target_state = target.state_dict()
    out = rename_swin(to_original_layout(state), target_state)
    depth = target.patch_embed.tuple_patch_size[0]
    kernel = out.get("patch_embed.proj.weight")
    if kernel is not None and kernel.ndim == 4:
        out["patch_embed.proj.weight"] = inflate_patch_kernel(kernel, depth)
    for key, value in list(out.items()):
        if key.endswith("relative_position_bias_table") and key in target_state:
            attn = target.get_submodule(key.removesuffix(".relative_position_bias_table"))
            if value.shape != target_state[key].shape:
                out[key] = inflate_bias_table(value, list(attn.window_size))
    return out
