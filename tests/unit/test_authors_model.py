"""The model options that state the authors' AV-CANet: pixels, per-snippet video, the shared
head, the mpam fusion and their audio branch (XuecWu/eMotions, AV-CANet/models/)."""

from __future__ import annotations

import torch

from emotions.models.settings import VideoSettings
from emotions.models.video import VideoBackbone

AUTHORS_MEAN = (100 / 255,) * 3  # VisualStream._init_norm_val: MEAN = 100 / NORM_VALUE


def test_pixels_as_the_authors_scale_them() -> None:
    settings = VideoSettings(mean=AUTHORS_MEAN, std=(1.0, 1.0, 1.0))
    backbone = VideoBackbone(settings)
    video = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    expected = video.permute(0, 2, 1, 3, 4).float() / 255 - 100 / 255  # AVNet.forward
    assert torch.allclose(backbone.normalise(video), expected, atol=1e-7)
    ours = VideoBackbone(VideoSettings()).normalise(video)  # ImageNet's, unchanged
    assert ours[:, 0].mean() != expected[:, 0].mean()
