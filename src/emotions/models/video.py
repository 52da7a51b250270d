"""Video branch: a Video Swin Transformer that returns tokens grouped by temporal position.

torchvision's ``SwinTransformer3d`` supplies the architecture for every size, including a
``tiny`` configuration small enough to train on a 2-core CPU in minutes, so the tiny model and
the paper-size model are the same code. The classification head is not used: the fusion needs
tokens per temporal position (to assign them to time windows), not one clip vector.

This module also holds the local-weights loader shared with the audio branch: weights are only
ever read from a file the user points at, never downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.video import swin3d_b, swin3d_s, swin3d_t
from torchvision.models.video.swin_transformer import SwinTransformer3d
from torchvision.ops import StochasticDepth

from emotions.models.settings import VideoSettings
from emotions.models.window_attention import swin_block


class WeightsError(ValueError):
    """A local weights file is missing, unreadable or does not fit the architecture."""


# The tiny configuration: 64×64×8 input → 4 temporal × 8×8 patches of 8×8 pixels (2 frames deep),
# two stages (the second after patch merging halves the grid to 4×4), windows covering
# 2 temporal × 4×4 positions. ~0.2 M parameters.
_TINY = {
    "patch_size": [2, 8, 8],
    "embed_dim": 48,
    "depths": [2, 2],
    "num_heads": [3, 6],
    "window_size": [2, 4, 4],
}
_TORCHVISION: dict[str, Callable[..., SwinTransformer3d]] = {
    "swin3d_t": swin3d_t,
    "swin3d_s": swin3d_s,
    "swin3d_b": swin3d_b,
}


def build_swin3d(settings: VideoSettings) -> SwinTransformer3d:
    """The bare Video Swin architecture for ``settings.arch`` (random init, nothing downloaded).

    Its blocks compute attention as ``settings.attention`` says; the parameters, their names
    and a seed's initial values are the same for either.
    """
    block = swin_block(settings.attention)
    if settings.arch == "tiny":
        return SwinTransformer3d(**_TINY, stochastic_depth_prob=settings.drop_path, block=block)
    model = _TORCHVISION[settings.arch](weights=None, block=block)
    # The builders fix the stochastic depth rate at 0.1; rescale it to the setting, keeping
    # torchvision's linear rise with block depth.
    blocks = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    for i, block in enumerate(blocks):
        block.p = settings.drop_path * i / max(len(blocks) - 1, 1)
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a local checkpoint: a plain state dict, or one under "state_dict"/"model".

    Loaded with ``weights_only=True`` so a checkpoint cannot run code. A "module." prefix
    (DataParallel/DDP checkpoints) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise WeightsError(f"{path}: not a readable torch checkpoint ({error})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{path}: expected a state dict (name → tensor), got {type(obj).__name__}"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise WeightsError(f"{path}: entries that are not tensors: {', '.join(not_tensors[:5])}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _first(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


def load_matching(
    module: nn.Module,
    state: Mapping[str, Tensor],
    path: str | Path,
    what: str,
    ignore: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``module`` only if every key and shape matches, else explain why.

    ``ignore`` lists key prefixes the checkpoint may carry that the branch does not use (its
    classification head). Anything else missing, extra or of another shape is an error naming
    the file and the first offending keys, so a wrong arch or file is caught before training.
    """
    expected = module.state_dict()
    given = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} {tuple(given[k].shape)} ≠ {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = []
    if wrong:
        problems.append(f"shape mismatch: {_first(wrong)}")
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if problems:
        raise WeightsError(f"{path}: does not fit the {what} architecture; " + "; ".join(problems))
    module.load_state_dict(given, strict=True)


class VideoBackbone(nn.Module):
    """Video Swin over (B, T, C, H, W) clips → tokens (B, T', N, D) and their time centres.

    uint8 input is scaled to [0, 1]; float input is read as already in [0, 1]. Both are then
    normalised with the mean/std buffers, so callers never normalise (one convention for
    training and serving).
    """

    def __init__(self, settings: VideoSettings) -> None:
        super().__init__()
        self.settings = settings
        self.swin = build_swin3d(settings)
        self.swin.head = nn.Identity()  # the clip classifier is unused; tokens go to the fusion
        self.dim: int = self.swin.num_features
        self.spatial_pool = settings.spatial_pool
        self.temporal_patch: int = self.swin.patch_embed.tuple_patch_size[0]
        # Non-persistent: they follow settings, and stay out of checkpoints and weights files.
        self.register_buffer("mean", torch.tensor(settings.mean).view(1, 3, 1, 1, 1), False)
        self.register_buffer("std", torch.tensor(settings.std).view(1, 3, 1, 1, 1), False)
        if settings.weights:
            self.load_weights(settings.weights)

    @property
    def depths(self) -> list[int]:
        """Blocks per stage (torchvision interleaves stages and patch merging in features)."""
        return [len(self.swin.features[k]) for k in range(0, len(self.swin.features), 2)]

    @property
    def num_layers(self) -> int:
        """Depth for layer-wise lr decay: the embedding, every block, the final norm."""
        return sum(self.depths) + 2

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this module): 0 = patch embedding.

        A patch merging counts with the last block of the stage before it.
        """
        parts = name.split(".")
        if parts[:2] == ["swin", "features"]:
            index = int(parts[2])
            before = sum(self.depths[: index // 2])
            if index % 2 == 0:
                return before + int(parts[3]) + 1
            return before + self.depths[index // 2]
        if parts[:2] == ["swin", "patch_embed"]:
            return 0
        return self.num_layers - 1

    def load_weights(self, path: str | Path) -> None:
        """Load a local checkpoint of the same arch in ``settings.weights_layout`` (see
        ``emotions.models.pretrained``); its classifier head is ignored."""
        from emotions.models.pretrained import to_torchvision_swin3d

        state = to_torchvision_swin3d(
            read_state_dict(path), self.swin, self.settings.weights_layout
        )
        load_matching(self.swin, state, path, f"video '{self.settings.arch}'", ignore=("head.",))

    def normalise(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) uint8 or [0, 1] float → normalised float (B, C, T, H, W)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
        x = video.permute(0, 2, 1, 3, 4)
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        x = x.to(self.mean.dtype) / scale
        return (x - self.mean) / self.std

    def time_centres(self, frames: int, device: torch.device | None = None) -> Tensor:
        """Centre of each temporal token as a fraction of the clip, for window assignment."""
        p = self.temporal_patch
        positions = math.ceil(frames / p)
        starts = torch.arange(positions, dtype=torch.float32, device=device) * p
        ends = torch.clamp(starts + p, max=float(frames))
        return (starts + ends) / (2.0 * frames)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        x = self.normalise(video)
        swin = self.swin
        x = swin.norm(swin.features(swin.pos_drop(swin.patch_embed(x))))  # B T' H' W' D
        b, t, h, w, d = x.shape
        grid = min(self.spatial_pool, h, w)
        x = x.permute(0, 1, 4, 2, 3).reshape(b * t, d, h, w)
        x = F.adaptive_avg_pool2d(x, grid)  # B·T' D g g
        tokens = x.reshape(b, t, d, grid * grid).transpose(2, 3)
        return tokens, self.time_centres(video.shape[1], device=video.device)


class SnippetVideoBackbone(VideoBackbone):
    """The same Swin run on each snippet as a clip of its own: one token per snippet.

    After AVNet.forward (XuecWu/eMotions, AV-CANet/models/AVNet.py): the clip (B, T, C, H, W)
    is reshaped to B·S clips of T / S frames, so no attention window ever spans two snippets;
    each snippet's feature map is averaged over space (their AvgPool3d((1, 4, 4)), which on
    their 112² input is the whole 4 × 4 map), dropped out (p 0.5), averaged over its temporal
    positions and projected (their Linear(768, 512)). The backbone is ``build_swin3d``'s, the
    very one the whole-clip layout runs, so both layouts share whatever attention it uses.
    """

    def __init__(self, settings: VideoSettings, snippets: int, out_dim: int) -> None:
        super().__init__(settings)
        self.snippets = snippets
        self.snippet_dropout = nn.Dropout(settings.snippet_dropout)
        self.proj = nn.Linear(self.swin.num_features, out_dim)
        self.dim = out_dim

    def time_centres(self, frames: int, device: torch.device | None = None) -> Tensor:
        """The centre of each snippet, a fraction of the clip."""
        del frames
        positions = torch.arange(self.snippets, dtype=torch.float32, device=device)
        return (positions + 0.5) / self.snippets

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) → tokens (B, S, 1, out_dim) and the snippets' time centres (S,)."""
        b, t = video.shape[:2]
        s = self.snippets
        if video.ndim != 5 or t % s:
            raise ValueError(f"video {tuple(video.shape)}: {t} frames are not {s} equal snippets")
        x = self.normalise(video.reshape(b * s, t // s, *video.shape[2:]))  # B·S C t H W
        swin = self.swin
        x = swin.norm(swin.features(swin.pos_drop(swin.patch_embed(x))))  # B·S t' H' W' D
        x = self.snippet_dropout(x.mean(dim=(2, 3))).mean(dim=1)  # B·S D
        tokens = self.proj(x).view(b, s, 1, self.dim)
        return tokens, self.time_centres(t, device=video.device)


def build_video(settings: VideoSettings, snippets: int, dim: int) -> VideoBackbone:
    """The video branch ``settings`` names: one Swin pass over the clip, or one per snippet."""
    if settings.per_snippet:
        return SnippetVideoBackbone(settings, snippets, dim)
    return VideoBackbone(settings)
