"""Global fusion (LGFM stage 2): one transformer over a clip token and every token, then gates.

The module is ``global_`` because ``global`` is a Python keyword; it registers as "global".
A transformer runs over a learned clip token plus every token of both modalities (with their
modality and window embeddings); a gated fusion (learned sigmoid gates) then combines the
pooled video, pooled audio, clip token and, after a local stage, the pooled local features.
Invalid tokens (absent modality, padding) are never keys and never pooled (``FusionBase``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emotions.models.fusions._base import FusionBase, GatedFusion, masked_average, usable_windows
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
        valid: dict[str, Tensor],
        local: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The clip embedding and the per-window features of the timeline.

        ``local`` is stage 1's window features (B, S, D), or None without a local stage.
        """
        modalities = fusion.modalities
        clip, outs = self.encode(x, valid, modalities)
        parts = [fusion.pool(o, valid[m], m) for o, m in zip(outs, modalities, strict=True)]
        parts.append(clip)
        if local is not None:
            parts.append(self.pool_local(local, fusion.window_valid(member, valid)))
        embedding = self.gate(parts)
        if local is not None:  # the timeline comes from stage 1
            return embedding, local

        # No local stage: window-pooled stage-2 tokens through the same gate and head.
        windows = [
            fusion.pool_windows(o, member[m], valid[m], m)
            for o, m in zip(outs, modalities, strict=True)
        ]
        windows.append(clip.unsqueeze(1).expand(-1, fusion.windows, -1))
        return embedding, self.gate(windows)

    def encode(
        self, x: dict[str, Tensor], valid: dict[str, Tensor], modalities: tuple[str, ...]
    ) -> tuple[Tensor, list[Tensor]]:
        """The transformer over [clip token, every token]: the clip token's output (B, D) and
        each modality's token outputs. Invalid tokens are never keys; the clip token always is,
        so no query (not even one of a clip whose every token is invalid) is left without a key.
        """
        b = next(iter(x.values())).shape[0]
        seq = [self.clip_token.expand(b, -1, -1)] + [x[m] for m in modalities]
        keys = [torch.ones(b, 1, dtype=torch.bool, device=seq[0].device)]
        keys += [valid[m] for m in modalities]
        h = torch.cat(seq, dim=1)
        allow = torch.cat(keys, dim=1).unsqueeze(1).expand(-1, h.shape[1], -1)  # B L L
        for blk in self.encoder:
            h = blk(h, None, allow)
        h = self.encoder_norm(h)
        return h[:, 0], list(h[:, 1:].split([x[m].shape[1] for m in modalities], dim=1))

    @staticmethod
    def pool_local(local: Tensor, window_valid: Tensor) -> Tensor:
        """Mean of stage 1's window features over the windows holding signal (B, D).

        A window with no valid token of any modality (past the sound in the audio-only model)
        is only missing tokens; averaging it in would make the clip depend on how much of the
        clip is padding.
        """
        return masked_average(local, usable_windows(window_valid).unsqueeze(1)).squeeze(1)


@register_fusion("global")
class GlobalFusion(FusionBase):
    """Global stage only, on the embedded branch tokens."""

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        self.glob = GlobalStage(self, with_local=False)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        return self.glob(self, x, member, valid, None)
