"""AST checkpoints (Gong et al. 2021): position embeddings fitted along time, input scaling.

AST lays its patch tokens out frequency-major on a (F, T) grid (12 × 101 for 1024 frames ×
128 bins at stride 10) after two prefix tokens (class and distillation). Our branch keeps the
frequency grid (same mel bins, patch and stride) but may see another number of frames, so the
embeddings are interpolated along time only: each frequency row is resampled linearly from T
to our T' columns, never mixed with its neighbours.

AST's input normalisation is (fbank − μ) / (2σ) with the μ, σ of its training set (AudioSet:
μ = −4.2677393, σ = 4.5689974, from the AST repository's recipes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def interpolate_time(pos: Tensor, freq: int, time: int) -> Tensor:
    """(1, F·T, D) frequency-major embeddings → (1, F·time, D), resampled along time only."""
    b, n, d = pos.shape
    if n % freq:
        raise ValueError(f"{n} position embeddings do not form {freq} frequency rows")
    grid = pos.reshape(b, freq, n // freq, d).permute(0, 3, 1, 2)  # 1 D F T
    if grid.shape[-1] != time:
        grid = F.interpolate(grid, size=(freq, time), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(b, freq * time, d)


def ast_normalise(fbank: Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> Tensor:
    """AST's input scaling of a raw log-mel: (x − μ) / (2σ)."""
    return (fbank - mean) / (2.0 * std)
