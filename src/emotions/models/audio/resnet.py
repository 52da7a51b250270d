"""Audio branch: timm's 2D ResNet with one input channel per audio snippet (ours; the authors'
branch, with its (7, 1) stem and Linear + BN + Tanh, is ``authors_resnet34``).

The log-mel is cut into ``settings.segments`` equal time slices (aligned with the video's
snippets when both use the same count); each slice, as a one-channel image (mel bins × frames),
goes through timm's ResNet-18/34 and its global average pool, giving one 512-d token per slice.
Frames that do not fill a whole slice (fewer than ``segments`` of them) are dropped so every
slice has the same static shape.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from emotions.models.registry import register_audio
from emotions.models.settings import AudioSettings
from emotions.models.video import load_matching, read_state_dict


def segment_shape(audio: Tensor, segments: int) -> tuple[int, int, int, int]:
    """(batch, mel bins, segments, frames per segment) of a log-mel cut into equal time slices;
    a clear error for a tensor of the wrong rank or too few frames."""
    if audio.ndim != 3:
        raise ValueError(f"audio must be (B, frames, mel bins), got {tuple(audio.shape)}")
    b, frames, mels = audio.shape
    width = frames // segments
    if width < 1:
        raise ValueError(f"audio of {frames} frames cannot be cut into {segments} segments")
    return b, mels, segments, width


@register_audio("resnet18", "resnet34")
class ResNetAudio(nn.Module):
    """(B, A, M) log-mel → one token per time slice (B, S, 512) and the slices' time centres."""

    def __init__(self, settings: AudioSettings) -> None:
        super().__init__()
        self.settings = settings
        self.segments = settings.segments
        # pretrained=False: timm builds the architecture locally, nothing is downloaded.
        self.net = timm.create_model(settings.arch, pretrained=False, in_chans=1, num_classes=0)
        self.dim: int = self.net.num_features
        if settings.weights:
            self.load_weights(settings.weights)

    @property
    def depths(self) -> list[int]:
        return [len(getattr(self.net, f"layer{k}")) for k in range(1, 5)]

    @property
    def num_layers(self) -> int:
        """Depth for layer-wise lr decay: the stem, each residual block, the top."""
        return sum(self.depths) + 2

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this module): 0 = the stem."""
        parts = name.split(".")
        if len(parts) > 2 and parts[1].startswith("layer"):
            stage = int(parts[1].removeprefix("layer")) - 1
            return sum(self.depths[:stage]) + int(parts[2]) + 1
        if parts[1] in ("conv1", "bn1"):
            return 0
        return self.num_layers - 1

    def load_weights(self, path: str | Path) -> None:
        """A local timm/torchvision ResNet checkpoint; RGB stem kernels averaged to one channel."""
        state = read_state_dict(path)
        stem = state.get("conv1.weight")
        if stem is not None and stem.ndim == 4 and stem.shape[1] == 3:
            state["conv1.weight"] = stem.mean(dim=1, keepdim=True)
        load_matching(self.net, state, path, f"audio '{self.settings.arch}'", ignore=("fc.",))

    def time_centres(self, device: torch.device | None = None) -> Tensor:
        return (
            torch.arange(self.segments, dtype=torch.float32, device=device) + 0.5
        ) / self.segments

    def forward(self, audio: Tensor, valid_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``valid_frames`` (B,) is accepted for the branches' common signature and not needed:
        each slice goes through the network on its own (no attention across slices), so a slice
        of sound never reads the padding after it; a slice wholly past the sound becomes a token
        the fusion masks as padding. (In training mode BatchNorm's batch statistics still span
        every slice of the batch, padded ones included; in eval mode nothing is shared.)
        """
        del valid_frames
        b, mels, s, width = segment_shape(audio, self.segments)
        x = audio[:, : width * s].reshape(b, s, width, mels)
        x = x.permute(0, 1, 3, 2).reshape(b * s, 1, mels, width)  # (B·S) 1 M W: mel as height
        dtype = self.net.conv1.weight.dtype
        tokens = self.net(x.to(dtype)).reshape(b, s, self.dim)
        return tokens, self.time_centres(device=audio.device)
