"""Pretrained starts from local files in foreign key layouts, mapped onto our modules.

One module per layout; each turns a checkpoint's tensors into the state dict of the module it
starts (``load_matching`` then checks every key and shape, naming any mismatch):

- ``swin2d``: a 2D ImageNet Swin (timm's ``swin_tiny_patch4_window7_224`` keys, or the original
  Microsoft release) inflated into torchvision's 3D Swin.
- ``video_swin``: a Kinetics Video Swin in the original / mmaction2 layout (``backbone.``,
  ``layers.N.blocks.M.…``) renamed onto torchvision's ``features.…``.
- ``ast``: an AST checkpoint's position embeddings fitted to our spectrogram grid along time.

Nothing here downloads: every function takes tensors read from a file the user names.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torchvision.models.video.swin_transformer import SwinTransformer3d

from emotions.models.pretrained.swin2d import inflate_swin2d
from emotions.models.pretrained.video_swin import from_video_swin

VIDEO_LAYOUTS = ("torchvision", "swin2d", "video_swin")


def detect_video_layout(state: Mapping[str, Tensor]) -> str:
    """Which layout a video checkpoint is in, from its key names and patch-kernel rank."""
    keys = list(state)
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return "video_swin"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(k.startswith("layers.") for k in keys):
        kernel = state.get("patch_embed.proj.weight")
        return "swin2d" if kernel is not None and kernel.ndim == 4 else "video_swin"
    return "torchvision"  # load_matching will name what does not fit


def to_torchvision_swin3d(
    state: Mapping[str, Tensor], target: SwinTransformer3d, layout: str = "auto"
) -> dict[str, Tensor]:
    """``state`` in ``layout`` ("auto" detects it) as a state dict for ``target``."""
    if layout == "auto":
        layout = detect_video_layout(state)
    if layout == "swin2d":
        return inflate_swin2d(state, target)
    if layout == "video_swin":
        return from_video_swin(state, target)
    return dict(state)


__all__ = ["VIDEO_LAYOUTS", "detect_video_layout", "to_torchvision_swin3d"]
