"""CachedClipDataset: the sample contract, cache round trip, augmentation, skipped clips."""

from __future__ import annotations

import pickle
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from emotions.cache.format import CacheError
from emotions.config import AudioFeatures, PreprocessConfig
from emotions.media.decode import decode_clip
from emotions.media.encode import write_clip
from emotions.media.workers import Outcome
from emotions.stages.preprocess import COMPLETE, write_cache
from emotions.training.dataset import CachedClipDataset, SpecAugment
from emotions.training.transforms import crop_video

CONFIG = PreprocessConfig(
    num_frames=4, resize=32, crop=24, audio=AudioFeatures(n_mels=32, target_frames=160)
)
CLASSES = ["Tension", "Excitation", "Fear"]  # taxonomy order, deliberately not alphabetical
SPLITS = ["train", "train", "train", "val", "val", "test"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Six clips (one without audio, one 1 s long) cached through the real writer."""
    base = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(3)
    rows = []
    for i, split in enumerate(SPLITS):
        frames = rng.integers(0, 255, (10, 40, 36, 3), dtype=np.uint8)
        seconds = 1.0 if i == 1 else 2.0
        audio = None if i == 4 else 0.3 * rng.standard_normal((1, int(16000 * seconds)))
        path = f"clip{i}.mp4"
        write_clip(base / "data" / path, frames, 10, audio, 16000)
        rows.append((f"c{i}", path, CLASSES[i % 3], "negative", 1.0, split))
    split = pd.DataFrame(
        rows, columns=["clip_id", "path", "label", "polarity", "agreement", "split"]
    )
    split_file = base / "split.parquet"
    split.to_parquet(split_file, index=False)
    decoded = {
        row.clip_id: decode_clip(base / "data" / row.path, CONFIG) for row in split.itertuples()
    }
    outcomes = (Outcome((r.clip_id, r.path), value=decoded[r.clip_id]) for r in split.itertuples())
    train_ids = set(split.loc[split["split"] == "train", "clip_id"])
    write_cache(base / "cache", outcomes, clips=split, train_ids=train_ids, config=CONFIG, meta={})
    return base / "cache", split_file, split, decoded


def test_eval_sample_is_the_decoded_clip_centre_cropped_and_normalised(cache):
    cache_dir, split_file, _, decoded = cache
    stats = pd.read_json(cache_dir / "stats.json", typ="series")
    dataset = CachedClipDataset(cache_dir, split_file, "val", crop=24, train=False, classes=CLASSES)
    assert len(dataset) == 2 and dataset.clip_ids == ["c3", "c4"]
    for i, clip_id in enumerate(dataset.clip_ids):
        sample = dataset[i]
        clip = decoded[clip_id]
        assert sample["clip_id"] == clip_id
        assert sample["video"].dtype == torch.uint8 and sample["video"].shape == (4, 3, 24, 24)
        expected = torch.from_numpy(clip.frames[:, 4:28, 4:28]).permute(0, 3, 1, 2)
        assert torch.equal(sample["video"], expected)
        assert sample["audio"].dtype == torch.float32 and sample["audio"].shape == (160, 32)
        valid = clip.audio_frames
        normalised = (clip.fbank[:valid] - stats["fbank_mean"]) / stats["fbank_std"]
        np.testing.assert_allclose(sample["audio"][:valid].numpy(), normalised, atol=5e-3)
        assert not sample["audio"][valid:].any()
        assert sample["has_audio"].item() == clip.has_audio
        assert sample["label"].dtype == torch.int64
        assert (
            CLASSES[sample["label"].item()]
            == ["Tension", "Excitation", "Fear"][int(clip_id[1:]) % 3]
        )
    assert not dataset[1]["has_audio"] and not dataset[1]["audio"].any()


def test_train_samples_are_random_crops_flips_and_masked(cache):
    cache_dir, split_file, _, decoded = cache
    augment = SpecAugment(time_mask=30, freq_mask=8)
    plain = CachedClipDataset(cache_dir, split_file, "train", crop=24, train=False, classes=CLASSES)
    train = CachedClipDataset(
        cache_dir, split_file, "train", crop=24, train=True, classes=CLASSES, spec_augment=augment
    )
    offsets, flips = set(), 0
    for _ in range(12):
        sample = train[0]
        frames = decoded["c0"].frames
        assert sample["video"].shape == (4, 3, 24, 24)
        video = sample["video"].permute(0, 2, 3, 1).numpy()
        found = [
            (top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
            if np.array_equal(
                video,
                frames[:, top : top + 24, left : left + 24][:, :, ::-1]
                if flip
                else frames[:, top : top + 24, left : left + 24],
            )
        ]
        assert found, "a train sample must be one crop (and maybe flip) of all T frames"
        offsets.add(found[0][:2])
        flips += found[0][2]
    assert len(offsets) > 3 and 0 < flips < 12
    # SpecAugment: whole masked time rows and mel columns inside the valid part only.
    reference = plain[0]["audio"]
    valid = int(train.audio_frames[0])
    masked_rows = masked_cols = 0
    for _ in range(6):
        audio = train[0]["audio"]
        changed = audio != reference
        assert not changed[valid:].any()
        assert torch.all(audio[changed] == 0)
        masked_rows += int((audio[:valid] == 0).all(dim=1).sum())
        masked_cols += int((audio[:valid] == 0).all(dim=0).sum())
    assert masked_rows > 0 and masked_cols > 0
    assert not (reference[:valid] == 0).all(dim=1).any()  # eval: no masks
    # Short clip (1 s of sound, stretched over its rows): masks stay inside the valid rows.
    short = train[1]["audio"]
    assert not short[int(train.audio_frames[1]) :].any()


def test_augmentation_is_reproducible_from_the_seed(cache):
    cache_dir, split_file, _, _ = cache
    kwargs = {"crop": 24, "train": True, "classes": CLASSES, "spec_augment": SpecAugment()}
    first = CachedClipDataset(cache_dir, split_file, "train", seed=5, **kwargs)
    second = CachedClipDataset(cache_dir, split_file, "train", seed=5, **kwargs)
    other = CachedClipDataset(cache_dir, split_file, "train", seed=6, **kwargs)
    a, b, c = ([d[i]["audio"] for i in range(3)] for d in (first, second, other))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


def test_set_epoch_makes_augmentation_independent_of_order_and_workers(cache):
    cache_dir, split_file, _, _ = cache
    kwargs = {"crop": 24, "train": True, "classes": CLASSES, "spec_augment": SpecAugment()}
    dataset = CachedClipDataset(cache_dir, split_file, "train", seed=1, **kwargs)
    dataset.set_epoch(3)
    in_order = [dataset[i] for i in range(3)]
    loader = DataLoader(dataset, batch_size=None, num_workers=1, sampler=[2, 0, 1])
    shuffled = {sample["clip_id"]: sample for sample in loader}
    for sample in in_order:
        other = shuffled[sample["clip_id"]]
        assert torch.equal(sample["video"], other["video"])
        assert torch.equal(sample["audio"], other["audio"])
    dataset.set_epoch(4)
    assert not torch.equal(dataset[0]["audio"], in_order[0]["audio"])


def test_dataloader_workers_open_the_cache_themselves(cache):
    cache_dir, split_file, _, _ = cache
    dataset = CachedClipDataset(
        cache_dir, split_file, "train", crop=24, train=True, classes=CLASSES
    )
    dataset[0]  # opens the memmaps in this process
    assert len(pickle.dumps(dataset)) < 10_000  # the arrays are not pickled
    loader = DataLoader(dataset, batch_size=3, num_workers=1)
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 4, 3, 24, 24) and batch["audio"].shape == (3, 160, 32)
    assert batch["label"].tolist() == [0, 1, 2] and batch["clip_id"] == ["c0", "c1", "c2"]
    assert batch["has_audio"].dtype == torch.bool


def test_clips_missing_from_the_cache_are_skipped_with_a_warning(cache, tmp_path):
    cache_dir, _, split, _ = cache
    extra = pd.DataFrame(
        [("c9", "gone.mp4", "Excitation", "positive", 1.0, "train")], columns=split.columns
    )
    split_file = tmp_path / "split.parquet"
    pd.concat([split, extra]).to_parquet(split_file, index=False)
    with pytest.warns(UserWarning, match="1 of 4 'train' clips are not in the cache"):
        dataset = CachedClipDataset(cache_dir, split_file, "train", crop=24, train=False)
    assert len(dataset) == 3 and dataset.missing == 1 and "c9" not in dataset.clip_ids
    # Without `classes`, the split file's labels in sorted order.
    assert dataset.classes == ["Excitation", "Fear", "Tension"]


def test_incomplete_cache_and_bad_arguments_are_refused(cache, tmp_path):
    cache_dir, split_file, _, _ = cache
    partial = tmp_path / "cache"
    shutil.copytree(cache_dir, partial)
    (partial / COMPLETE).unlink()
    with pytest.raises(CacheError, match="incomplete cache"):
        CachedClipDataset(partial, split_file, "train", crop=24, train=False)
    with pytest.raises(ValueError, match="crop 40 exceeds"):
        CachedClipDataset(cache_dir, split_file, "train", crop=40, train=False)
    with pytest.raises(ValueError, match="not in classes"):
        CachedClipDataset(
            cache_dir, split_file, "train", crop=24, train=False, classes=["Excitation"]
        )
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no clips in split 'dev'"):
        CachedClipDataset(cache_dir, split_file, "dev", crop=24, train=False)


def test_crop_video_centre_and_bounds():
    frames = np.arange(2 * 6 * 6 * 3, dtype=np.uint8).reshape(2, 6, 6, 3)
    np.testing.assert_array_equal(crop_video(frames, 4, None), frames[:, 1:5, 1:5])
    with pytest.raises(ValueError, match="larger than the cached frames"):
        crop_video(frames, 8, None)
