"""The decode-once cache: content, failures, atomicity, and the Dask path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotions.cache.format import CacheError, require_complete
from emotions.config import AudioFeatures, PreprocessConfig
from emotions.media.decode import DecodedClip, decode_clip
from emotions.media.encode import write_clip
from emotions.media.workers import Outcome
from emotions.stages.preprocess import (
    COMPLETE,
    PreprocessError,
    preprocess,
    shrink_npy,
    write_cache,
)

CONFIG = PreprocessConfig(
    num_frames=4,
    resize=32,
    crop=24,
    audio=AudioFeatures(n_mels=32, target_frames=120),
    workers=2,
    timeout_s=60,
)
LABELS = ["Excitation", "Tension", "Fear"]


def make_corpus(root: Path, n: int = 6) -> pd.DataFrame:
    """n real clips (every third without audio) plus one file that is not a video."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        frames = rng.integers(0, 255, (12, 40, 48, 3), dtype=np.uint8)
        audio = None if i % 3 == 2 else 0.2 * rng.standard_normal((1, 16000)) * (i + 1) / n
        path = f"{LABELS[i % 3]}/clip {i}.mp4"
        write_clip(root / path, frames, 10, audio, 16000)
        rows.append((f"c{i:02d}", path, LABELS[i % 3]))
    (root / "broken").mkdir()
    (root / "broken/bad.mp4").write_bytes(b"\x00not a video" * 50)
    rows.append(("c99", "broken/bad.mp4", "Excitation"))
    return pd.DataFrame(rows, columns=["clip_id", "path", "label"])


def write_variants(variants: Path, clips: pd.DataFrame) -> None:
    """Two variants sharing clips: `full` uses them all, `balanced` a subset."""
    splits = ["train", "train", "val", "train", "test", "train", "train"]
    full = clips.assign(split=splits[: len(clips)], polarity="negative", agreement=1.0)
    for name, frame in {"full": full, "balanced": full.iloc[1:5]}.items():
        (variants / name).mkdir(parents=True)
        frame.to_parquet(variants / name / "split.parquet", index=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    root, variants, out = base / "data", base / "variants", base / "cache"
    clips = make_corpus(root)
    write_variants(variants, clips)
    result = preprocess(root, variants, out, config=CONFIG, progress=False)
    return root, variants, out, clips, result


def test_every_clip_is_decoded_once_and_failures_are_listed(built):
    _, _, out, _, result = built
    assert (result.clips, result.failed) == (6, 1)
    assert result.variants == ("balanced", "full")
    assert result.decode_s > 0 and result.write_s > 0 and result.total_s >= result.decode_s
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["clip_id"]) == [f"c{i:02d}" for i in range(6)]
    assert index["row"].tolist() == list(range(6))
    assert index["has_audio"].tolist() == [i % 3 != 2 for i in range(6)]
    failures = pd.read_csv(out / "failures.csv")
    assert failures["clip_id"].tolist() == ["c99"] and failures["path"][0] == "broken/bad.mp4"
    assert "cannot open" in failures["reason"][0]
    frames, fbank = np.load(out / "frames.npy"), np.load(out / "fbank.npy")
    assert frames.shape == (6, 4, 32, 32, 3) and frames.dtype == np.uint8
    assert fbank.shape == (6, 120, 32) and fbank.dtype == np.float16
    assert (out / COMPLETE).is_file() and require_complete(out) == out
    assert [p.name for p in out.parent.iterdir() if p.name.startswith("cache.")] == []


def test_cached_arrays_equal_decode_clip(built):
    root, _, out, _, _ = built
    index = pd.read_parquet(out / "index.parquet").set_index("clip_id")
    frames = np.load(out / "frames.npy", mmap_mode="r")
    fbank = np.load(out / "fbank.npy", mmap_mode="r")
    for clip_id in ("c00", "c02", "c04"):
        entry = index.loc[clip_id]
        clip = decode_clip(root / entry["path"], CONFIG)
        np.testing.assert_array_equal(frames[entry["row"]], clip.frames)
        np.testing.assert_allclose(fbank[entry["row"]], clip.fbank, rtol=1e-3, atol=1e-2)
        assert entry["audio_frames"] == clip.audio_frames
        assert entry["duration_s"] == pytest.approx(clip.duration_s)


