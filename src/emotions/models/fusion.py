"""Local-Global Fusion Module (LGFM) and the simpler fusions it is ablated against.

Both branches cover the same clip, so each token carries a time centre (fraction of the clip)
and is assigned to one of S equal windows. The stages:

* local (stage 1): within each window, bidirectional cross-attention: video tokens query that
  window's audio tokens and audio tokens query that window's video tokens. Windows are pooled
  into per-window fused features and per-window logits (the prediction timeline). This is where
  local agreement or conflict between picture and sound shows.
* global (stage 2): a transformer over a learned clip token plus every token of both modalities
  (with modality and window embeddings), then a gated fusion (learned sigmoid gates) of the
  pooled video, pooled audio, clip token and, after a local stage, pooled local features.

``fusion`` picks ``concat`` (pool each modality, concatenate, MLP), ``local``, ``global`` or
``lgfm`` (local then global, the global stage reading the cross-attended tokens). With one
modality the cross-attention becomes within-window self-attention.

An absent modality (a clip without audio, or one dropped with ``mask_modality``) is never
represented by zeros posing as a signal: its tokens are replaced by a learned missing token, and
attention masks stop the other modality from attending to them. Each cross-attention also has
a learned null key, so a query whose window holds no usable key attends to "nothing" instead
of producing NaNs. The output therefore cannot depend on the absent modality's tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emotions.models.settings import ModelSettings

MODALITIES = ("video", "audio")


def assign_windows(times: Tensor, windows: int) -> Tensor:
    """Membership (S, L) of L tokens with time centres in [0, 1] to S equal windows.

    A token belongs to the window its centre falls in. A window that no token's centre falls
    in (more windows than temporal positions) borrows the nearest token, so every window has
    at least one token of every modality and the timeline always exists.

    Branch-free on purpose: the borrowed token is OR-ed in under a mask instead of behind an
    ``if empty.any()``, so nothing reads a tensor's value on the host. That keeps
    ``torch.compile`` from breaking the fusion's graph here, spares a device sync per step on
    CUDA, and lets the function run on the ``meta`` device.
    """
    index = torch.clamp((times * windows).floor().long(), 0, windows - 1)
    slots = torch.arange(windows, device=times.device)
    member = index.unsqueeze(0) == slots.unsqueeze(1)
    empty = ~member.any(dim=1, keepdim=True)  # S 1
    centres = (slots.to(times.dtype) + 0.5) / windows
    nearest = (times.unsqueeze(0) - centres.unsqueeze(1)).abs().argmin(dim=1)  # S
    borrowed = nearest.unsqueeze(1) == torch.arange(times.shape[0], device=times.device)
    return member | (empty & borrowed)


def window_index(times: Tensor, windows: int) -> Tensor:
    """Window each token's centre falls in (L,), for the window embedding."""
    return torch.clamp((times * windows).floor().long(), 0, windows - 1)


