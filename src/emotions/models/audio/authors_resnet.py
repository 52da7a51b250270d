"""The authors' audio branch: a ResNet-34 with a (7, 1) stem per segment, then Linear + BN + Tanh.

Source: XuecWu/eMotions, AV-CANet/models/audio_net.py (``ResNet``, ``resnet34``) and
models/AVNet.py (``AVNet.__init__``: ``a_fc``; ``AVNet.forward``: the segments). What their
code does:

- the audio features are cut into ``audio_n_segments`` (16) equal time chunks, each a
  one-channel image with time as its height and the feature bins as its width;
- the stem is Conv2d(1, 64, (7, 1), stride (2, 1), padding (3, 0)): it convolves along time
  only, and halves time only; then torchvision's ResNet-34 body (BN, ReLU, max-pool, four
  stages) and AvgPool2d([8, 2]);
- ``a_fc`` = Linear(512, audio_embed_size) → BatchNorm1d → Tanh gives one token per segment;
- ``resnet34(pretrained=True)`` loads torchvision's ImageNet ResNet-34 with strict=False: the
  stem, named ``a_conv1`` there, matches no key and keeps its random init.

Inferred (their loader, datasets/ve8.py, is not published): AvgPool2d([8, 2]) averages the
whole final map for inputs of 256 × 32 (VAANet's 32 MFCCs at 44.1 kHz, tiled to 4096 rows, 16
chunks), so here the pool is a global mean, which equals it there and fits any input size. Our
features are the cache's log-mel (time × mel bins), aligned with the video's snippets.

ImageNet weights are read from a local torchvision ``resnet34`` state-dict file
(``model.audio.weights``), never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet34

from emotions.models.audio.resnet import segment_shape
from emotions.models.registry import register_audio
from emotions.models.settings import AudioSettings
from emotions.models.video import WeightsError, read_state_dict

# Keys of a torchvision ResNet-34 checkpoint the branch does not take: the RGB 7 × 7 stem
# (the branch's stem has another shape, as in the authors' strict=False load) and the
# ImageNet classifier.
_SKIPPED = ("conv1.", "fc.")


@register_audio("authors_resnet34")
class AuthorsResNetAudio(nn.Module):
    """(B, A, M) log-mel → one token per segment (B, S, embed) and the segments' time centres."""

    def __init__(self, settings: AudioSettings) -> None:
        super().__init__()
        self.settings = settings
        self.segments = settings.segments
        net = resnet34(weights=None)  # the architecture only: nothing is downloaded
        net.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 1), stride=(2, 1), padding=(3, 0), bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.fc = nn.Identity()
        self.net = net
        self.fc = nn.Sequential(
            nn.Linear(512, settings.embed), nn.BatchNorm1d(settings.embed), nn.Tanh()
        )
        self.dim: int = settings.embed
        if settings.weights:
            self.load_weights(settings.weights)

    def load_weights(self, path: str | Path) -> None:
        """A local torchvision ``resnet34`` state dict: every body weight must fit; the stem and
        the classifier are not taken (see ``_SKIPPED``)."""
        given = {k: v for k, v in read_state_dict(path).items() if not k.startswith(_SKIPPED)}
        expected = {k: v for k, v in self.net.state_dict().items() if not k.startswith(_SKIPPED)}
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        wrong = [k for k in expected if k in given and given[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise WeightsError(
                f"{path}: not a torchvision resnet34 state dict (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, other shapes {wrong[:3]})"
            )
        self.net.load_state_dict(given, strict=False)

    def time_centres(self, device: torch.device | None = None) -> Tensor:
        positions = torch.arange(self.segments, dtype=torch.float32, device=device)
        return (positions + 0.5) / self.segments

    def forward(self, audio: Tensor, valid_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``valid_frames`` is not needed: each segment goes through the network alone, so a
        segment of sound never reads the padding after it (segments wholly past the sound are
        masked by the fusion)."""
        del valid_frames
        b, mels, s, width = segment_shape(audio, self.segments)
        # (B·S, 1, time, bins): time is the height the (7, 1) stem strides along.
        x = audio[:, : width * s].reshape(b * s, 1, width, mels)
        x = self.net(x.to(self.net.conv1.weight.dtype))
        tokens = self.fc(x).view(b, s, self.dim)
        return tokens, self.time_centres(device=audio.device)
