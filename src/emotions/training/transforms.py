"""Per-sample transforms between the cache and the model: crops, flips and SpecAugment.

Train, evaluation and serving build their samples from these same functions; what differs is
only whether a random generator is passed (train) or not (the deterministic centre view).

Two spatial pipelines (``train.spatial``): ``ours`` takes a random ``crop`` square out of the
cached square with a flip at p 0.5 (the centre crop to evaluate); ``authors`` is the sampling of
``Preprocessing`` in the authors' transforms/spatial.py (XuecWu/eMotions, AV-CANet), see
:func:`authors_view`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

Spatial = Literal["ours", "authors"]


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment masks (Park et al. 2019) drawn inside the valid part of the log-mel.

    Widths are maxima; each mask's width is uniform in [0, max] (torchaudio's semantics),
    capped by the clip's valid length so a short clip is not wiped out.
    """

    time_mask: int = 48  # frames (10 ms each)
    freq_mask: int = 24  # mel bins
    time_masks: int = 2
    freq_masks: int = 2

    def apply(self, audio: torch.Tensor, valid: int, seed: int) -> torch.Tensor:
        """Mask ``audio`` (time, mels) in place over its first ``valid`` rows; masked = 0.

        torchaudio's transforms draw the masks on all-ones proxies, (1, valid) for time and
        (mels, 1) for frequency: the draws depend only on the masked axis' length, so the masks
        are the ones the transforms would apply to the spectrogram, and one ``masked_fill_``
        then applies all of them in one pass over the spectrogram instead of four.
        """
        if valid <= 0:
            return audio
        mels = audio.shape[1]
        time_mask = _masking("time", min(self.time_mask, valid))
        freq_mask = _masking("freq", min(self.freq_mask, mels))
        keep_time, keep_freq = torch.ones(1, valid), torch.ones(mels, 1)
        # torchaudio draws from the global CPU generator: seed it for this sample and restore
        # it afterwards (torch.manual_seed would also seed CUDA/XPU, ~1 ms of lazy-call work).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            for _ in range(self.time_masks):
                keep_time = time_mask(keep_time)
            for _ in range(self.freq_masks):
                keep_freq = freq_mask(keep_freq)
        dropped = (keep_time.T == 0) | (keep_freq.T == 0)  # (valid, mels)
        audio[:valid].masked_fill_(dropped, 0.0)
        return audio


@functools.lru_cache(maxsize=512)
def _masking(axis: str, width: int) -> torch.nn.Module:
    import torchaudio.transforms as transforms

    return transforms.TimeMasking(width) if axis == "time" else transforms.FrequencyMasking(width)


def crop_video(
    frames: np.ndarray, crop: int, rng: np.random.Generator | None, *, augment: bool = True
) -> np.ndarray:
    """(T, R, R, 3) → (T, crop, crop, 3): the same random crop and flip for all T frames when
    ``rng`` is given (training), else the centre crop. ``augment`` False keeps the random crop
    but never flips (a random view to score, not to train on)."""
    size = frames.shape[1]
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the cached frames ({size})")
    if rng is None:
        top = left = (size - crop) // 2
        return np.ascontiguousarray(frames[:, top : top + crop, left : left + crop])
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    out = frames[:, top : top + crop, left : left + crop]
    if rng.random() < 0.5 and augment:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def draw_crop(size: int, crop: int, rng: np.random.Generator | None) -> tuple[int, int, bool]:
    """(top, left, flip) of a crop: drawn from ``rng`` in :func:`crop_video`'s order (top and
    left, then the flip), the centre and no flip without one."""
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the cached frames ({size})")
    if rng is None:
        return (size - crop) // 2, (size - crop) // 2, False
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    return top, left, bool(rng.random() < 0.5)


def apply_crop(frames: torch.Tensor, crop: int, box: tuple[int, int, bool]) -> torch.Tensor:
    """Crop (and flip) channels-first (..., 3, R, R) frames on whatever device they are."""
    top, left, flip = box
    out = frames[..., top : top + crop, left : left + crop]
    return out.flip(-1) if flip else out.contiguous()


