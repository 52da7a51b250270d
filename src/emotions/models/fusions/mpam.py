"""MPAM fusion: the authors' multimodal pyramid attention, built from what their code shows.

Source: XuecWu/eMotions, AV-CANet/models/MPAM.py (``SemanticCaptureModule``,
``SemanticFusionModule``, ``TemporalBlock``), models/Transformer.py (``TransformerLayer``,
``IntegrateAttentionBlock``, ``attention``) and models/CrossAttentionFusion_Module.py. Their
``AVNet`` never builds its ``MMP_Module`` and ``CrossAttentionFusion_Layer`` calls an
undefined ``attention_module``, so the published code cannot run; what it does show:

1. Per level i (0, 1, …) every attention is masked to a band of snippets |q − k| ≤ 2^i
   (``attention`` with ``masksize = 2 · 2^i``, halved before use).
2. At each level: a masked self-attention per modality, and one cross-attention layer shared
   by both directions (video queries audio, audio queries video); each modality gates the two,
   σ(W₁[sa; ca]) ⊙ sa + σ(W₂[sa; ca]) ⊙ ca (``IntegrateAttentionBlock``).
3. A TCN block per modality and level: Conv1d(k 3, dilation 2^i) → ReLU → Conv1d(1 × 1),
   residual, ReLU (``TemporalBlock``); its output feeds the next level.
4. The levels are combined per snippet with scalar weights: σ(Linear(D, 1)) of each level's
   output, made to interact across the modalities by a one-channel attention layer over the
   levels, then a weighted sum (``SemanticFusionModule``).
5. A last cross-attention both ways with a linear map and a residual per modality, then a mean
   over the snippets (``CrossAttentionFusion_Layer``): one clip vector per modality.

Attention layers are pre-norm on the query only, keys and values as they come, with dropout on
each sublayer (0.5, the module's default) and inside the attention (0.1) (``TransformerLayer``,
``MultiHeadAttention``). Guesses, because the code leaves them open: the number of levels
(``model.pyramid_levels``), the feed-forward width (``model.mpam_ffn``, default 4 × dim), the
attention inside step 5 (a multi-head attention with ``model.heads`` heads, as nn.MultiheadAttention's
``query=, key=, value=`` call suggests). Ours: the masking of padding and absent modalities
(``FusionBase``), with a learned null key for the cross-attentions so that a query whose band
holds no valid key of the other modality reads "no evidence" instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emotions.models.fusions._base import Attention, FusionBase, window_weights
from emotions.models.registry import register_fusion
from emotions.models.settings import ModelSettings


def band_mask(snippets: int, level: int, device: torch.device | None = None) -> Tensor:
    """(S, S) True where |q − k| ≤ 2^level: the snippets level ``level`` may attend to."""
    index = torch.arange(snippets, device=device)
    return (index.unsqueeze(1) - index.unsqueeze(0)).abs() <= 2**level


class AttentionLayer(nn.Module):
    """Attention sublayer then feed-forward sublayer, each residual with dropout on its output;
    only the query is normalised (the authors' ``TransformerLayer``). With ``null_key`` a learned
    key/value is always attendable."""

    def __init__(
        self, dim: int, heads: int, ffn: int, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, q: Tensor, kv: Tensor, allow: Tensor, null: Tensor | None = None) -> Tensor:
        """q (B, Lq, D) attends to kv (B, Lk, D) where ``allow`` (B, Lq, Lk) is True."""
        if null is not None:
            kv = torch.cat([null.expand(kv.shape[0], -1, -1), kv], dim=1)
            allow = F.pad(allow, (1, 0), value=True)
        x = q + self.drop(self.attn(self.norm(q), kv, allow))
        return x + self.drop(self.ff(self.norm_ff(x)))


class TemporalBlock(nn.Module):
    """Conv1d(k 3, dilation) → ReLU → Conv1d(1 × 1), residual, ReLU, over the snippets."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(dim, dim, 3, dilation=dilation, padding=dilation),
            nn.ReLU(),
            nn.Conv1d(dim, dim, 1),
        )

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (B, S, D), valid (B, S): invalid snippets enter the convolution as zeros."""
        h = torch.where(valid.unsqueeze(-1), x, torch.zeros_like(x))
        return F.relu(self.net(h.transpose(1, 2)).transpose(1, 2) + x)


class Level(nn.Module):
    """One pyramid level: banded self-attention per modality, one shared cross-attention,
    the gates that mix them, and the TCN block per modality."""

    def __init__(self, settings: ModelSettings, modalities: tuple[str, ...], level: int) -> None:
        super().__init__()
        d = settings.dim
        self.level = level

        def layer() -> AttentionLayer:
            return AttentionLayer(
                d,
                settings.heads,
                settings.mpam_ffn or 4 * d,
                settings.mpam_dropout,
                settings.mpam_attention_dropout,
            )

        self.self_attn = nn.ModuleDict({m: layer() for m in modalities})
        self.tcn = nn.ModuleDict({m: TemporalBlock(d, 2**level) for m in modalities})
        self.cross = layer() if len(modalities) > 1 else None
        self.null = nn.Parameter(torch.zeros(1, 1, d)) if self.cross is not None else None
        self.gates = nn.ModuleDict(
            {m: nn.Linear(2 * d, 2 * d) for m in modalities} if self.cross is not None else {}
        )
        if self.null is not None:
            nn.init.trunc_normal_(self.null, std=0.02)

    def forward(self, h: dict[str, Tensor], usable: dict[str, Tensor]) -> dict[str, Tensor]:
        """h[m] (B, S, D) snippet tokens, usable[m] (B, S) → the level's output per modality."""
        first = next(iter(h.values()))
        s = first.shape[1]
        band = band_mask(s, self.level, first.device)
        itself = torch.eye(s, dtype=torch.bool, device=first.device)
        out = {}
        for m, attend in self.self_attn.items():
            own = band & usable[m].unsqueeze(1) | itself  # B S S: valid keys, and itself
            sa = attend(h[m], h[m], own)
            if self.cross is not None:
                p = next(o for o in self.self_attn if o != m)
                ca = self.cross(h[m], h[p], band & usable[p].unsqueeze(1), self.null)
                g_sa, g_ca = torch.sigmoid(self.gates[m](torch.cat([sa, ca], dim=-1))).chunk(2, -1)
                sa = g_sa * sa + g_ca * ca
            out[m] = self.tcn[m](sa, usable[m])
        return out


