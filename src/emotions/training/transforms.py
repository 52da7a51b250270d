"""Per-sample transforms between the cache and the model: crops, flips and SpecAugment.

Train, evaluation and serving build their samples from these same functions; what differs is
only whether a random generator is passed (train) or not (the deterministic centre view).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


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


def crop_video(frames: np.ndarray, crop: int, rng: np.random.Generator | None) -> np.ndarray:
    """(T, R, R, 3) → (T, crop, crop, 3): the same random crop and flip for all T frames when
    ``rng`` is given (training), else the centre crop."""
    size = frames.shape[1]
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the cached frames ({size})")
    if rng is None:
        top = left = (size - crop) // 2
        return np.ascontiguousarray(frames[:, top : top + crop, left : left + crop])
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    out = frames[:, top : top + crop, left : left + crop]
    if rng.random() < 0.5:
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
    frames: torch.Tensor, crop: int, rng: np.random.Generator | None
) -> torch.Tensor:
    """:func:`crop_video` for channels-first (T, 3, R, R) frames (the jpeg cache's decoded
    tensors): the same draws from ``rng``, so both cache formats get the same crop and flip."""
    return apply_crop(frames, crop, draw_crop(frames.shape[2], crop, rng))


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cropped (T, C, H, W) uint8 video and (time, mels) float32 audio for one clip.

    ``frames`` is the raw cache's (T, R, R, 3) array or the jpeg cache's (T, 3, R, R) tensor.

    ``rng`` given means training: random crop and flip, and ``spec_augment`` if set.
    """
    if isinstance(frames, torch.Tensor):  # decoded JPEG frames, channels-first
        video = crop_video_chw(frames, crop, rng)
    else:
        video = torch.from_numpy(crop_video(frames, crop, rng)).permute(0, 3, 1, 2).contiguous()
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