def crop_video_chw(
    frames: torch.Tensor, crop: int, rng: np.random.Generator | None, *, augment: bool = True
) -> torch.Tensor:
    """:func:`crop_video` for channels-first (T, 3, R, R) frames (the jpeg cache's decoded
    tensors): the same draws from ``rng``, so both cache formats get the same crop and flip."""
    top, left, flip = draw_crop(frames.shape[2], crop, rng)
    return apply_crop(frames, crop, (top, left, flip and augment))


# The authors' Preprocessing (AV-CANet/transforms/spatial.py): RandomCenterCornerCrop's five
# positions, then RandomApply(RandomChoice([HorizontalFlip, RandomRotation(20),
# BrightnessJitter(0.5)]), prob=0.3).
AUTHORS_POSITIONS = ("c", "tl", "tr", "bl", "br")
AUTHORS_AUGMENT_P = 0.3
AUTHORS_AUGMENTS = ("flip", "rotate", "brightness")
AUTHORS_DEGREES = 20.0
AUTHORS_BRIGHTNESS = 0.5


@dataclass(frozen=True)
class AuthorsDraw:
    """One clip's draws of the authors' training pipeline (shared by all its frames)."""

    position: str  # one of AUTHORS_POSITIONS
    augment: str | None  # one of AUTHORS_AUGMENTS, or None (p 0.7)
    angle: float  # degrees, counter-clockwise, U(−20, 20)
    factor: float  # brightness factor, U(0.5, 1)


def draw_authors(rng: np.random.Generator) -> AuthorsDraw:
    """Every draw, always in this order, so the generator's stream never depends on the
    outcome (the SpecAugment draws that follow stay aligned across clips)."""
    position = AUTHORS_POSITIONS[int(rng.integers(len(AUTHORS_POSITIONS)))]
    apply = rng.random() < AUTHORS_AUGMENT_P
    choice = AUTHORS_AUGMENTS[int(rng.integers(len(AUTHORS_AUGMENTS)))]
    angle = float(rng.uniform(-AUTHORS_DEGREES, AUTHORS_DEGREES))
    factor = float(rng.uniform(AUTHORS_BRIGHTNESS, 1.0))
    return AuthorsDraw(position, choice if apply else None, angle, factor)


