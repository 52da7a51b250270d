"""Local fusion (LGFM stage 1): bidirectional cross-attention within each time window.

Video tokens query that window's audio tokens and audio tokens query that window's video
tokens; windows are then pooled into per-window fused features (the prediction timeline).
This is where local agreement or conflict between picture and sound shows. With one modality
the cross-attention becomes within-window self-attention.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emotions.models.fusions._base import FusionBase, usable_windows
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


class LocalStage(nn.Module):
    """Within-window cross-attention per modality, then window pooling and mixing."""

    def __init__(self, fusion: FusionBase) -> None:
        super().__init__()
        s, n = fusion.settings, fusion.n
        self.blocks = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    fusion.block(cross=n > 1, null_key=True) for _ in range(s.local_depth)
                )
                for m in fusion.modalities
            }
        )
        self.window_mix = nn.Sequential(
            nn.Linear(n * s.dim, s.dim), nn.GELU(), nn.Linear(s.dim, s.dim)
        )
        self.window_norm = nn.LayerNorm(s.dim)
        for blocks in self.blocks.values():
            for blk in blocks:
                nn.init.trunc_normal_(blk.null, std=0.02)

    def forward(
        self,
        fusion: FusionBase,
        x: dict[str, Tensor],
        member: dict[str, Tensor],
        valid: dict[str, Tensor],
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Cross-attended tokens per modality and the mixed window features (B, S, D).

        A query's keys are the partner's valid tokens of the same window; the blocks' null key
        answers a query whose window has none (partner absent, or its sound already ended).
        A window with no valid token of a modality contributes that modality's missing token.
        """
        out = dict(x)
        for m in fusion.modalities:
            p = fusion.partner(m)
            same_window = (member[m].T.float() @ member[p].float()) > 0  # L_m × L_p
            allow = same_window.unsqueeze(0) & valid[p].unsqueeze(1)  # B L_m L_p
            h = x[m]
            for blk in self.blocks[m]:
                h = blk(h, x[p] if p != m else None, allow)
            out[m] = h
        parts = [fusion.pool_windows(out[m], member[m], valid[m], m) for m in fusion.modalities]
        return out, self.window_norm(self.window_mix(torch.cat(parts, dim=-1)))


@register_fusion("local")
class LocalFusion(FusionBase):
    """Local stage only; the clip embedding is an attention pooling over the windows.

    The pooling scores only windows holding a valid token of some modality. In the two-modality
    model every window has video, so a window past the end of the sound stays in the clip: its
    audio half is the learned missing token, which says "no sound here" (as for a clip without
    audio) rather than averaging padding. In the audio-only model such a window holds nothing
    and its score is -inf; a clip with no valid window keeps them all (``usable_windows``) so
    the softmax never divides by zero.
    """

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        self.local = LocalStage(self)
        self.window_score = nn.Linear(settings.dim, 1)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        _, local = self.local(self, x, member, valid)
        usable = usable_windows(self.window_valid(member, valid)).unsqueeze(-1)  # B S 1
        scores = self.window_score(local).masked_fill(~usable, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights * local).sum(dim=1), local
