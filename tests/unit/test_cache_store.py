"""The jpeg cache format: JPEG frames in bounded, content-named shards, decoded by the loader.

Real clips (encoded with the project's writer, decoded with decode_clip) go through the real
cache writer in both formats; the jpeg samples must match the raw ones within JPEG error, the
shards must stay near their size bound, a rerun with one changed clip must rewrite only that
clip's shard, and the train stage must train on a jpeg cache of the small corpus.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from smallcorpus import DATASET, RUN, SmallCorpus, keep_torch_threads, shared_corpus
from torch.utils.data import DataLoader

from emotions.cache.shards import SHARDS, CachedFrames, decode_frames, encode_frames
from emotions.config import AudioFeatures, PreprocessConfig
from emotions.media.decode import decode_clip
from emotions.media.encode import write_clip
from emotions.media.workers import Outcome
from emotions.stages.preprocess import preprocess, write_cache
from emotions.training.dataset import CachedClipDataset
from emotions.training.trainer import RunPaths, train_run
from emotions.training.transforms import decode_deferred

RAW = PreprocessConfig(
    num_frames=4, resize=32, crop=24, audio=AudioFeatures(n_mels=32, target_frames=160)
)
JPEG = RAW.model_copy(update={"cache_format": "jpeg", "shard_mb": 8 / 1024})  # 8 KiB shards
CLASSES = ["anger", "joy", "fear"]
CLIPS = 12


def smooth_frames(rng: np.random.Generator, seed_shift: int) -> np.ndarray:
    """Camera-like content: gradients and a moving block, light noise (JPEG's case)."""
    y, x = np.mgrid[0:40, 0:36]
    frames = []
    for t in range(10):
        base = np.stack([x * 6 + t * 3, y * 5 + seed_shift, (x + y) * 3], axis=-1)
        base[10 + t : 20 + t, 8:18] = (200, 40, 90)
        frames.append(base + rng.normal(0, 3, base.shape))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    base = tmp_path_factory.mktemp("jpeg")
    rng = np.random.default_rng(5)
    rows, decoded = [], {}
    for i in range(CLIPS):
        path = f"clip{i:02d}.mp4"
        audio = 0.3 * rng.standard_normal((1, 32000))
        write_clip(base / "data" / path, smooth_frames(rng, i * 7), 10, audio, 16000)
        split = "val" if i % 4 == 3 else "train"
        rows.append((f"c{i:02d}", path, CLASSES[i % 3], "negative", 1.0, split))
        decoded[f"c{i:02d}"] = decode_clip(base / "data" / path, RAW)
    table = pd.DataFrame(
        rows, columns=["clip_id", "path", "label", "polarity", "agreement", "split"]
    )
    split_file = base / "split.parquet"
    table.to_parquet(split_file, index=False)
    return base, table, split_file, decoded


def build(out: Path, table: pd.DataFrame, decoded: dict, config: PreprocessConfig) -> None:
    outcomes = (Outcome((r.clip_id, r.path), value=decoded[r.clip_id]) for r in table.itertuples())
    train_ids = set(table.loc[table["split"] == "train", "clip_id"])
    write_cache(out, outcomes, clips=table, train_ids=train_ids, config=config, meta={})


def test_jpeg_round_trip_is_close_and_much_smaller():
    rng = np.random.default_rng(0)
    frames = smooth_frames(rng, 0)
    encoded = encode_frames(frames, 90)
    back = decode_frames(b"".join(encoded), [len(e) for e in encoded]).permute(0, 2, 3, 1).numpy()
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 5
    assert frames.nbytes / sum(len(e) for e in encoded) > 2


def test_jpeg_samples_match_raw_within_jpeg_error(clips, tmp_path):
    _, table, split_file, decoded = clips
    build(tmp_path / "raw", table, decoded, RAW)
    build(tmp_path / "jpeg", table, decoded, JPEG)
    raw = CachedClipDataset(
        tmp_path / "raw", split_file, "train", crop=24, train=True, classes=CLASSES
    )
    jpeg = CachedClipDataset(
        tmp_path / "jpeg", split_file, "train", crop=24, train=True, classes=CLASSES
    )
    assert jpeg.cache_format == "jpeg" and not (tmp_path / "jpeg" / "frames.npy").exists()
    for i in range(len(raw)):
        a, b = raw[(2, i)], jpeg[(2, i)]  # same key: same crop, flip and masks
        assert a["video"].shape == b["video"].shape and b["video"].dtype == torch.uint8
        assert (a["video"].float() - b["video"].float()).abs().mean() < 6
        assert torch.equal(a["audio"], b["audio"]) and a["label"] == b["label"]
    # Decoded in DataLoader workers (each maps the shards itself).
    loader = DataLoader(
        jpeg, batch_size=4, num_workers=2, sampler=[(0, i) for i in range(len(jpeg))]
    )
    assert sum(len(batch["label"]) for batch in loader) == len(jpeg)


def test_shards_are_bounded_and_a_rerun_rewrites_only_what_changed(clips, tmp_path):
    _, table, split_file, decoded = clips
    out = tmp_path / "cache"
    build(out, table, decoded, JPEG)
    index = pd.read_parquet(out / "index.parquet")
    files = {p.name: p for p in (out / SHARDS).glob("*.bin")}
    assert len(files) > 2 and set(index["shard"]) == set(files)
    largest_clip = max(sum(sizes) for sizes in index["jpeg_bytes"])
    limit = JPEG.shard_mb * 2**20
    assert all(p.stat().st_size < limit + largest_clip for p in files.values())
    inodes = {name: p.stat().st_ino for name, p in files.items()}

    changed = dict(decoded)
    victim = "c05"
    clip = decoded[victim]
    changed[victim] = type(clip)(**{**clip.__dict__, "frames": 255 - clip.frames})
    build(out, table, changed, JPEG)
    stats = pd.read_json(out / "stats.json", typ="series")
    new_index = pd.read_parquet(out / "index.parquet")
    moved = set(new_index.loc[new_index["clip_id"] == victim, "shard"])
    assert stats["shards"]["written"] == 1 and stats["shards"]["reused"] == len(files) - 1
    kept = {p.name: p.stat().st_ino for p in (out / SHARDS).glob("*.bin")}
    assert set(kept) - moved <= set(inodes)
    # Unchanged shards are the very same files (hard links), not rewritten copies.
    assert all(kept[name] == inodes[name] for name in set(kept) - moved)
    assert not list(out.parent.glob("cache.tmp-*")) and not list((out / SHARDS).glob("*.tmp-*"))
    dataset = CachedClipDataset(out, split_file, "train", crop=24, train=False, classes=CLASSES)
    sample = dataset[dataset.clip_ids.index(victim)]["video"].float()
    expected = torch.from_numpy(255 - clip.frames[:, 4:28, 4:28]).permute(0, 3, 1, 2).float()
    assert (sample - expected).abs().mean() < 6


@pytest.mark.slow
def test_training_on_a_jpeg_cache_of_the_small_corpus(tmp_path_factory, tmp_path):
    corpus: SmallCorpus = shared_corpus(tmp_path_factory)
    params = corpus.params(epochs=2)
    config = params.preprocess.model_copy(update={"cache_format": "jpeg"})
    artifacts = corpus.artifacts / DATASET
    cache = tmp_path / "cache"
    preprocess(corpus.root, artifacts / "variants", cache, config=config, progress=False)
    raw_bytes = os.path.getsize(artifacts / "cache" / "frames.npy")
    jpeg_bytes = sum(p.stat().st_size for p in (cache / SHARDS).glob("*.bin"))
    assert jpeg_bytes < raw_bytes
    params = params.model_copy(update={"preprocess": config})
    spec = corpus.paths(tmp_path / "model")
    paths = RunPaths(cache=cache, split=spec.split, model_dir=spec.model_dir)
    with keep_torch_threads():
        summary = train_run(params, RUN, paths=paths, progress=False)
    assert summary["epochs"] == 2
    assert all(math.isfinite(record["train_loss"]) for record in summary["history"])
    assert "val_accuracy" in summary["history"][-1]
    # Decoding batched on the device (here the CPU) instead of in the workers: same result.
    on_device = params.model_copy(
        update={"train": params.train.model_copy(update={"jpeg_decode": "device"})}
    )
    moved = RunPaths(cache=cache, split=spec.split, model_dir=tmp_path / "model-device")
    with keep_torch_threads():
        deferred = train_run(on_device, RUN, paths=moved, progress=False)
    assert deferred["history"] == summary["history"]
    # ... and moved and decoded ahead by the prefetch thread (train.device_prefetch): same.
    ahead = on_device.model_copy(
        update={"train": on_device.train.model_copy(update={"device_prefetch": True})}
    )
    early = RunPaths(cache=cache, split=spec.split, model_dir=tmp_path / "model-prefetch")
    with keep_torch_threads():
        prefetched = train_run(ahead, RUN, paths=early, progress=False)
    assert prefetched["history"] == summary["history"]


def test_deferred_batches_decode_on_the_device_to_the_worker_result(clips, tmp_path):
    _, table, split_file, decoded = clips
    build(tmp_path / "jpeg", table, decoded, JPEG)
    kwargs = {"crop": 24, "train": True, "classes": CLASSES}
    eager = CachedClipDataset(tmp_path / "jpeg", split_file, "train", **kwargs)
    lazy = CachedClipDataset(tmp_path / "jpeg", split_file, "train", defer_decode=True, **kwargs)
    keys = [(1, i) for i in range(len(eager))]
    batch = lazy.collate_fn([lazy[key] for key in keys])
    assert "video" not in batch and len(batch["jpeg"]) == len(keys)
    video = decode_deferred(batch, torch.device("cpu"))
    expected = torch.stack([eager[key]["video"] for key in keys])
    assert torch.equal(video, expected)
    assert torch.equal(batch["audio"], torch.stack([eager[key]["audio"] for key in keys]))
    with pytest.raises(ValueError, match="jpeg cache"):
        build(tmp_path / "raw", table, decoded, RAW)
        CachedClipDataset(tmp_path / "raw", split_file, "train", defer_decode=True, **kwargs)


def test_cached_frames_read_either_format_as_decode_clip_made_them(clips, tmp_path):
    _, table, _, decoded = clips
    build(tmp_path / "raw", table, decoded, RAW)
    build(tmp_path / "jpeg", table, decoded, JPEG)
    raw, jpeg = CachedFrames(tmp_path / "raw"), CachedFrames(tmp_path / "jpeg")
    index = pd.read_parquet(tmp_path / "raw" / "index.parquet")
    for clip_id, row in zip(index["clip_id"], index["row"], strict=True):
        expected = decoded[clip_id].frames
        assert np.array_equal(raw[row], expected)
        assert jpeg[row].shape == expected.shape
        assert np.abs(jpeg[row].astype(int) - expected).mean() < 6