def square_box(height: int, width: int, position: str) -> tuple[int, int, int]:
    """(top, left, side) of the square of the full short side at ``position``
    (CenterCornerCrop with size = the short side, as RandomCenterCornerCrop calls it)."""
    side = min(height, width)
    top = {"c": (height - side) // 2, "tl": 0, "tr": 0, "bl": height - side, "br": height - side}
    left = {"c": (width - side) // 2, "tl": 0, "bl": 0, "tr": width - side, "br": width - side}
    return top[position], left[position], side


def authors_view(
    frames: torch.Tensor, crop: int, rng: np.random.Generator | None, *, augment: bool = True
) -> torch.Tensor:
    """(T, 3, H, W) uint8 → (T, 3, crop, crop) uint8, the authors' spatial sampling.

    Training (``rng`` given): the square of the full short side at the centre or one of the
    four corners, resized (bilinear) to ``crop``; then, with p 0.3, one of a horizontal flip, a
    rotation by U(−20°, 20°) or a brightness factor U(0.5, 1). Evaluation: the centre square of
    the full short side, resized (``get_spatial_transform_test``: Scale then a centre crop).
    One draw per clip, as VAANet's VE8Dataset draws them (``randomize_parameters`` once per
    ``__getitem__``); the authors' own loader is not published, so per clip is inferred.

    Approximated on cached frames: the decode-once cache keeps only the centre square of the
    short side, so there every position is that square (their corners are the top and bottom
    squares of a portrait frame, the left and right of a landscape one). The position is still
    drawn, so the generator's stream and the 1-in-5 centre share match theirs; frames that
    keep the whole picture get the exact corners.

    ``augment`` False keeps the random position but adds no flip, rotation or brightness: the
    view ``get_spatial_transform_val`` (Preprocessing(is_aug=False, center=False)) scores the
    authors' every-epoch test with.
    """
    draw = draw_authors(rng) if rng is not None else AuthorsDraw("c", None, 0.0, 1.0)
    if not augment:
        draw = AuthorsDraw(draw.position, None, draw.angle, draw.factor)
    top, left, side = square_box(frames.shape[-2], frames.shape[-1], draw.position)
    out = frames[..., top : top + side, left : left + side]
    if side != crop:
        out = TF.resize(out, [crop, crop], InterpolationMode.BILINEAR, antialias=True)
    if draw.augment == "flip":
        out = out.flip(-1)
    elif draw.augment == "rotate":
        out = TF.rotate(out, draw.angle, InterpolationMode.BILINEAR, fill=[0.0])
    elif draw.augment == "brightness":
        out = (out.float() * draw.factor).round_().clamp_(0, 255).to(torch.uint8)
    return out.contiguous()


def normalize_fbank(fbank: np.ndarray, valid: int, mean: float, std: float) -> np.ndarray:
    """float32 copy with the valid rows standardised; padding stays 0 (= the mean)."""
    out = np.zeros(fbank.shape, dtype=np.float32)
    out[:valid] = (fbank[:valid].astype(np.float32) - mean) / std
    return out


def decode_deferred(batch: dict, device: torch.device) -> torch.Tensor:
    """A deferred batch's frames decoded in one call on ``device`` → (B, T, 3, crop, crop).

    On CUDA this is nvJPEG's batched decode (``decode_jpeg(..., device="cuda")``): the loader
    workers then only slice bytes, and the host never touches a pixel. The crop box each
    sample drew in its worker (top, left, flip, crop) is applied after decoding, so on a CPU
    the result equals decoding in the workers bit for bit.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    parts: list[torch.Tensor] = []
    counts = []
    for blob, lengths in zip(batch["jpeg"], batch["jpeg_bytes"], strict=True):
        pieces = blob.split(lengths.tolist())
        parts.extend(pieces)
        counts.append(len(pieces))
    decoded = decode_jpeg(parts, mode=ImageReadMode.RGB, device=device)
    clips, start = [], 0
    for count, (top, left, flip, crop) in zip(counts, batch["crop_box"].tolist(), strict=True):
        frames = torch.stack(decoded[start : start + count])
        clips.append(apply_crop(frames, crop, (top, left, bool(flip))))
        start += count
    return torch.stack(clips)


def make_sample(
    frames: np.ndarray | torch.Tensor,
    fbank: np.ndarray,
    audio_frames: int,
    *,
    crop: int,
    rng: np.random.Generator | None,
    mean: float,
    std: float,
    normalize: bool = True,
    spec_augment: SpecAugment | None = None,
    spatial: Spatial = "ours",
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cropped (T, C, H, W) uint8 video and (time, mels) float32 audio for one clip.

    ``frames`` is the raw cache's (T, R, R, 3) array or the jpeg cache's (T, 3, R, R) tensor.

    ``rng`` given means training: the ``spatial`` pipeline's random view, and ``spec_augment``
    if set; with ``augment`` False the view is random but not augmented (no flip, rotation or
    brightness).
    """
    if spatial == "authors":
        chw = frames if isinstance(frames, torch.Tensor) else _channels_first(frames)
        video = authors_view(chw, crop, rng, augment=augment)
    elif isinstance(frames, torch.Tensor):  # decoded JPEG frames, channels-first
        video = crop_video_chw(frames, crop, rng, augment=augment)
    else:
        cropped = crop_video(frames, crop, rng, augment=augment)
        video = torch.from_numpy(cropped).permute(0, 3, 1, 2).contiguous()
    return video, make_audio(
        fbank,
        audio_frames,
        rng=rng,
        mean=mean,
        std=std,
        normalize=normalize,
        spec_augment=spec_augment,
    )


def make_audio(
    fbank: np.ndarray,
    audio_frames: int,
    *,
    rng: np.random.Generator | None,
    mean: float,
    std: float,
    normalize: bool = True,
    spec_augment: SpecAugment | None = None,
) -> torch.Tensor:
    """The (time, mels) float32 audio of one clip: normalised, SpecAugment-ed with ``rng``."""
    if normalize:
        audio_np = normalize_fbank(fbank, audio_frames, mean, std)
    else:
        audio_np = np.array(fbank, dtype=np.float32)
    audio = torch.from_numpy(audio_np)
    if rng is not None and spec_augment is not None:
        audio = spec_augment.apply(audio, audio_frames, int(rng.integers(2**63)))
    return audio


def _channels_first(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) array → (T, 3, H, W) tensor (a copy: the cache is a read-only memmap)."""
    return torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2)
