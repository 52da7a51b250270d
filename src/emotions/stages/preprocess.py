"""The preprocess stage: decode every clip once into a memory-mapped cache.

Sampling 16 frames from a phone clip costs about as much as decoding all of it, and training
reads each clip every epoch, so clips are decoded once (:func:`emotions.media.decode.decode_clip`)
and the results stored as fixed-shape arrays that the loader memory-maps:

    out/frames.npy     uint8   (N, J·T, R, R, 3) (cache_format raw; J candidate views of T
                       frames, emotions.media.snippets; J = preprocess.positions)
    out/shards/*.bin   one JPEG per frame        (cache_format jpeg, emotions.cache.shards)
    out/fbank.npy      float16 (N, target_frames, n_mels)
    out/index.parquet  clip_id, row, label, has_audio, audio_frames, duration_s, audio_s, path

The fbank's rows are equal steps of the clip's ``duration_s`` (the frames' time base,
emotions.media.decode); ``audio_frames`` counts those holding sound and ``audio_s`` is the
sound's length. A cache written before ``audio_s`` existed held the first target_frames × 10 ms
of sound instead; decode.py is a dependency of the stage, so `dvc repro` rebuilds it.
    out/stats.json     fbank mean/std (train split), shapes, config, counts, failures
    out/failures.csv   clip_id, path, reason (clips left out of the index)
    out/_COMPLETE      written last; readers refuse a directory without it

The log-mel is stored as float16: its values lie within about ±30 and float16 keeps them to
~0.01 (relative 5e-4), two orders below the std of the features the model sees after
normalisation, while halving the largest part of the cache and the page cache it needs.

Clips shared by several variants are decoded once. Decoding runs in isolated worker processes
(a hang or crash costs that clip only) or on a Dask cluster; results come back in chunks
bounded in bytes and are written into the memmaps as each chunk arrives, so memory stays flat
whatever the corpus size. Everything is built in ``<out>.tmp-<pid>`` and swapped in at the end,
so a killed run leaves no directory that a rerun or the loader would take for a cache.
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emotions.atomic import process_alive
from emotions.cache.format import (
    COMPLETE,
    FAILURES,
    FBANK,
    FBANK_DTYPE,
    FRAMES,
    INDEX,
    STATS,
)
from emotions.cache.shards import ShardWriter, encode_frames
from emotions.config import Params, PreprocessConfig
from emotions.diskspace import disk_full_errors, require_space
from emotions.errors import StageError
from emotions.layout import Layout
from emotions.media.decode import DEFAULT_MAX_DECODE_PIXELS, DecodedClip, decode_clip
from emotions.media.snippets import SnippetLayout
from emotions.media.workers import Outcome, map_isolated, map_on_dask

# Decoded arrays held in the parent between two writes; also bounds what one Dask round trip
# carries. Each chunk restarts the worker pool (~1 s), so chunks are kept large.
CHUNK_BYTES = 256 * 2**20
STATS_VARIANT = "full"
STATS_SPLIT = "train"

Item = tuple[str, str]  # (clip_id, path relative to root)


class PreprocessError(StageError):
    """The stage cannot produce a cache (no variants, or no clip decoded)."""


@dataclass(frozen=True)
class PreprocessResult:
    """What one run did, with the time split between waiting for decodes and writing."""

    out: Path
    clips: int
    failed: int
    variants: tuple[str, ...]
    decode_s: float
    write_s: float
    total_s: float

    @property
    def clips_per_s(self) -> float:
        return (self.clips + self.failed) / self.total_s if self.total_s > 0 else float("inf")


def read_variants(variants_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every ``<variants_dir>/<name>/split.parquet``, by variant name (sorted)."""
    variants_dir = Path(variants_dir)
    files = sorted(variants_dir.glob("*/split.parquet"))
    if not files:
        raise PreprocessError(f"{variants_dir}: no */split.parquet (run the variants stage first)")
    return {file.parent.name: pd.read_parquet(file) for file in files}


