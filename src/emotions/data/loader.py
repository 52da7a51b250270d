"""A torch Dataset over the decode-once cache.

Reading a sample is a slice of two memory-mapped arrays (well under a millisecond), so data
loading never limits training. The arrays are opened lazily in whichever process first reads a
sample (each DataLoader worker opens its own), which keeps the dataset cheap to pickle and
avoids sharing file handles across fork/spawn.

Sample contract (what the model and the collate function expect)::

    {"video": uint8 (T, C, crop, crop), "audio": float32 (target_frames, n_mels),
     "has_audio": bool, "label": int64 index into ``classes``, "clip_id": str}

The augmentation (:func:`make_sample`) is a plain function so the benchmark and anything that
decodes on the fly apply exactly what training applies to cached clips.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from emotions.data.cache_store import ShardReader
from emotions.data.preprocess import (
    FBANK,
    FRAMES,
    INDEX,
    STATS,
    CacheError,
    require_complete,
)
from emotions.data.snippets import SnippetLayout


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


def collate_deferred(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, except "jpeg" (one 1-D byte tensor per clip, of varying length)."""
    from torch.utils.data import default_collate

    batch = default_collate([{k: v for k, v in s.items() if k != "jpeg"} for s in samples])
    batch["jpeg"] = [s["jpeg"] for s in samples]
    return batch