def window_mean(tokens: Tensor, member: Tensor) -> Tensor:
    """Mean of (B, L, D) tokens over each window's members (S, L) → (B, S, D)."""
    weights = member.to(tokens.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.einsum("sl,bld->bsd", weights, tokens)


class Attention(nn.Module):
    """Multi-head attention on SDPA with a boolean mask (True = may attend)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, allow: Tensor) -> Tensor:
        b, lq, d = x.shape
        lk = context.shape[1]
        h = self.heads
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allow.unsqueeze(1), dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention (self or cross) then an MLP, both residual.

    ``cross`` blocks attend to a separate context (with its own norm), others to themselves.
    With ``null_key`` a learned key/value is always attendable, so a query with no allowed key
    (its window's other modality is absent) gets a learned "no evidence" value, not NaN.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float, cross: bool, null_key: bool
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads, dropout)
        self.null = nn.Parameter(torch.zeros(1, 1, dim)) if null_key else None
        hidden = int(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None, allow: Tensor) -> Tensor:
        q = self.norm_q(x)
        if (context is None) != (self.norm_kv is None):
            raise ValueError("a cross block needs a context, a self block takes none")
        kv = q if self.norm_kv is None else self.norm_kv(context)
        if self.null is not None:
            kv = torch.cat([self.null.expand(x.shape[0], -1, -1), kv], dim=1)
            allow = F.pad(allow, (1, 0), value=True)
        x = x + self.drop(self.attn(q, kv, allow))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class GatedFusion(nn.Module):
    """Sum of per-source projections, each scaled by sigmoid gates computed from all sources.

    The gates let the model lean on whichever source is informative for a given clip (e.g. the
    audio when the face is off-screen) rather than a fixed mix.
    """

    def __init__(self, sources: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(sources))
        self.gate = nn.Linear(sources * dim, sources * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, parts: list[Tensor]) -> Tensor:
        gates = torch.sigmoid(self.gate(torch.cat(parts, dim=-1))).chunk(len(parts), dim=-1)
        fused = sum(g * p(x) for g, p, x in zip(gates, self.proj, parts, strict=True))
        return self.norm(fused)


class LocalGlobalFusion(nn.Module):
    """Fuses branch tokens into clip logits, per-window logits and a clip embedding.

    ``dims`` maps each modality the model has ("video", "audio") to its branch's token width.
    """

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in dims)
        if not self.modalities:
            raise ValueError("the fusion needs at least one modality")
        self.fusion = settings.fusion
        self.windows = settings.windows
        d, n = settings.dim, len(self.modalities)
        self.has_local = settings.fusion in ("local", "lgfm")
        self.has_global = settings.fusion in ("global", "lgfm")

        def block(cross: bool, null_key: bool) -> Block:
            return Block(d, settings.heads, settings.mlp_ratio, settings.dropout, cross, null_key)

        self.proj = nn.ModuleDict(
            {
                m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], d))
                for m in self.modalities
            }
        )
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in self.modalities})
        self.modality_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d)) for m in self.modalities}
        )
        self.window_embed = nn.Parameter(torch.zeros(settings.windows, d))
        if self.has_local:
            self.local = nn.ModuleDict(
                {
                    m: nn.ModuleList(
                        block(cross=n > 1, null_key=True) for _ in range(settings.local_depth)
                    )
                    for m in self.modalities
                }
            )
            self.window_mix = nn.Sequential(nn.Linear(n * d, d), nn.GELU(), nn.Linear(d, d))
            self.window_norm = nn.LayerNorm(d)
        if self.has_global:
            self.clip_token = nn.Parameter(torch.zeros(1, 1, d))
            self.encoder = nn.ModuleList(
                block(cross=False, null_key=False) for _ in range(settings.global_depth)
            )
            self.encoder_norm = nn.LayerNorm(d)
            self.gate = GatedFusion(n + 1 + int(self.has_local), d)
        if settings.fusion == "concat":
            self.concat = nn.Sequential(
                nn.Linear(n * d, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d)
            )
            self.concat_norm = nn.LayerNorm(d)
        if settings.fusion == "local":
            self.window_score = nn.Linear(d, 1)
        self.head = nn.Sequential(nn.Dropout(settings.dropout), nn.Linear(d, num_classes))
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        params = [*self.missing.values(), *self.modality_embed.values(), self.window_embed]
        if self.has_global:
            params.append(self.clip_token)
        if self.has_local:
            params += [blk.null for blocks in self.local.values() for blk in blocks]
        for p in params:
            nn.init.trunc_normal_(p, std=0.02)

    def forward(
        self, tokens: dict[str, Tensor], times: dict[str, Tensor], present: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """tokens[m] (B, L_m, D_m), times[m] (L_m,) in [0, 1], present[m] (B,) bool."""
        x, member = {}, {}
        for m in self.modalities:
            h = self.proj[m](tokens[m])
            # The swap happens before any mixing, so nothing downstream sees the absent input.
            h = torch.where(present[m].view(-1, 1, 1), h, self.missing[m].to(h.dtype))
            win = window_index(times[m], self.windows)
            x[m] = h + self.modality_embed[m] + self.window_embed[win]
            member[m] = assign_windows(times[m], self.windows)

        local = None
        if self.has_local:
            x = self._local(x, member, present)
            parts = [self._pool_windows(x[m], member[m], present[m], m) for m in self.modalities]
            local = self.window_norm(self.window_mix(torch.cat(parts, dim=-1)))  # B S D

        if self.has_global:
            embedding, window_features = self._global(x, member, present, local)
        elif local is not None:  # local only: attention pooling over the windows
            weights = torch.softmax(self.window_score(local), dim=1)
            embedding, window_features = (weights * local).sum(dim=1), local
        else:
            embedding, window_features = self._concat(x, member, present)
        return {
            "logits": self.head(embedding),
            "window_logits": self.head(window_features),
            "embedding": embedding,
        }

    def _partner(self, m: str) -> str:
        others = [o for o in self.modalities if o != m]
        return others[0] if others else m

    def _local(
        self, x: dict[str, Tensor], member: dict[str, Tensor], present: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Stage 1: each modality attends to its partner's tokens of the same window."""
        out = dict(x)
        for m in self.modalities:
            p = self._partner(m)
            same_window = (member[m].T.float() @ member[p].float()) > 0  # L_m × L_p
            allow = same_window.unsqueeze(0) & present[p].view(-1, 1, 1)
            h = x[m]
            for blk in self.local[m]:
                h = blk(h, x[p] if p != m else None, allow)
            out[m] = h
        return out

    def _pool(self, h: Tensor, present: Tensor, m: str) -> Tensor:
        return torch.where(present.view(-1, 1), h.mean(dim=1), self.missing[m].to(h.dtype))

    def _pool_windows(self, h: Tensor, member: Tensor, present: Tensor, m: str) -> Tensor:
        pooled = window_mean(h, member)
        return torch.where(present.view(-1, 1, 1), pooled, self.missing[m].to(h.dtype))

    def _global(
        self,
        x: dict[str, Tensor],
        member: dict[str, Tensor],
        present: dict[str, Tensor],
        local: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Stage 2: transformer over the clip token and all tokens, then gated fusion.

        Returns the clip embedding and the per-window features of the timeline.
        """
        b = next(iter(x.values())).shape[0]
        seq = [self.clip_token.expand(b, -1, -1)] + [x[m] for m in self.modalities]
        keys = [torch.ones(b, 1, dtype=torch.bool, device=seq[0].device)]
        keys += [present[m].view(-1, 1).expand(-1, x[m].shape[1]) for m in self.modalities]
        allow = torch.cat(keys, dim=1).unsqueeze(1)  # B 1 L: absent tokens are never keys
        h = torch.cat(seq, dim=1)
        allow = allow.expand(-1, h.shape[1], -1)
        for blk in self.encoder:
            h = blk(h, None, allow)
        h = self.encoder_norm(h)
        clip = h[:, 0]
        outs = h[:, 1:].split([x[m].shape[1] for m in self.modalities], dim=1)

        parts = [self._pool(o, present[m], m) for o, m in zip(outs, self.modalities, strict=True)]
        parts.append(clip)
        if local is not None:
            parts.append(local.mean(dim=1))
        embedding = self.gate(parts)
        if local is not None:  # the timeline comes from stage 1
            return embedding, local

        # No local stage: window-pooled stage-2 tokens through the same gate and head.
        windows = [
            self._pool_windows(o, member[m], present[m], m)
            for o, m in zip(outs, self.modalities, strict=True)
        ]
        windows.append(clip.unsqueeze(1).expand(-1, self.windows, -1))
        return embedding, self.gate(windows)

    def _concat(
        self, x: dict[str, Tensor], member: dict[str, Tensor], present: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Baseline: pool each modality, concatenate, MLP; per window the same on window pools."""
        clip = torch.cat([self._pool(x[m], present[m], m) for m in self.modalities], dim=-1)
        windows = torch.cat(
            [self._pool_windows(x[m], member[m], present[m], m) for m in self.modalities], dim=-1
        )
        return self.concat_norm(self.concat(clip)), self.concat_norm(self.concat(windows))
