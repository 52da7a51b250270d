"""The Local-Global Fusion Module: the local stage, then the global stage over its tokens."""

from __future__ import annotations

from torch import Tensor

from emotions.models.fusions._base import FusionBase
from emotions.models.fusions.global_ import GlobalStage
from emotions.models.fusions.local import LocalStage
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


@register_fusion("lgfm")
class LocalGlobalFusion(FusionBase):
    """Stage 1 (within-window cross-attention) feeds stage 2 (clip transformer + gates)."""

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        self.local = LocalStage(self)
        self.glob = GlobalStage(self, with_local=True)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        x, local = self.local(self, x, member, valid)
        return self.glob(self, x, member, valid, local)
