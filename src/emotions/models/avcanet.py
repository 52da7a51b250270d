"""AV-CANet: video branch + audio branch + a registered fusion, on batched tensors.

Input contract (the loader's sample dict, batched): ``video`` uint8 or [0, 1] float
(B, T, 3, H, W), ``audio`` normalised log-mel float (B, A, M), ``has_audio`` bool (B,).
A branch the settings leave out is not built and its input is not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from emotions.models.fusions._base import masked_average
from emotions.models.registry import AUDIO_BRANCHES, FUSIONS
from emotions.models.settings import ModelSettings
from emotions.models.video import build_video

MaskModality = Literal["audio", "video"]


class AVCANet(nn.Module):
    """The audio-visual emotion classifier.

    ``forward`` returns ``logits`` (B, K), ``window_logits`` (B, S, K) for the prediction
    timeline (S = settings.windows, equal shares of the clip in time order) and ``embedding``
    (B, D) for monitoring; a model with both modalities also returns ``audio_logits`` and
    ``video_logits`` (B, K) from its auxiliary heads (each branch's mean token through LayerNorm
    and a linear classifier) or, with ``head: shared``, from the halves of the one fused head
    (the fusion returns them), which the training objective may add. ``mask_modality``
    replaces one modality by its learned missing token for every clip, so comparing
    predictions with and without it measures how much each modality drives a prediction (the
    service's modality_share).
    """

    def __init__(self, settings: ModelSettings, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.settings = settings
        self.num_classes = num_classes
        uses = {"both": ("video", "audio"), "video": ("video",), "audio": ("audio",)}
        self.modalities = uses[settings.modality]
        self.video = (
            build_video(settings.video, settings.windows, settings.dim)
            if "video" in self.modalities
            else None
        )
        self.audio = (
            AUDIO_BRANCHES.create(settings.audio.arch, settings.audio)
            if "audio" in self.modalities
            else None
        )
        dims = {}
        if self.video is not None:
            dims["video"] = self.video.dim
        if self.audio is not None:
            dims["audio"] = self.audio.dim
        self.fusion = FUSIONS.create(settings.fusion, settings, dims, num_classes)
        # Auxiliary modality heads only where they differ from the fused head; a shared head
        # gives the modality logits itself (the fusion returns them).
        self.aux = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], num_classes)) for m in dims}
            if len(dims) > 1 and settings.head == "separate"
            else {}
        )

    def forward(
        self,
        video: Tensor | None = None,
        audio: Tensor | None = None,
        has_audio: Tensor | None = None,
        mask_modality: MaskModality | None = None,
        audio_frames: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``audio_frames`` (B,) int: fbank rows holding sound (emotions.media.decode). The audio
        branch keeps the rows past them from being read by the sound's tokens, and audio tokens
        lying wholly past them are padding: masked in the fusion's attention and means.
        None: all rows hold sound."""
        self._check_mask(mask_modality)
        encoded = self.encode(video, audio, has_audio, audio_frames)
        return {**self.fuse(encoded, mask_modality), **self.aux_logits(encoded)}

    def forward_masked(
        self,
        masks: Sequence[MaskModality | None],
        video: Tensor | None = None,
        audio: Tensor | None = None,
        has_audio: Tensor | None = None,
        audio_frames: Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """``forward`` once per entry of ``masks`` (None: nothing masked), on one encoding.

        Masking a modality changes only what the fusion sees, never a branch's tokens, so the
        branches (nearly all of the cost) run once and the fusion once per mask: the service's
        modality share (full, audio masked, video masked) costs one backbone pass, not three.
        Each result equals ``forward(..., mask_modality=m)``; the auxiliary heads read the
        branch tokens only, so their logits are computed once and shared by every result.
        """
        for mask in masks:
            self._check_mask(mask)
        encoded = self.encode(video, audio, has_audio, audio_frames)
        aux = self.aux_logits(encoded)
        return [{**self.fuse(encoded, mask), **aux} for mask in masks]

    def _check_mask(self, mask_modality: MaskModality | None) -> None:
        if mask_modality is not None and mask_modality not in self.modalities:
            raise ValueError(
                f"mask_modality='{mask_modality}' but the model uses only "
                f"{', '.join(self.modalities)}"
            )

    def encode(
        self,
        video: Tensor | None,
        audio: Tensor | None,
        has_audio: Tensor | None,
        audio_frames: Tensor | None,
    ) -> Encoded:
        """The branches' tokens with their times, presence and padding masks."""
        tokens: dict[str, Tensor] = {}
        times: dict[str, Tensor] = {}
        if self.video is not None:
            if video is None:
                raise ValueError(f"modality '{self.settings.modality}' needs a video tensor")
            grouped, centres = self.video(video)  # B T' N D: N spatial tokens per time position
            tokens["video"] = grouped.flatten(1, 2)
            times["video"] = centres.repeat_interleave(grouped.shape[2])
        if self.audio is not None:
            if audio is None:
                raise ValueError(f"modality '{self.settings.modality}' needs an audio tensor")
            tokens["audio"], times["audio"] = self.audio(audio, audio_frames)

        batch = {m: t.shape[0] for m, t in tokens.items()}
        if len(set(batch.values())) > 1:
            raise ValueError(f"video and audio batch sizes differ: {batch}")
        b = next(iter(batch.values()))
        device = next(iter(tokens.values())).device
        present = {m: torch.ones(b, dtype=torch.bool, device=device) for m in tokens}
        if "audio" in present and has_audio is not None:
            if has_audio.shape != (b,):
                raise ValueError(f"has_audio must be ({b},), got {tuple(has_audio.shape)}")
            present["audio"] = has_audio.to(device=device, dtype=torch.bool)
        token_valid: dict[str, Tensor] = {}
        if "audio" in tokens and audio_frames is not None and audio is not None:
            token_valid["audio"] = audio_token_valid(times["audio"], audio_frames, audio.shape[1])
        return Encoded(tokens, times, present, token_valid)

    def fuse(
        self, encoded: Encoded, mask_modality: MaskModality | None = None
    ) -> dict[str, Tensor]:
        """The fusion and its heads on encoded tokens, one modality masked or none."""
        present = dict(encoded.present)
        if mask_modality is not None:
            present[mask_modality] = torch.zeros_like(present[mask_modality])
        return self.fusion(encoded.tokens, encoded.times, present, encoded.token_valid)

    def aux_logits(self, encoded: Encoded) -> dict[str, Tensor]:
        """The auxiliary single-modality heads on each branch's mean valid token."""
        return {
            f"{m}_logits": head(masked_mean(encoded.tokens[m], encoded.token_valid.get(m)))
            for m, head in self.aux.items()
        }


@dataclass(frozen=True)
class Encoded:
    """What the branches made of a batch, before any fusion (see :meth:`AVCANet.encode`)."""

    tokens: dict[str, Tensor]  # modality → (B, L_m, D_m)
    times: dict[str, Tensor]  # modality → (L_m,) token time centres in [0, 1]
    present: dict[str, Tensor]  # modality → (B,) bool
    token_valid: dict[str, Tensor]  # modality → (B, L_m) bool, where padding exists


def masked_mean(tokens: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of (B, L, D) tokens over the valid ones (B, L); all of them when ``valid`` is None.
    A clip with no valid token gets zeros (it has no audio; the objective skips it)."""
    if valid is None:
        return tokens.mean(dim=1)
    return masked_average(tokens, valid.unsqueeze(1)).squeeze(1)


def audio_token_valid(centres: Tensor, audio_frames: Tensor, frames: int) -> Tensor:
    """(B, L) True where an audio token overlaps the rows holding sound.

    A token of L spans about one 1/L share of the fbank around its centre, so it lies wholly
    in padding when its start (centre − 0.5/L) is at or past ``audio_frames / frames``.
    Branch-free and built on the inputs' device (compile- and meta-safe).
    """
    step = 0.5 / centres.shape[0]
    end = audio_frames.to(device=centres.device, dtype=centres.dtype) / frames  # B
    return (centres - step).unsqueeze(0) < end.unsqueeze(1)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_flops(model: nn.Module, batch: dict[str, Any]) -> int:
    """Forward FLOPs of ``model(**batch)`` (a multiply-add counts 2), counted by PyTorch.

    Attention runs on the math SDPA backend while counting: the fused CPU kernel is not in
    the counter's registry and would be silently left out.
    """
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(**batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
