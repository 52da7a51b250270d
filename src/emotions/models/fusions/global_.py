"""Global fusion (LGFM stage 2): one transformer over a clip token and every token, then gates.

The module is ``global_`` because ``global`` is a Python keyword; it registers as "global".
A transformer runs over a learned clip token plus every token of both modalities (with their
modality and window embeddings); a gated fusion (learned sigmoid gates) then combines the
pooled video, pooled audio, clip token and, after a local stage, the pooled local features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emotions.models.fusion import FusionBase, GatedFusion
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


class GlobalStage(nn.Module):
    """Clip-token transformer over all tokens, then a gated fusion of the pooled parts."""

    def __init__(self, fusion: FusionBase, with_local: bool) -> None:
        super().__init__()
        s = fusion.settings
        self.clip_token = nn.Parameter(torch.zeros(1, 1, s.dim))
        self.encoder = nn.ModuleList(
            fusion.block(cross=False, null_key=False) for _ in range(s.global_depth)
        )
        self.encoder_norm = nn.LayerNorm(s.dim)
        self.gate = GatedFusion(fusion.n + 1 + int(with_local), s.dim)
        nn.init.trunc_normal_(self.clip_token, std=0.02)

    def forward(
        self,
        fusion: FusionBase,
        x: dict[str, Tensor],
        member: dict[str, Tensor],
        present: dict[str, Tensor],
        local: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The clip embedding and the per-window features of the timeline."""
        modalities = fusion.modalities
        b = next(iter(x.values())).shape[0]
        seq = [self.clip_token.expand(b, -1, -1)] + [x[m] for m in modalities]
        keys = [torch.ones(b, 1, dtype=torch.bool, device=seq[0].device)]
        keys += [present[m].view(-1, 1).expand(-1, x[m].shape[1]) for m in modalities]
        allow = torch.cat(keys, dim=1).unsqueeze(1)  # B 1 L: absent tokens are never keys
        h = torch.cat(seq, dim=1)
        allow = allow.expand(-1, h.shape[1], -1)
        for blk in self.encoder:
            h = blk(h, None, allow)
        h = self.encoder_norm(h)
        clip = h[:, 0]
        outs = h[:, 1:].split([x[m].shape[1] for m in modalities], dim=1)

        parts = [fusion.pool(o, present[m], m) for o, m in zip(outs, modalities, strict=True)]
        parts.append(clip)
        if local is not None:
            parts.append(local.mean(dim=1))
        embedding = self.gate(parts)
        if local is not None:  # the timeline comes from stage 1
            return embedding, local

        # No local stage: window-pooled stage-2 tokens through the same gate and head.
        windows = [
            fusion.pool_windows(o, member[m], present[m], m)
            for o, m in zip(outs, modalities, strict=True)
        ]
        windows.append(clip.unsqueeze(1).expand(-1, fusion.windows, -1))
        return embedding, self.gate(windows)


@register_fusion("global")
class GlobalFusion(FusionBase):
    """Global stage only, on the embedded branch tokens."""

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        self.glob = GlobalStage(self, with_local=False)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], present: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        return self.glob(self, x, member, present, None)
