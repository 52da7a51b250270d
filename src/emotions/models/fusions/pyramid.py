"""Pyramid fusion: ours, in the spirit of the authors' MPAM (``mpam`` is the reading of their code).

Over the aligned snippet tokens (each modality's tokens averaged per time window, so snippet k
of the video and snippet k of the audio cover the same share of the clip):

1. L levels. At level i, one transformer block attends over both modalities' snippets at once
   (within each modality and across them), masked to aligned blocks of 2^(i+1) snippets, so the
   module moves from local to global; a residual dilated temporal convolution (kernel 3,
   dilation 2^i) per modality follows.
2. Learned sigmoid gates combine the levels' outputs token by token.
3. A bidirectional cross-attention layer (video queries audio, audio queries video).
4. Mean pooling per modality (over valid snippets), concatenation and an MLP into the clip
   embedding; the same MLP on each snippet's concatenation gives the timeline.

Snippet tokens are means over valid tokens only (``FusionBase.pool_windows``); a snippet with
none (a clip without audio, or a window past the end of the sound) is the missing token and is
invalid: never a key, a zero in the convolutions, left out of the clip mean, and shown as the
missing token in its timeline window. A query may always attend to itself so no row is empty,
and the cross-attention has a null key. Every mask is built from static shapes and boolean
tensors: no data-dependent Python branching, so it compiles with torch.compile and runs on the
meta device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emotions.models.fusions._base import FusionBase, GatedFusion, window_weights
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


def level_mask(snippets: int, modalities: int, level: int, device: torch.device) -> Tensor:
    """(n·S, n·S) True where two snippet tokens lie in the same block of 2^(level+1) snippets.

    Tokens are laid out modality-major (all video snippets, then all audio snippets), so the
    same-block test compares snippet indices regardless of modality: attention within and
    across modalities shares the window.
    """
    index = torch.arange(snippets, device=device).repeat(modalities)
    block = index // (2 ** (level + 1))
    return block.unsqueeze(0) == block.unsqueeze(1)


class DilatedConv(nn.Module):
    """Residual temporal convolution over snippets: LayerNorm → Conv1d(k=3, dilation) → GELU."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, dilation=dilation, padding=dilation)
        self.act = nn.GELU()

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (B, S, D), valid (B, S): invalid snippets enter the convolution as zeros."""
        h = torch.where(valid.unsqueeze(-1), self.norm(x), torch.zeros_like(x))
        return x + self.act(self.conv(h.transpose(1, 2)).transpose(1, 2))


@register_fusion("pyramid")
class PyramidFusion(FusionBase):
    """Local-to-global masked attention pyramid with dilated convolutions and level gates."""

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        d, levels = settings.dim, settings.pyramid_levels
        self.levels = nn.ModuleList(self.block(cross=False, null_key=False) for _ in range(levels))
        self.convs = nn.ModuleList(
            nn.ModuleDict({m: DilatedConv(d, 2**i) for m in self.modalities}) for i in range(levels)
        )
        self.level_gate = GatedFusion(levels, d)
        self.cross = nn.ModuleDict(
            {m: self.block(cross=self.n > 1, null_key=True) for m in self.modalities}
        )
        for blk in self.cross.values():
            nn.init.trunc_normal_(blk.null, std=0.02)
        self.mix = nn.Sequential(
            nn.Linear(self.n * d, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d)
        )
        self.mix_norm = nn.LayerNorm(d)

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        s = self.windows
        # A snippet is valid where its window holds a valid token of its modality; its token is
        # the mean of those tokens only, or the missing token where there is none.
        usable = {m: window_weights(member[m], valid[m]).any(dim=-1) for m in self.modalities}
        snippets = [self.pool_windows(x[m], member[m], valid[m], m) for m in self.modalities]
        per_modality = self.levels_forward(torch.cat(snippets, dim=1), usable)

        crossed = {}
        for m in self.modalities:
            p = self.partner(m)
            allow = usable[p].unsqueeze(1).expand(-1, s, -1)  # B S S: the partner's valid keys
            context = per_modality[p] if p != m else None
            crossed[m] = self.cross[m](per_modality[m], context, allow)

        clip = torch.cat([self.pool(crossed[m], usable[m], m) for m in self.modalities], dim=-1)
        windows = torch.cat(
            [
                torch.where(usable[m].unsqueeze(-1), crossed[m], self.missing[m].to(x[m].dtype))
                for m in self.modalities
            ],
            dim=-1,
        )
        return self.mix_norm(self.mix(clip)), self.mix_norm(self.mix(windows))

    def levels_forward(self, h: Tensor, usable: dict[str, Tensor]) -> dict[str, Tensor]:
        """The attention/convolution levels and their gate over (B, n·S, D) snippet tokens.

        Invalid snippets are never keys and enter the convolutions as zeros; a query may always
        attend to itself, so an invalid snippet's row is never empty (its output is unused).
        """
        s = self.windows
        valid = torch.cat([usable[m] for m in self.modalities], dim=1)  # B n·S
        device = h.device
        itself = torch.eye(h.shape[1], dtype=torch.bool, device=device)
        outputs = []
        for i, (blk, convs) in enumerate(zip(self.levels, self.convs, strict=True)):
            allow = level_mask(s, self.n, i, device).unsqueeze(0) & valid.unsqueeze(1)
            h = blk(h, None, allow | itself)
            parts = h.split(s, dim=1)
            h = torch.cat(
                [convs[m](part, usable[m]) for m, part in zip(self.modalities, parts, strict=True)],
                dim=1,
            )
            outputs.append(h)
        h = self.level_gate(outputs)
        return dict(zip(self.modalities, h.split(s, dim=1), strict=True))
