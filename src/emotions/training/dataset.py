"""A torch Dataset over the decode-once cache.

Reading a sample is a slice of two memory-mapped arrays (well under a millisecond), so data
loading never limits training. The arrays are opened lazily in whichever process first reads a
sample (each DataLoader worker opens its own), which keeps the dataset cheap to pickle and
avoids sharing file handles across fork/spawn.

Sample contract (what the model and the collate function expect)::

    {"video": uint8 (T, C, crop, crop), "audio": float32 (target_frames, n_mels),
     "has_audio": bool tensor, "audio_frames": int64 tensor (fbank rows holding sound),
     "label": int64 index into ``classes``, "clip_id": str}

A deferred-decoding sample (jpeg cache, ``defer_decode``) carries ``"jpeg"`` (the frames'
bytes), ``"jpeg_bytes"`` (their lengths) and ``"crop_box"`` (top, left, flip, crop) instead
of ``"video"``; :func:`emotions.training.transforms.decode_deferred` decodes the batch on the
device. The transforms (:mod:`emotions.training.transforms`) are plain functions, so the
predictor and the benchmarks apply exactly what training applies to cached clips.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from emotions.cache.format import (
    FBANK,
    FRAMES,
    INDEX,
    STATS,
    CacheError,
    cache_layout,
    require_complete,
)
from emotions.cache.shards import ShardReader
from emotions.config import Params
from emotions.errors import StageError, require_input
from emotions.layout import RunPaths
from emotions.training.transforms import (
    Spatial,
    SpecAugment,
    draw_crop,
    make_audio,
    make_sample,
)


def collate_deferred(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, except "jpeg" (one 1-D byte tensor per clip, of varying length)."""
    from torch.utils.data import default_collate

    batch = default_collate([{k: v for k, v in s.items() if k != "jpeg"} for s in samples])
    batch["jpeg"] = [s["jpeg"] for s in samples]
    return batch


class SplitFileError(StageError, ValueError):
    """A split file that does not fit the run (unknown labels, an empty split)."""


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
        spatial: Spatial = "ours",
        random_views: bool = False,
    ) -> None:
        """``classes`` fixes the label order (pass the taxonomy's); without it the sorted
        labels of the whole split file are used, so train/val/test agree with each other."""
        self.cache_dir = require_complete(cache_dir)
        self.crop, self.train = crop, train
        self.normalize, self.spec_augment, self.seed = normalize, spec_augment, seed
        # jpeg cache only: hand out the encoded frames and the crop box, for the training
        # process to decode in one batch on its device (cache_store.decode_deferred).
        self.defer_decode = defer_decode
        # The spatial pipeline (emotions.training.transforms): ours or the authors'.
        self.spatial = spatial
        if defer_decode and spatial != "ours":
            raise ValueError("deferred (on-device) decoding applies only the 'ours' crop")
        # Not training, but a random view per (epoch, clip): temporal position and crop drawn
        # as in training, without flips or other augmentation (the authors' protocol scores
        # its test list so every epoch, with Preprocessing(is_aug=False, center=False)).
        self.random_views = random_views
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

        require_input(split_file, "emotions variants")
        table = pd.read_parquet(split_file, columns=["clip_id", "label", "split"])
        self.classes = list(classes) if classes is not None else sorted(table["label"].unique())
        unknown = sorted(set(table["label"]) - set(self.classes))
        if unknown:
            raise SplitFileError(
                f"{split_file}: labels {unknown} are not in classes {self.classes}"
            )
        table["clip_id"] = table["clip_id"].astype(str)
        chosen = table[table["split"] == split]
        if chosen.empty:
            raise SplitFileError(f"{split_file}: no clips in split '{split}'")
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
        """Sample ``key``: an index, or an ``(epoch, index)`` pair (emotions.training.samplers).

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
        rng = self._generator(i, epoch) if self.train or self.random_views else None
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
            spatial=self.spatial,
            augment=self.train,
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


def decodes_on_device(
    setting: Literal["auto", "worker", "device"], device: torch.device | None, spatial: str
) -> bool:
    """Whether a jpeg cache's training frames are decoded batched on the training device.

    auto: on CUDA with our crop, where nvJPEG takes the decoding off the loader workers (on a
    CPU the workers are the same cores, and the authors' crops transform decoded frames on
    the host).
    """
    if setting != "auto":
        return setting == "device"
    return device is not None and device.type == "cuda" and spatial == "ours"


def build_dataset(
    params: Params,
    run: str,
    paths: RunPaths,
    split: str,
    train: bool,
    *,
    random_views: bool = False,
    device: torch.device | None = None,
) -> CachedClipDataset:
    """The run's ``split`` as the params configure it (augmented only when ``train``; a random
    unaugmented view per epoch with ``random_views``). ``device`` is where the batches train:
    it decides ``train.jpeg_decode: auto``."""
    spec = params.run(run)
    classes = list(params.taxonomy_for(spec.dataset))
    augment = None
    if train and (params.train.spec_augment_time or params.train.spec_augment_freq):
        augment = SpecAugment(
            time_mask=params.train.spec_augment_time, freq_mask=params.train.spec_augment_freq
        )
    return CachedClipDataset(
        paths.cache,
        paths.split,
        split,
        crop=params.preprocess.crop,
        train=train,
        spec_augment=augment,
        seed=params.seed,
        classes=classes,
        # Deferred decoding for the training split only: evaluation keeps plain batches.
        defer_decode=train
        and params.preprocess.cache_format == "jpeg"
        and decodes_on_device(params.train.jpeg_decode, device, params.train.spatial),
        spatial=params.train.spatial,
        random_views=random_views and not train,
    )