def cache_layout(stats: dict[str, Any]) -> SnippetLayout:
    """The snippet layout a cache was written with (stats.json's config and frame shape).

    A cache written before snippets existed holds one view of segment-centre frames."""
    config = stats.get("config") or {}
    cached = int(stats["shapes"]["frames"][1])
    length = int(config.get("snippet_frames", 1))
    positions = int(config.get("positions", 1))
    view = cached // positions
    if view * positions != cached or view % length:
        raise CacheError(
            f"cached frames per clip ({cached}) do not fit {positions} positions × "
            f"snippets of {length} frames (stats.json)"
        )
    return SnippetLayout(view // length, length, positions)


@dataclass
class _Arrays:
    frames: np.ndarray | ShardReader  # raw memmap, or the JPEG shards (cache_format jpeg)
    fbank: np.ndarray


class CachedClipDataset(Dataset):
    """The clips of one split of one variant, read from a finished cache."""

    def __init__(
        self,
        cache_dir: str | Path,
        split_file: str | Path,
        split: str,
        *,
        crop: int,
        train: bool,
        classes: list[str] | None = None,
        normalize: bool = True,
        spec_augment: SpecAugment | None = None,
        seed: int = 0,
        defer_decode: bool = False,
    ) -> None:
        """``classes`` fixes the label order (pass the taxonomy's); without it the sorted
        labels of the whole split file are used, so train/val/test agree with each other."""
        self.cache_dir = require_complete(cache_dir)
        self.crop, self.train = crop, train
        self.normalize, self.spec_augment, self.seed = normalize, spec_augment, seed
        # jpeg cache only: hand out the encoded frames and the crop box, for the training
        # process to decode in one batch on its device (cache_store.decode_deferred).
        self.defer_decode = defer_decode
        stats = json.loads((self.cache_dir / STATS).read_text(encoding="utf-8"))
        self.mean, self.std = float(stats["fbank_mean"]), float(stats["fbank_std"])
        cached_size = int(stats["shapes"]["frames"][2])
        self.cache_format = stats.get("cache_format", "raw")
        self.cached_size = cached_size
        self.layout = cache_layout(stats)
        # Evaluation: the cached position every segment's snippet comes from (None: the
        # centre); evaluate sets it to each of its views in turn. Training draws its own.
        self.view: int | None = None
        if defer_decode and self.cache_format != "jpeg":
            raise ValueError(f"{cache_dir}: deferred decoding needs a jpeg cache, not raw")
        if crop > cached_size:
            raise ValueError(f"crop {crop} exceeds the cached frame size {cached_size}")

        table = pd.read_parquet(split_file, columns=["clip_id", "label", "split"])
        self.classes = list(classes) if classes is not None else sorted(table["label"].unique())
        unknown = sorted(set(table["label"]) - set(self.classes))
        if unknown:
            raise ValueError(f"{split_file}: labels {unknown} are not in classes {self.classes}")
        table["clip_id"] = table["clip_id"].astype(str)
        chosen = table[table["split"] == split]
        if chosen.empty:
            raise ValueError(f"{split_file}: no clips in split '{split}'")
        columns = ["clip_id", "row", "audio_frames"]
        if self.cache_format == "jpeg":
            columns += ["shard", "offset", "jpeg_bytes"]
        index = pd.read_parquet(self.cache_dir / INDEX, columns=columns)
        merged = chosen.merge(index, on="clip_id", how="inner")
        self.missing = len(chosen) - len(merged)
        if self.missing:
            warnings.warn(
                f"{self.missing} of {len(chosen)} '{split}' clips are not in the cache "
                f"{self.cache_dir} (failed to decode, see failures.csv); skipping them",
                stacklevel=2,
            )
        if merged.empty:
            raise CacheError(f"{self.cache_dir}: none of the '{split}' clips are cached")
        position = {name: i for i, name in enumerate(self.classes)}
        self.clip_ids: list[str] = merged["clip_id"].astype(str).tolist()
        self.rows = merged["row"].to_numpy(np.int64)
        self.audio_frames = merged["audio_frames"].to_numpy(np.int64)
        self.labels = merged["label"].map(position).to_numpy(np.int64)
        if self.cache_format == "jpeg":
            self.shards = merged["shard"].astype(str).tolist()
            self.offsets = merged["offset"].to_numpy(np.int64)
            self.jpeg_bytes = [list(map(int, sizes)) for sizes in merged["jpeg_bytes"]]
        self._arrays: _Arrays | None = None
        self.epoch: int | None = None
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``key``: an index, or an ``(epoch, index)`` pair (emotions.data.samplers).

        With a pair the augmentation is a function of (seed, epoch, index) even in persistent
        DataLoader workers, which never see a later ``set_epoch``.
        """
        epoch = self.epoch
        if isinstance(key, tuple):
            epoch, i = (int(v) for v in key)
        else:
            i = int(key)
        arrays = self._open()
        row = int(self.rows[i])
        valid = int(self.audio_frames[i])
        rng = self._generator(i, epoch) if self.train else None
        choice = self._choice(rng)
        keep = None if self.layout.positions == 1 else self.layout.frame_rows(choice).tolist()
        common = {
            "has_audio": torch.tensor(valid > 0),
            "audio_frames": torch.tensor(valid, dtype=torch.int64),
            "label": torch.tensor(int(self.labels[i]), dtype=torch.int64),
            "clip_id": self.clip_ids[i],
        }
        if self.defer_decode:
            assert isinstance(arrays.frames, ShardReader)
            box = draw_crop(self.cached_size, self.crop, rng)  # crop_video's draw order
            audio = make_audio(
                arrays.fbank[row],
                valid,
                rng=rng,
                mean=self.mean,
                std=self.std,
                normalize=self.normalize,
                spec_augment=self.spec_augment,
            )
            jpeg, lengths = arrays.frames.encoded(
                self.shards[i], int(self.offsets[i]), self.jpeg_bytes[i], keep
            )
            return {
                "jpeg": jpeg,
                "jpeg_bytes": torch.tensor(lengths, dtype=torch.int64),
                "crop_box": torch.tensor([*box, self.crop], dtype=torch.int64),
                "audio": audio,
                **common,
            }
        if isinstance(arrays.frames, ShardReader):  # decoded here, in the loader's worker
            frames = arrays.frames.frames(
                self.shards[i], int(self.offsets[i]), self.jpeg_bytes[i], keep
            )
        else:
            frames = self.layout.select(arrays.frames[row], choice)
        video, audio = make_sample(
            frames,
            arrays.fbank[row],
            valid,
            crop=self.crop,
            rng=rng,
            mean=self.mean,
            std=self.std,
            normalize=self.normalize,
            spec_augment=self.spec_augment,
        )
        return {"video": video, "audio": audio, **common}

    @property
    def collate_fn(self):
        """The DataLoader's collate: deferred samples keep their variable-length JPEG bytes
        as a list; everything else is torch's default."""
        return collate_deferred if self.defer_decode else None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # reopened (memory-mapped) in the receiving process
        state["_rng"] = None
        return state

    def _open(self) -> _Arrays:
        if self._arrays is None:
            self._arrays = _Arrays(
                frames=ShardReader(self.cache_dir)
                if self.cache_format == "jpeg"
                else np.load(self.cache_dir / FRAMES, mmap_mode="r"),
                fbank=np.load(self.cache_dir / FBANK, mmap_mode="r"),
            )
        return self._arrays

    def _choice(self, rng: np.random.Generator | None) -> np.ndarray:
        """The cached position of each segment's snippet (S,).

        Training draws one per segment (temporal jitter) before the crop, so both cache
        formats see the same draws; with one position nothing is drawn, and the random
        streams are those of a cache without positions. Evaluation takes ``view``."""
        layout = self.layout
        if rng is not None and layout.positions > 1:
            return layout.draw(rng)
        return layout.fixed(layout.centre if self.view is None else self.view)

    def set_epoch(self, epoch: int) -> None:
        """Make augmentation a function of (seed, epoch, index) alone.

        Call it before building each epoch's DataLoader (non-persistent workers receive a fresh
        copy): the same sample then gets the same crop, flip and masks whatever the worker
        count or the order, so a resumed run sees exactly what an uninterrupted one saw.
        """
        self.epoch = epoch

    def _generator(self, i: int, epoch: int | None) -> np.random.Generator:
        if epoch is not None:
            return np.random.default_rng([self.seed, epoch, i])
        # No epoch given: one stream per process. torch seeds every DataLoader worker
        # differently each epoch, so mixing its seed in still varies the augmentation.
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, torch.initial_seed()])
        return self._rng