def test_stats_describe_valid_train_audio_of_full(built):
    root, _, out, clips, _ = built
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stats_variant"] == "full" and stats["counts"]["failed"] == 1
    assert stats["shapes"]["frames"] == [6, 4, 32, 32, 3]
    assert stats["config"]["resize"] == 32 and stats["variants"] == {"balanced": 4, "full": 7}
    # train clips with audio: c00, c01, c03 (c05 has none; c02 val; c04 test).
    values = []
    for i in (0, 1, 3):
        clip = decode_clip(root / clips["path"][i], CONFIG)
        values.append(clip.fbank[: clip.audio_frames].astype(np.float64).ravel())
    values = np.concatenate(values)
    assert stats["stats_clips"] == 3 and stats["fbank_values"] == values.size
    assert stats["fbank_mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert stats["fbank_std"] == pytest.approx(values.std(), rel=1e-6)


def test_a_cache_without_marker_is_refused(built, tmp_path):
    _, _, out, _, _ = built
    copy = tmp_path / "cache"
    copy.mkdir()
    for name in ("frames.npy", "index.parquet", "stats.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    with pytest.raises(CacheError, match="incomplete cache"):
        require_complete(copy)
    with pytest.raises(CacheError, match="no cache here"):
        require_complete(tmp_path / "nothing")


def _outcomes(clip: DecodedClip, n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise KeyboardInterrupt("killed while writing")
        yield Outcome((f"k{i}", f"k{i}.mp4"), value=clip)


def test_an_interrupted_write_leaves_the_old_cache(built, tmp_path):
    root, _, _, clips, _ = built
    clip = decode_clip(root / clips["path"][0], CONFIG)
    table = pd.DataFrame(
        {"clip_id": [f"k{i}" for i in range(4)], "path": "x", "label": "Excitation"}
    )
    out = tmp_path / "cache"
    kwargs = {"clips": table, "train_ids": {"k0"}, "config": CONFIG, "meta": {}}
    write_cache(out, _outcomes(clip, 4), **kwargs)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        write_cache(out, _outcomes(clip, 4, fail_at=2), **kwargs)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    # The same on a first run: nothing is left that could pass for a cache.
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        write_cache(fresh, _outcomes(clip, 4, fail_at=1), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_leftovers_of_a_killed_run_are_cleaned(built, tmp_path):
    root, _, _, clips, _ = built
    clip = decode_clip(root / clips["path"][0], CONFIG)
    table = pd.DataFrame({"clip_id": ["k0"], "path": "x", "label": "Excitation"})
    dead = tmp_path / "cache.tmp-999999999"
    dead.mkdir()
    (dead / "frames.npy").write_bytes(b"partial")
    write_cache(
        tmp_path / "cache", _outcomes(clip, 1), clips=table, train_ids=set(), config=CONFIG, meta={}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_nothing_decoded_aborts_and_keeps_the_old_cache(built, tmp_path):
    _, _, out, _, _ = built
    table = pd.DataFrame({"clip_id": ["a"], "path": "a.mp4", "label": "Excitation"})
    failed = [Outcome(("a", "a.mp4"), error="DecodeError: nope")]
    with pytest.raises(PreprocessError, match=r"no clip could be decoded.*a\.mp4: DecodeError"):
        write_cache(out, iter(failed), clips=table, train_ids=set(), config=CONFIG, meta={})
    assert require_complete(out) and len(pd.read_parquet(out / "index.parquet")) == 6


def test_missing_variants_is_a_clear_error(tmp_path):
    with pytest.raises(PreprocessError, match=r"no \*/split\.parquet"):
        preprocess(tmp_path, tmp_path, tmp_path / "out", config=CONFIG, progress=False)


def test_shrink_npy_keeps_leading_rows(tmp_path):
    path = tmp_path / "a.npy"
    data = np.arange(5 * 3 * 7, dtype=np.float16).reshape(5, 3, 7)
    array = np.lib.format.open_memmap(path, "w+", np.float16, data.shape)
    array[:] = data
    array.flush()
    del array
    shrink_npy(path, 2)
    np.testing.assert_array_equal(np.load(path), data[:2])
    header = 128  # numpy pads a small header to 128 bytes; the data follows unmoved
    assert os.path.getsize(path) == header + data[:2].nbytes


def test_dask_cluster_gives_the_same_cache(built, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, variants, out, _, _ = built
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        result = preprocess(
            root, variants, tmp_path / "dask", config=CONFIG, progress=False, cluster=cluster
        )
    assert (result.clips, result.failed) == (6, 1)
    for name in ("frames.npy", "fbank.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "dask" / name), np.load(out / name))
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "dask" / "index.parquet"), pd.read_parquet(out / "index.parquet")
    )
