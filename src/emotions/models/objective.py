"""The training objective: the fused loss plus the window and auxiliary modality terms.

One function so the train loop, the tests and any future trainer add up the same terms:

    loss = criterion(fused logits)
         + window_weight · criterion(each window's logits, clip label)
         + aux_audio · CE(audio-only logits)      (clips that have audio only)
         + aux_video · CE(video-only logits)

With ``apply_to: all`` the modality terms use the criterion too (EP-CE or PCCE instead of CE),
as the authors' train_epoch applies one criterion to the fused, video and audio logits.

The auxiliary heads give each branch a gradient of its own, so one modality cannot coast on
the other (the authors' objective sums the fused and both modality losses). The masked mean
keeps the audio term free of data-dependent Python branching (torch.compile-friendly): a batch
with no audio at all contributes exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emotions.models.settings import LossSettings


def masked_ce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy over the samples where ``mask`` is True (0 when none is)."""
    return masked_mean(F.cross_entropy(logits, target, reduction="none"), mask)


def masked_mean(per_sample: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-sample losses where ``mask`` is True (0 when none is), branch-free."""
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def objective(
    out: dict[str, Tensor],
    target: Tensor,
    has_audio: Tensor,
    criterion: nn.Module,
    settings: LossSettings,
) -> dict[str, Tensor]:
    """The summed loss under "loss" and each term (unweighted) for logging.

    ``out`` is AVCANet's output; ``audio_logits``/``video_logits`` exist only for a model
    with both modalities, and a zero weight skips its term (no multiplication by 0, so the
    loss without auxiliary terms is bit for bit the fused loss).
    """
    fused = criterion(out["logits"].float(), target)
    terms = {"fused": fused}
    loss = fused
    if settings.window_weight > 0:
        windows = out["window_logits"].float()
        per_window = target.repeat_interleave(windows.shape[1])
        terms["window"] = criterion(windows.flatten(0, 1), per_window)
        loss = loss + settings.window_weight * terms["window"]
    everywhere = settings.apply_to == "all"
    if settings.aux_audio > 0 and "audio_logits" in out:
        mask = has_audio.to(device=target.device, dtype=torch.bool)
        logits = out["audio_logits"].float()
        if everywhere:
            terms["aux_audio"] = masked_mean(criterion.per_sample(logits, target), mask)
        else:
            terms["aux_audio"] = masked_ce(logits, target, mask)
        loss = loss + settings.aux_audio * terms["aux_audio"]
    if settings.aux_video > 0 and "video_logits" in out:
        logits = out["video_logits"].float()
        terms["aux_video"] = (
            criterion(logits, target) if everywhere else F.cross_entropy(logits, target)
        )
        loss = loss + settings.aux_video * terms["aux_video"]
    terms["loss"] = loss
    return terms
