"""Kinetics Video Swin checkpoints in the original / mmaction2 layout → torchvision's Swin3d.

The original release (SwinTransformer3D, Liu et al. 2022) and mmaction2 store the backbone
under ``backbone.`` with stages ``layers.N.blocks.M.…``, the merging at the end of each stage
and the classifier under ``cls_head.``; the tensors themselves (3D patch kernel, 3D relative
position tables indexed depth-major) already have torchvision's shapes, so only names change.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torchvision.models.video.swin_transformer import SwinTransformer3d

from emotions.models.pretrained._swin_keys import rename_swin


def from_video_swin(state: Mapping[str, Tensor], target: SwinTransformer3d) -> dict[str, Tensor]:
    """A Video Swin state dict (``backbone.`` prefix optional) as ``target``'s state dict."""
    body = {
        k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("cls_head.")
    }
    return rename_swin(body, target.state_dict())
