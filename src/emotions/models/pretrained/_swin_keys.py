"""Swin key renames shared by the 2D and the Video Swin layouts (both name stages ``layers``).

The original Swin / Video Swin code names stage i's blocks ``layers.i.blocks.j`` with the
patch merging at the end of stage i (``layers.i.downsample``); torchvision's ``features``
interleaves stages and mergings (stage i = ``features.2i``, its merging = ``features.2i+1``);
the MLP's linears are ``mlp.fc1``/``mlp.fc2`` there and ``mlp.0``/``mlp.3`` here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_NORM = re.compile(r"^norm\d*\.(weight|bias)$")  # mmaction2 1.x names it norm{last stage}
_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}
# Buffers the original code saves, recomputed by torchvision, and classifier heads.
DROPPED = re.compile(r"(relative_position_index|attn_mask)$|^(head|cls_head)\.")


def rename_swin(
    state: Mapping[str, Tensor], target_state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Original-layout keys → torchvision ``SwinTransformer3d`` keys (shapes untouched).

    Keys this mapping does not know pass through unchanged, so ``load_matching`` reports them
    as unexpected instead of their being silently dropped. The recomputed
    ``relative_position_index`` buffers are taken from ``target_state``.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if DROPPED.search(key):
            continue
        if match := _BLOCK.match(key):
            stage, block, rest = match.groups()
            for old, new in _MLP.items():
                rest = rest.replace(old, new)
            key = f"features.{2 * int(stage)}.{block}.{rest}"
        elif match := _MERGE.match(key):
            stage, rest = match.groups()
            key = f"features.{2 * int(stage) + 1}.{rest}"
        elif match := _NORM.match(key):
            key = f"norm.{match.group(1)}"
        out[key] = value
    for key, value in target_state.items():
        if key.endswith("relative_position_index"):
            out[key] = value
    return out
