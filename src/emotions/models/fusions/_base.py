"""What every fusion shares: token embedding, window assignment, attention blocks, heads.

Both branches cover the same clip, so each token carries a time centre (fraction of the clip)
and is assigned to one of S equal windows. The fusions themselves live one per module in
``emotions.models.fusions`` (concat, local, global, lgfm, pyramid) behind the registry in
``emotions.models.registry``; each subclasses ``FusionBase`` and implements ``fuse``.

Padding is masked, never read as signal. ``FusionBase.forward`` builds one validity mask per
modality, ``valid[m]`` (B, L_m): a token is valid where its modality is present in the clip (not
a clip without audio, not dropped with ``mask_modality``) and the token holds signal (an audio
token lying wholly past the end of the sound does not). Every fusion receives these masks, and

- an invalid token is never a key of any attention (cross-attention, the global transformer,
  the pyramid's levels), so no valid token reads it;
- every mean (clip pooling, window pooling, snippet tokens) runs over valid tokens only;
- a clip or window with no valid token of a modality gets that modality's learned missing
  token in place of the mean: "no evidence here", the same value whatever the input tensor.

An invalid token's own value is also swapped for the missing token before any mixing, so a NaN
or garbage in an absent input cannot leak through arithmetic (0 × NaN is NaN). A query left with
no allowed key would give NaN in softmax; every attention therefore keeps one key it may always
use: a learned null key (cross and local blocks), the clip token (global stage) or the query
itself (pyramid levels). The outputs of valid tokens thus depend neither on the absent
modality's tensor, nor on the missing token's value, nor on how many tokens are padding.
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


def window_weights(member: Tensor, valid: Tensor) -> Tensor:
    """(B, S, L) True where token l is a valid member of window s in clip b.

    Window membership (S, L) depends only on the tokens' times, validity (B, L) on the clip;
    a window's mean must use the tokens that satisfy both.
    """
    return member.unsqueeze(0) & valid.unsqueeze(1)


def masked_average(tokens: Tensor, include: Tensor) -> Tensor:
    """Mean of (B, L, D) tokens over the included ones, per group (B, G, L) → (B, G, D).

    A group with nothing included gets zeros (the divisor is clamped to 1 instead of branching
    on the count); callers put the missing token there with ``torch.where``.
    """
    weights = include.to(tokens.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1.0)
    return torch.einsum("bgl,bld->bgd", weights, tokens)


def usable_windows(window_valid: Tensor) -> Tensor:
    """(B, S) windows a clip-level pooling over windows may use: those holding a valid token.

    A clip with no such window (every modality absent or padding, e.g. the audio-only model on
    a clip without sound) keeps all of them, so a softmax or mean over windows always has at
    least one term; all its windows then hold only missing tokens, so which are used is moot.
    """
    return window_valid | ~window_valid.any(dim=1, keepdim=True)


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


class FusionBase(nn.Module):
    """Fuses branch tokens into clip logits, per-window logits and a clip embedding.

    ``dims`` maps each modality the model has ("video", "audio") to its branch's token width.
    The base projects each modality to ``settings.dim``, builds the per-token validity masks,
    swaps invalid tokens for the learned missing token, adds modality and window embeddings and
    owns the classifier; a subclass's ``fuse`` turns the embedded tokens, window membership and
    validity into (embedding (B, D), windows (B, S, D)).
    """

    # Learned modality and window embeddings added to every token. A fusion that locates
    # tokens by its attention masks alone (mpam, as the authors' MPAM has none) turns them off.
    embeddings: bool = True

    def __init__(self, settings: ModelSettings, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in dims)
        if not self.modalities:
            raise ValueError("the fusion needs at least one modality")
        self.settings = settings
        self.windows = settings.windows
        d = settings.dim
        self.proj = nn.ModuleDict(
            {
                m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], d))
                for m in self.modalities
            }
        )
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in self.modalities})
        learned = list(self.missing.values())
        if self.embeddings:
            self.modality_embed = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(d)) for m in self.modalities}
            )
            self.window_embed = nn.Parameter(torch.zeros(settings.windows, d))
            learned += [*self.modality_embed.values(), self.window_embed]
        self.head = nn.Sequential(nn.Dropout(settings.dropout), nn.Linear(d, num_classes))
        for p in learned:
            nn.init.trunc_normal_(p, std=0.02)

    def block(self, cross: bool, null_key: bool) -> Block:
        s = self.settings
        return Block(s.dim, s.heads, s.mlp_ratio, s.dropout, cross, null_key)

    @property
    def n(self) -> int:
        return len(self.modalities)

    def forward(
        self,
        tokens: dict[str, Tensor],
        times: dict[str, Tensor],
        present: dict[str, Tensor],
        token_valid: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """tokens[m] (B, L_m, D_m), times[m] (L_m,) in [0, 1], present[m] (B,) bool;
        token_valid[m] (B, L_m) bool marks tokens that hold signal (False: wholly padding)."""
        x, member, valid = {}, {}, {}
        token_valid = token_valid or {}
        for m in self.modalities:
            valid[m] = token_mask(present[m], tokens[m].shape[1], token_valid.get(m))
            h = self.proj[m](tokens[m])
            # Masks keep invalid tokens out of every key set and mean; swapping their values too
            # (before any mixing) keeps a NaN in an absent input from leaking through 0 × NaN.
            h = torch.where(valid[m].unsqueeze(-1), h, self.missing[m].to(h.dtype))
            if self.embeddings:
                h = (
                    h
                    + self.modality_embed[m]
                    + self.window_embed[window_index(times[m], self.windows)]
                )
            x[m] = h
            member[m] = assign_windows(times[m], self.windows)
        embedding, window_features = self.fuse(x, member, valid)
        return {
            "logits": self.head(embedding),
            "window_logits": self.head(window_features),
            "embedding": embedding,
        }

    def fuse(
        self, x: dict[str, Tensor], member: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """x[m] (B, L_m, D) embedded tokens, member[m] (S, L_m) window membership, valid[m]
        (B, L_m) token validity → (clip embedding (B, D), window features (B, S, D))."""
        raise NotImplementedError

    def partner(self, m: str) -> str:
        """The other modality, or ``m`` itself in a one-modality model."""
        others = [o for o in self.modalities if o != m]
        return others[0] if others else m

    def pool(self, h: Tensor, valid: Tensor, m: str) -> Tensor:
        """Mean over a modality's valid tokens (B, D); its missing token where none is valid."""
        pooled = masked_average(h, valid.unsqueeze(1)).squeeze(1)
        return torch.where(valid.any(dim=1, keepdim=True), pooled, self.missing[m].to(h.dtype))

    def pool_windows(self, h: Tensor, member: Tensor, valid: Tensor, m: str) -> Tensor:
        """Mean over each window's valid tokens (B, S, D); the missing token where none is."""
        include = window_weights(member, valid)
        pooled = masked_average(h, include)
        return torch.where(include.any(dim=-1, keepdim=True), pooled, self.missing[m].to(h.dtype))

    def window_valid(self, member: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        """(B, S) windows holding a valid token of at least one modality."""
        per_modality = [window_weights(member[m], valid[m]).any(dim=-1) for m in self.modalities]
        return torch.stack(per_modality).any(dim=0)


def token_mask(present: Tensor, length: int, token_valid: Tensor | None) -> Tensor:
    """(B, L) validity of a modality's tokens: the clip has the modality and the token signal.

    Without ``token_valid`` every token of a present clip is valid (video has no padding).
    A clip whose ``has_audio`` is True but whose tokens are all padding (no sound rows) ends up
    with no valid token and is treated exactly as a clip without audio.
    """
    valid = present.view(-1, 1).expand(-1, length)
    return valid if token_valid is None else valid & token_valid
