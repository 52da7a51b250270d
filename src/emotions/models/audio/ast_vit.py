"""Audio branch: an AST-style spectrogram transformer built from timm's ViT.

The log-mel spectrogram is treated as a one-channel image (height = mel bins, width = time, as
in AST) cut into possibly overlapping 16×16 patches, with its own learned position embeddings
sized to the spectrogram and no class token. The patch tokens are averaged over frequency per
time column, so the fusion receives one token per time position and can assign it to a window.
Given the rows that hold sound, padded time columns are masked as attention keys (``forward``).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from emotions.models.pretrained.ast import ast_normalise, interpolate_time
from emotions.models.registry import register_audio
from emotions.models.settings import AudioSettings
from emotions.models.video import WeightsError, load_matching, read_state_dict

# size → (embed dim, depth, heads): tiny for CPU, small/base as timm's ViT-S/16 and ViT-B/16.
AUDIO_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (96, 2, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}
# Checkpoint entries the branch has no use for: prefix tokens and classifier heads.
_UNUSED = ("cls_token", "dist_token", "reg_token", "head", "head_dist", "fc_norm", "pre_logits")
_UNUSED_PREFIXES = (*(f"{name}." for name in _UNUSED), "mlp_head.")


class StridedPatchEmbed(PatchEmbed):
    """timm's PatchEmbed with a stride of its own, for AST's overlapping patches.

    timm's PatchEmbed ties stride to patch size; everything else (grid bookkeeping, NHWC output
    for dynamic-size position embeddings) is kept so VisionTransformer can use it unchanged.
    """

    def __init__(self, *args: Any, stride: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stride = (stride, stride)
        old = self.proj
        self.proj = nn.Conv2d(
            old.in_channels,
            old.out_channels,
            kernel_size=self.patch_size,
            stride=self.stride,
            bias=old.bias is not None,
        )
        self.grid_size = self.dynamic_feat_size(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return tuple(
            (size - patch) // stride + 1
            for size, patch, stride in zip(img_size, self.patch_size, self.stride, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # B D F' T'
        x = (
            x.permute(0, 2, 3, 1)
            if self.output_fmt.value == "NHWC"
            else x.flatten(2).transpose(1, 2)
        )
        return self.norm(x)


@register_audio("ast")
class AudioBackbone(nn.Module):
    """(B, A, M) normalised log-mel → tokens (B, A', D) per time column and their time centres."""

    def __init__(self, settings: AudioSettings) -> None:
        super().__init__()
        self.settings = settings
        dim, depth, heads = AUDIO_SIZES[settings.size]
        self.dim = dim
        self.vit = VisionTransformer(
            img_size=(settings.mel_bins, settings.frames),
            patch_size=settings.patch,
            in_chans=1,
            num_classes=0,
            global_pool="",
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            class_token=False,
            dynamic_img_size=True,
            drop_path_rate=settings.drop_path,
            embed_layer=partial(StridedPatchEmbed, stride=settings.stride),
        )
        if settings.input_norm == "ast":
            # How the loader normalised the log-mel (the training cache's statistics), kept in
            # the checkpoint so evaluation and serving rescale exactly as training did.
            self.register_buffer("data_mean", torch.zeros(()))
            self.register_buffer("data_std", torch.ones(()))
        if settings.weights:
            self.load_weights(settings.weights)

    def set_input_stats(self, mean: float, std: float) -> None:
        """The mean/std the input log-mel was normalised with (needed for ``input_norm: ast``)."""
        if self.settings.input_norm == "ast":
            self.data_mean.fill_(mean)
            self.data_std.fill_(std)

    def rescale(self, audio: Tensor) -> Tensor:
        """Dataset-normalised log-mel → AST's (fbank − μ) / (2σ), or as is."""
        if self.settings.input_norm != "ast":
            return audio
        raw = audio * self.data_std + self.data_mean
        return ast_normalise(raw, self.settings.ast_mean, self.settings.ast_std)

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) patch grid the position embeddings are laid out on."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def num_layers(self) -> int:
        """Depth for layer-wise lr decay: the patch/position embedding, each block, the norm."""
        return len(self.vit.blocks) + 2

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this module): 0 = embeddings."""
        parts = name.split(".")
        if parts[:2] == ["vit", "blocks"]:
            return int(parts[2]) + 1
        if parts[:2] in (["vit", "patch_embed"], ["vit", "pos_embed"]):
            return 0
        return self.num_layers - 1

    def load_weights(self, path: str | Path) -> None:
        """Load a local timm ViT or AST checkpoint, adapted to one channel and this grid.

        RGB patch kernels are averaged into one channel; position embeddings of a square
        ImageNet grid are interpolated to the spectrogram grid with timm's resampler; an
        AST checkpoint of the same grid loads as is, one of the same frequency rows but another
        clip length has them interpolated along time. Prefix tokens and heads are dropped.
        """
        state = read_state_dict(path)
        is_ast = any(k.startswith(("v.", "mlp_head.")) for k in state) or "dist_token" in state
        if not any(k.startswith("blocks.") for k in state) and any(
            k.startswith("v.blocks.") for k in state
        ):  # AST nests the ViT under "v."
            state = {k.removeprefix("v."): v for k, v in state.items()}
        prefix_tokens = sum(
            state[name].shape[1]
            for name in ("cls_token", "dist_token", "reg_token")
            if name in state
        )
        state = {k: v for k, v in state.items() if k not in _UNUSED}
        weight = state.get("patch_embed.proj.weight")
        if weight is not None and weight.ndim == 4 and weight.shape[1] == 3:
            state["patch_embed.proj.weight"] = weight.mean(dim=1, keepdim=True)
        if "pos_embed" in state:
            state["pos_embed"] = self._fit_pos_embed(
                state["pos_embed"], prefix_tokens, path, is_ast
            )
        load_matching(self.vit, state, path, f"audio '{self.settings.size}'", _UNUSED_PREFIXES)

    def _fit_pos_embed(
        self, pos: Tensor, prefix_tokens: int, path: str | Path, is_ast: bool = False
    ) -> Tensor:
        grid = self.grid
        if pos.ndim != 3 or pos.shape[-1] != self.dim:
            return pos  # load_matching reports the shape mismatch
        for prefix in dict.fromkeys((prefix_tokens, 0)):
            patches = pos.shape[1] - prefix
            if patches == grid[0] * grid[1]:
                return pos[:, prefix:]
            if is_ast and patches > 0 and patches % grid[0] == 0:
                # An AST of the same frequency grid trained on another clip length.
                return interpolate_time(pos[:, prefix:], grid[0], grid[1])
            side = math.isqrt(patches) if patches > 0 else 0
            if side * side == patches:
                return resample_abs_pos_embed(
                    pos[:, prefix:], new_size=list(grid), old_size=[side, side], num_prefix_tokens=0
                )
        raise WeightsError(
            f"{path}: position embedding of {pos.shape[1]} tokens fits neither the "
            f"{grid[0]}×{grid[1]} spectrogram grid, an AST grid of {grid[0]} frequency rows, "
            "nor a square image grid"
        )

    def time_centres(self, frames: int, columns: int, device: torch.device | None = None) -> Tensor:
        """Centre of each time column as a fraction of the clip, for window assignment."""
        stride, patch = self.settings.stride, self.settings.patch
        starts = torch.arange(columns, dtype=torch.float32, device=device) * stride
        return (starts + patch / 2.0) / frames

    def key_mask(self, valid_frames: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 1, 1, F'·T') True where a patch may be a key: its time column starts on a row
        holding sound, so a column lying wholly in padding is never read by another patch.

        The mask broadcasts over heads and queries, as timm's blocks hand it to SDPA. A clip with
        no sound row (``has_audio`` False, or True with 0 rows) keeps every key, so no softmax
        row is empty; the fusion ignores all of that clip's audio tokens anyway.
        """
        f, t = grid
        starts = torch.arange(t, device=valid_frames.device) * self.settings.stride
        columns = starts.unsqueeze(0) < valid_frames.view(-1, 1)  # B T'
        columns = columns | ~columns.any(dim=1, keepdim=True)
        return columns.repeat(1, f).view(-1, 1, 1, f * t)  # tokens are frequency-major

    def forward(self, audio: Tensor, valid_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``valid_frames`` (B,) int: rows of ``audio`` holding sound (None: all of them).

        Patches whose time column lies wholly past those rows are masked as keys in every
        block (timm's ViT passes ``attn_mask`` to each block's attention), so the tokens of
        the sound do not depend on the padding after it. The padded columns are still queries
        and come out as tokens; the fusion masks them as padding. A column straddling the end
        of the sound is a key: it holds sound, and its patch reads the padded rows as the
        zeros (the normalised mean) they are.
        """
        if audio.ndim != 3:
            raise ValueError(f"audio must be (B, frames, mel bins), got {tuple(audio.shape)}")
        b, frames, mels = audio.shape
        if min(frames, mels) < self.settings.patch:
            raise ValueError(
                f"audio of {frames} frames × {mels} mel bins is smaller than a "
                f"{self.settings.patch}×{self.settings.patch} patch"
            )
        x = self.rescale(audio).transpose(1, 2).unsqueeze(1).to(self.vit.pos_embed.dtype)
        f, t = self.vit.patch_embed.dynamic_feat_size((mels, frames))
        if valid_frames is None:
            x = self.vit.forward_features(x)  # B F'·T' D, frequency-major
        else:
            mask = self.key_mask(valid_frames.to(audio.device), (f, t))
            x = self.vit.forward_features(x, attn_mask=mask)
        tokens = x.reshape(b, f, t, self.dim).mean(dim=1)
        return tokens, self.time_centres(frames, t, device=audio.device)
