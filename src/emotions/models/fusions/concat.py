"""Concatenation baseline: pool each modality, concatenate, MLP (no attention across them).

The means run over valid tokens only (``FusionBase.pool`` / ``pool_windows``), so padding and
absent modalities enter as the learned missing token, never as averaged-in filler.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emotions.models.fusions._base import FusionBase
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


@register_fusion("concat")
class ConcatFusion(FusionBase):
    """Clip: the modality means concatenated through an MLP; per window the same on window means."""

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        d = settings.dim
        self.concat = nn.Sequential(
            nn.Linear(self.n * d, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d)
        )
        self.concat_norm = nn.LayerNorm(d)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        clip = torch.cat([self.pool(x[m], valid[m], m) for m in self.modalities], dim=-1)
        windows = torch.cat(
            [self.pool_windows(x[m], member[m], valid[m], m) for m in self.modalities], dim=-1
        )
        return self.concat_norm(self.concat(clip)), self.concat_norm(self.concat(windows))