@register_fusion("mpam")
class MPAMFusion(FusionBase):
    """Banded self/cross-attention pyramid with TCN blocks, scalar level weights and a last
    cross-attention, over one token per snippet and modality (see the module docstring)."""

    embeddings = False  # the authors' MPAM adds no position or modality embedding

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(settings, dims, num_classes)
        d = settings.dim
        # Branches that already end in their own projection to the fusion width (the authors'
        # v_fc and a_fc) enter as they are.
        for m in self.modalities:
            if dims[m] == d:
                self.proj[m] = nn.Identity()
        self.levels = nn.ModuleList(
            Level(settings, self.modalities, i) for i in range(settings.pyramid_levels)
        )
        self.select = nn.ModuleDict({m: nn.Linear(d, 1) for m in self.modalities})
        paired = self.n > 1
        # The levels' weights meet across the modalities in a one-channel attention layer over
        # the levels (SemanticFusionModule.weight_interaction: width 1, one head, no dropout
        # but the attention's own).
        self.weight_interaction = (
            AttentionLayer(1, 1, 1, 0.0, settings.mpam_attention_dropout) if paired else None
        )
        self.final = Attention(d, settings.heads, 0.0) if paired else None
        self.final_null = nn.Parameter(torch.zeros(1, 1, d)) if paired else None
        self.final_linear = nn.ModuleDict(
            {m: nn.Linear(d, d) for m in self.modalities} if paired else {}
        )
        if self.final_null is not None:
            nn.init.trunc_normal_(self.final_null, std=0.02)
        # The clip vectors in head order: audio first, as ConcatFusion(x=audio, y=video).
        self.order = tuple(sorted(self.modalities))
        if settings.head == "shared":
            # One Linear over [audio; video], no dropout (the authors' ConcatFusion.fc_out).
            self.head = nn.Linear(self.n * d, num_classes)
            self.mix = None
        else:
            self.mix = nn.Sequential(
                nn.Linear(self.n * d, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d)
            )
            self.mix_norm = nn.LayerNorm(d)

    def forward(
        self,
        tokens: dict[str, Tensor],
        times: dict[str, Tensor],
        present: dict[str, Tensor],
        token_valid: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """FusionBase's outputs; with a shared head also ``<modality>_logits`` (B, K): each
        modality's half of the head's weight on its clip vector plus the bias / n, so that they
        sum to the fused logits (the authors' train_epoch computes out_a and out_v so)."""
        out = super().forward(tokens, times, present, token_valid)
        if self.mix is None:
            d = self.settings.dim
            weight, bias = self.head.weight, self.head.bias
            halves = out["embedding"].split(d, dim=-1)
            for k, (m, half) in enumerate(zip(self.order, halves, strict=True)):
                out[f"{m}_logits"] = F.linear(half, weight[:, k * d : (k + 1) * d], bias / self.n)
        return out

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        usable = {m: window_weights(member[m], valid[m]).any(dim=-1) for m in self.modalities}
        h = {m: self.pool_windows(x[m], member[m], valid[m], m) for m in self.modalities}
        outputs = []
        for level in self.levels:
            h = level(h, usable)
            outputs.append(h)
        combined = self.combine_levels(outputs)
        enhanced = self.cross_both_ways(combined, usable)
        clip = torch.cat([self.pool(enhanced[m], usable[m], m) for m in self.order], dim=-1)
        windows = torch.cat(
            [
                torch.where(usable[m].unsqueeze(-1), enhanced[m], self.missing[m].to(x[m].dtype))
                for m in self.order
            ],
            dim=-1,
        )
        if self.mix is None:
            return clip, windows
        return self.mix_norm(self.mix(clip)), self.mix_norm(self.mix(windows))

    def combine_levels(self, outputs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Per snippet, the levels' outputs summed with scalar weights (B, S, D) per modality."""
        stacked = {m: torch.stack([o[m] for o in outputs], dim=2) for m in self.modalities}
        b, s, levels = stacked[self.modalities[0]].shape[:3]
        weights = {
            m: torch.sigmoid(self.select[m](stacked[m])).reshape(b * s, levels, 1)
            for m in self.modalities
        }
        if self.weight_interaction is not None:
            device = stacked[self.modalities[0]].device
            everything = torch.ones(b * s, levels, levels, dtype=torch.bool, device=device)
            video, audio = weights["video"], weights["audio"]
            weights = {
                "video": self.weight_interaction(video, audio, everything),
                "audio": self.weight_interaction(audio, video, everything),
            }
        return {
            m: (stacked[m] * weights[m].reshape(b, s, levels, 1)).sum(dim=2)
            for m in self.modalities
        }

    def cross_both_ways(self, h: dict[str, Tensor], usable: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each modality attends to the other's valid snippets (one attention, both ways), then
        a linear map and a residual (CrossAttentionFusion_Layer)."""
        if self.final is None:  # one modality: nothing to attend across
            return h
        out = {}
        for m in self.modalities:
            p = next(o for o in self.modalities if o != m)
            kv = torch.cat([self.final_null.expand(h[p].shape[0], -1, -1), h[p]], dim=1)
            allow = F.pad(usable[p], (1, 0), value=True).unsqueeze(1).expand(-1, h[m].shape[1], -1)
            out[m] = self.final_linear[m](self.final(h[m], kv, allow)) + h[m]
        return out