def preprocess(
    root: str | Path,
    variants_dir: str | Path,
    out: str | Path,
    *,
    config: PreprocessConfig,
    progress: bool = True,
    cluster: Any = None,
    frames_fps: float | str = 30.0,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> PreprocessResult:
    """Decode every clip of every variant once and replace ``out`` with the new cache.

    ``cluster`` (a ``distributed.LocalCluster`` or anything ``distributed.Client`` accepts)
    or ``config.dask_address`` sends the decoding to Dask; the clip files must then be
    readable at ``root`` from the Dask workers too.
    """
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    variants = read_variants(variants_dir)
    clips = _unique_clips(variants)
    stats_name = STATS_VARIANT if STATS_VARIANT in variants else next(iter(variants))
    stats_split = variants[stats_name]
    train_ids = set(stats_split.loc[stats_split["split"] == STATS_SPLIT, "clip_id"].astype(str))

    decode = partial(
        decode_for_cache,
        root=str(root),
        config=config,
        frames_fps=frames_fps,
        max_decode_pixels=max_decode_pixels,
    )
    address = cluster if cluster is not None else config.dask_address
    if address is not None:
        runner = partial(map_on_dask, address=address, timeout_s=config.timeout_s)
    else:
        runner = partial(map_isolated, workers=config.workers, timeout_s=config.timeout_s)
    items = [(row.clip_id, row.path) for row in clips.itertuples(index=False)]
    chunks = _chunks(items, _chunk_size(config, config.workers))
    timer = {"decode": 0.0}

    def outcomes() -> Iterable[Outcome[Item, DecodedClip]]:
        for number, chunk in enumerate(chunks, start=1):
            tick = time.perf_counter()
            desc = "preprocess" if len(chunks) == 1 else f"preprocess {number}/{len(chunks)}"
            results = runner(decode, chunk, desc=desc, progress=progress)
            timer["decode"] += time.perf_counter() - tick
            yield from results

    meta = {
        "config": config.model_dump(mode="json"),
        "variants": {name: len(frame) for name, frame in variants.items()},
        "stats_variant": stats_name,
        "stats_split": STATS_SPLIT,
    }
    with _default_dask_client(address) if address is not None else contextlib.nullcontext():
        counts, write_s = write_cache(
            out, outcomes(), clips=clips, train_ids=train_ids, config=config, meta=meta
        )
    return PreprocessResult(
        out=out,
        clips=counts["clips"],
        failed=counts["failed"],
        variants=tuple(variants),
        decode_s=timer["decode"],
        write_s=write_s,
        total_s=time.perf_counter() - started,
    )


@contextlib.contextmanager
def _default_dask_client(address: Any) -> Iterator[None]:
    """Hold a default Dask client for the run.

    ``distributed.as_completed`` without a ``loop`` looks up the *default* client, and
    ``map_on_dask`` opens its own with ``set_as_default=False``, which alone raises "No clients
    found". Sync clients share one event loop, so a default one held here serves both.
    """
    from distributed import Client

    with Client(address, set_as_default=True):
        yield


def decode_for_cache(
    item: Item,
    *,
    root: str,
    config: PreprocessConfig,
    frames_fps: float | str = 30.0,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> DecodedClip:
    """The worker's job for one clip. One torch thread in a worker process: the pool already
    fills the cores (a thread-based Dask worker inside the caller's process is left alone).
    ``frames_fps`` is the frame rate of frame-folder clips (the dataset's ``fps``);
    ``max_decode_pixels`` is ingest's decode budget (a clip over it fails with the reason)."""
    if multiprocessing.parent_process() is not None:
        import torch

        torch.set_num_threads(1)
    _clip_id, path = item
    return decode_clip(
        Path(root) / path, config, fps=frames_fps, max_decode_pixels=max_decode_pixels
    )


def write_cache(
    out: Path,
    outcomes: Iterable[Outcome[Item, DecodedClip]],
    *,
    clips: pd.DataFrame,
    train_ids: set[str],
    config: PreprocessConfig,
    meta: dict[str, Any],
) -> tuple[dict[str, int], float]:
    """Stream decoded clips into a fresh cache built next to ``out``, then swap it in.

    Any exception (including a kill signal turned into one) removes the half-built directory
    and leaves the previous ``out`` untouched. Returns the counts and the seconds spent writing.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    need = len(clips) * row_bytes(config)
    require_space(out.parent, need)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with disk_full_errors(tmp, need):
            counts, write_s = _fill(tmp, outcomes, clips, train_ids, config, meta, previous=out)
            (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
            _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts, write_s


def row_bytes(config: PreprocessConfig) -> int:
    """Bytes one clip takes in the memory-mapped arrays: the fbank, and the frames of a raw
    cache (a jpeg cache's shards have no size known up front)."""
    a = config.audio
    fbank = a.target_frames * a.n_mels * np.dtype(FBANK_DTYPE).itemsize
    if config.cache_format == "jpeg":
        return fbank
    t, r = SnippetLayout.of(config).cached_frames, config.resize
    return fbank + t * r * r * 3


def reserve(path: Path) -> None:
    """Give a memory-mapped file all its blocks now: a write into a sparse map on a full disk
    is a SIGBUS (exit 135, no message), a failed allocation here an ENOSPC to report."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size:
            os.posix_fallocate(handle.fileno(), 0, size)


def _fill(
    tmp: Path,
    outcomes: Iterable[Outcome[Item, DecodedClip]],
    clips: pd.DataFrame,
    train_ids: set[str],
    config: PreprocessConfig,
    meta: dict[str, Any],
    previous: Path | None = None,
) -> tuple[dict[str, int], float]:
    total = len(clips)
    t, r, a = SnippetLayout.of(config).cached_frames, config.resize, config.audio
    frames_shape = (t, r, r, 3)
    fbank_shape = (a.target_frames, a.n_mels)
    jpeg = config.cache_format == "jpeg"
    if jpeg:  # clips arrive in clip-id order (_unique_clips sorts): what the shards rely on
        shards = ShardWriter(tmp, int(config.shard_mb * 2**20), previous)
        frames = None
    else:
        frames = np.lib.format.open_memmap(tmp / FRAMES, "w+", np.uint8, (total, *frames_shape))
        reserve(tmp / FRAMES)
    fbank = np.lib.format.open_memmap(tmp / FBANK, "w+", FBANK_DTYPE, (total, *fbank_shape))
    reserve(tmp / FBANK)
    labels = dict(zip(clips["clip_id"], clips["label"], strict=True))
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    moments = np.zeros(3)  # count, sum, sum of squares of valid train log-mel values
    write_s = 0.0
    skipped_packets = 0
    for outcome in outcomes:
        clip_id, path = outcome.item
        if not outcome.ok:
            failures.append({"clip_id": clip_id, "path": path, "reason": outcome.error or "?"})
            continue
        clip = outcome.value
        assert clip is not None
        if clip.frames.shape != frames_shape or clip.fbank.shape != fbank_shape:
            reason = f"decoded shapes {clip.frames.shape}/{clip.fbank.shape} do not match config"
            failures.append({"clip_id": clip_id, "path": path, "reason": reason})
            continue
        tick = time.perf_counter()
        row = len(rows)
        if jpeg:
            shards.add(clip_id, encode_frames(clip.frames, config.jpeg_quality))
        else:
            frames[row] = clip.frames
        fbank[row] = clip.fbank
        if clip_id in train_ids and clip.audio_frames:
            valid = clip.fbank[: clip.audio_frames].astype(np.float64)
            moments += (valid.size, valid.sum(), np.square(valid).sum())
        write_s += time.perf_counter() - tick
        skipped_packets += clip.skipped_audio_packets
        rows.append(
            {
                "clip_id": clip_id,
                "row": row,
                "label": labels[clip_id],
                "has_audio": clip.has_audio,
                "audio_frames": clip.audio_frames,
                "duration_s": clip.duration_s,
                "audio_s": clip.audio_s,
                "path": path,
            }
        )
    if not rows:
        first = "; ".join(f"{f['path']}: {f['reason']}" for f in failures[:3])
        raise PreprocessError(f"no clip could be decoded ({len(failures)} failed; {first})")
    tick = time.perf_counter()
    fbank.flush()
    del fbank
    shrink_npy(tmp / FBANK, len(rows))
    index = pd.DataFrame(rows)
    if jpeg:
        shards.close()
        index["shard"] = [loc.shard for loc in shards.locations]
        index["offset"] = [loc.offset for loc in shards.locations]
        index["jpeg_bytes"] = [loc.jpeg_bytes for loc in shards.locations]
        meta = {**meta, "shards": {"written": shards.written, "reused": shards.reused}}
    else:
        frames.flush()
        del frames
        shrink_npy(tmp / FRAMES, len(rows))
    index.to_parquet(tmp / INDEX, index=False)
    _write_failures(tmp / FAILURES, failures)
    count, total_sum, total_sq = moments
    mean = total_sum / count if count else 0.0
    std = float(np.sqrt(max(total_sq / count - mean**2, 0.0))) if count else 1.0
    stats = {
        "fbank_mean": float(mean),
        "fbank_std": std if std > 0 else 1.0,
        "fbank_values": int(count),
        "stats_clips": int((index["clip_id"].isin(train_ids) & (index["audio_frames"] > 0)).sum()),
        "shapes": {"frames": [len(rows), *frames_shape], "fbank": [len(rows), *fbank_shape]},
        "dtypes": {"frames": "uint8", "fbank": np.dtype(FBANK_DTYPE).name},
        "cache_format": config.cache_format,
        "counts": {
            "requested": total,
            "clips": len(rows),
            "failed": len(failures),
            "with_audio": int(index["has_audio"].sum()),
            "skipped_audio_packets": int(skipped_packets),
        },
        "failures": failures,
        **meta,
    }
    (tmp / STATS).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    write_s += time.perf_counter() - tick
    return {"clips": len(rows), "failed": len(failures)}, write_s


def shrink_npy(path: Path, rows: int) -> None:
    """Cut a C-order ``.npy`` file to its first ``rows`` rows, in place.

    The header is rewritten with the smaller shape and padded with spaces to its old length
    (the format allows any padding), so the data offset does not move and nothing is copied.
    """
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        if fortran:
            raise ValueError(f"{path}: Fortran-order arrays are not supported")
        data_start = handle.tell()
        if shape[0] == rows:
            return
        prefix = 8 + (2 if version == (1, 0) else 4)
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": (rows, *shape[1:]),
            }
        )
        room = data_start - prefix
        if len(header) + 1 > room:
            raise ValueError(f"{path}: new header does not fit")
        handle.seek(prefix)
        handle.write((header.ljust(room - 1) + "\n").encode("latin1"))
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        handle.truncate(data_start + rows * row_bytes)


def _write_failures(path: Path, failures: Sequence[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["clip_id", "path", "reason"])
        writer.writeheader()
        writer.writerows(failures)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``. A directory cannot be renamed over a non-empty one, so the
    old cache moves aside first; between the two renames ``out`` is absent, never partial."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(out: Path) -> None:
    """Delete leftovers of killed runs (``<out>.tmp-<pid>``/``.old-<pid>`` of dead processes)."""
    for kind in ("tmp", "old"):
        for leftover in out.parent.glob(f"{out.name}.{kind}-*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
                continue
            if kind == "old" and not out.exists() and (leftover / COMPLETE).is_file():
                os.replace(leftover, out)  # killed between the two renames: restore it
                continue
            shutil.rmtree(leftover, ignore_errors=True)


def _unique_clips(variants: dict[str, pd.DataFrame]) -> pd.DataFrame:
    columns = ["clip_id", "path", "label"]
    for name, frame in variants.items():
        missing = [c for c in (*columns, "split") if c not in frame.columns]
        if missing:
            raise PreprocessError(f"variant '{name}': split.parquet lacks columns {missing}")
    both = pd.concat([frame[columns] for frame in variants.values()], ignore_index=True)
    both["clip_id"] = both["clip_id"].astype(str)
    unique = both.drop_duplicates("clip_id").sort_values("clip_id", kind="stable")
    clashes = both.merge(unique, on="clip_id", suffixes=("", "_first"))
    clashes = clashes[clashes["path"] != clashes["path_first"]]
    if len(clashes):
        first = clashes.iloc[0]
        warnings.warn(
            f"{len(clashes)} split rows name a clip_id with another path than the first "
            f"variant (e.g. {first.clip_id}: {first.path} vs {first.path_first}); using the first",
            stacklevel=3,
        )
    return unique.reset_index(drop=True)


def _chunk_size(config: PreprocessConfig, workers: int) -> int:
    t, r, a = SnippetLayout.of(config).cached_frames, config.resize, config.audio
    per_clip = t * r * r * 3 + a.target_frames * a.n_mels * 4
    return max(8 * workers, CHUNK_BYTES // per_clip)


def _chunks(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def main(params: Params, *, dataset: str) -> None:
    """`emotions preprocess`: the dataset's cache, with what it cost."""
    entry = params.dataset(dataset)
    result = preprocess(
        Path(entry.root),
        Layout().variants_dir(dataset),
        Layout().cache(dataset),
        config=params.preprocess,
        frames_fps=entry.fps,
        max_decode_pixels=params.ingest.max_decode_pixels,
    )
    print(
        f"preprocess: {result.clips} clips cached, {result.failed} failed "
        f"({', '.join(result.variants)}) in {result.total_s:.1f} s "
        f"({result.clips_per_s:.1f} clips/s, decode wait {result.decode_s:.1f} s) -> {result.out}"
    )
