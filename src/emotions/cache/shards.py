"""Frames of the ``jpeg`` cache format: one JPEG per frame, packed into bounded shards.

Why: raw uint8 frames of eMotions at paper size (27,996 clips × 128 × 112² × 3) are ~135 GB,
more than the local disk of the one-GPU machine; JPEG at quality 90 is several times smaller
and decodes in DataLoader workers faster than a GPU consumes clips.

Why shards of bounded size, and why these boundaries: a file per clip would be ~28 k small
files, one file for all a rewrite of everything on any change. Clips are packed in clip-id
order; a shard closes when it reaches ``shard_bytes`` or at a clip whose id hash falls on a
boundary (content-defined, about ``BOUNDARY_EVERY`` clips apart), so adding or changing one
clip moves the boundaries of its own shard only. Each shard file is named by the SHA-256 of
its bytes: when the previous cache holds a shard with that name, the new cache hard-links it
(copies it where links fail) instead of writing it, so a partial rerun writes only the shards
that changed. Shards are written to a temporary name and renamed; the cache directory itself
is swapped in whole by the preprocess stage, so a reader never sees a partial store.

Layout, under the cache directory: ``shards/<sha256[:24]>.bin``; the index gives each clip
its ``shard``, ``offset`` and per-frame ``jpeg_bytes``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotions.cache.format import SHARDS

BOUNDARY_EVERY = 64


@dataclass(frozen=True)
class ClipLocation:
    """Where one clip's JPEG frames are: the shard, the byte offset, each frame's length."""

    shard: str
    offset: int
    jpeg_bytes: list[int]


def encode_frames(frames: np.ndarray, quality: int) -> list[bytes]:
    """(T, H, W, 3) uint8 RGB → one JPEG per frame (torchvision's libjpeg encoder)."""
    from torchvision.io import encode_jpeg

    chw = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    encoded = encode_jpeg(list(chw.contiguous().unbind(0)), quality=quality)
    return [bytes(tensor.numpy().tobytes()) for tensor in encoded]


def decode_frames(data: bytes | memoryview, lengths: list[int]) -> torch.Tensor:
    """The JPEG frames of one clip → (T, 3, H, W) uint8 RGB.

    Channels-first, as the decoder returns them and the model takes them: the loader crops
    this tensor directly rather than transposing to the raw cache's (T, H, W, 3) and back.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    parts = list(buffer.split(list(lengths)))
    return torch.stack(decode_jpeg(parts, mode=ImageReadMode.RGB))


def _is_boundary(clip_id: str) -> bool:
    digest = hashlib.blake2b(clip_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BOUNDARY_EVERY == 0


class ShardWriter:
    """Packs clips' JPEG frames into content-named shards under ``cache_dir/shards``.

    ``previous`` is the cache being replaced: shards it already holds are linked, not written.
    Call :meth:`add` in clip-id order, then :meth:`close`; the locations it returned become
    valid once ``close`` has run.
    """

    def __init__(self, cache_dir: Path, shard_bytes: int, previous: Path | None = None) -> None:
        self.folder = Path(cache_dir) / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.previous = Path(previous) / SHARDS if previous is not None else None
        self.shard_bytes = shard_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._pending: list[int] = []  # indices into self.locations of the open shard
        self.locations: list[ClipLocation] = []
        self.written = self.reused = 0

    def add(self, clip_id: str, frames: list[bytes]) -> int:
        """Append one clip; returns its position in :attr:`locations`."""
        if self._parts and (_is_boundary(clip_id) or self._size >= self.shard_bytes):
            self._flush()
        self.locations.append(ClipLocation("", self._size, [len(f) for f in frames]))
        self._pending.append(len(self.locations) - 1)
        self._parts.extend(frames)
        self._size += sum(len(f) for f in frames)
        return len(self.locations) - 1

    def close(self) -> None:
        if self._parts:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._parts)
        name = hashlib.sha256(data).hexdigest()[:24] + ".bin"
        target = self.folder / name
        old = self.previous / name if self.previous is not None else None
        if not target.exists():
            if old is not None and old.is_file() and old.stat().st_size == len(data):
                try:
                    os.link(old, target)
                except OSError:
                    shutil.copyfile(old, target)
                self.reused += 1
            else:
                partial = target.with_suffix(f".tmp-{os.getpid()}")
                try:
                    partial.write_bytes(data)
                    os.replace(partial, target)
                finally:
                    partial.unlink(missing_ok=True)  # a full disk leaves no partial shard
                self.written += 1
        for position in self._pending:
            location = self.locations[position]
            self.locations[position] = ClipLocation(name, location.offset, location.jpeg_bytes)
        self._parts, self._size, self._pending = [], 0, []


class ShardReader:
    """Memory-maps shards on first use (per process: a DataLoader worker maps its own)."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = Path(cache_dir) / SHARDS
        self._maps: dict[str, mmap.mmap] = {}

    def __getstate__(self) -> dict[str, object]:
        return {"folder": self.folder, "_maps": {}}

    def _bytes(self, shard: str, offset: int, lengths: list[int]) -> memoryview:
        mapped = self._maps.get(shard)
        if mapped is None:
            with open(self.folder / shard, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[shard] = mapped
        return memoryview(mapped)[offset : offset + sum(lengths)]

    def frames(
        self, shard: str, offset: int, lengths: list[int], keep: Sequence[int] | None = None
    ) -> torch.Tensor:
        """One clip's frames, decoded here (in the DataLoader worker): (T, 3, R, R) uint8.

        ``keep``: only these frames, in this order (one view of a cache holding several
        positions per segment), so the others are never decoded."""
        data, kept = self._select(shard, offset, lengths, keep)
        return decode_frames(data, kept)

    def encoded(
        self, shard: str, offset: int, lengths: list[int], keep: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """One clip's JPEG frames (those in ``keep``), still encoded, as one 1-D uint8 tensor
        (for deferring), and each frame's length in it."""
        data, kept = self._select(shard, offset, lengths, keep)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), kept

    def _select(
        self, shard: str, offset: int, lengths: list[int], keep: Sequence[int] | None
    ) -> tuple[bytes | memoryview, list[int]]:
        data = self._bytes(shard, offset, lengths)
        if keep is None:
            return data, list(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        kept = [int(lengths[i]) for i in keep]
        pieces = [data[int(starts[i]) : int(starts[i]) + lengths[i]] for i in keep]
        return b"".join(pieces), kept


class CachedFrames:
    """The (T, R, R, 3) uint8 frames of a cache row, whatever the cache's format.

    For readers outside the training loader (the monitor's reference, tools) that want the
    frames as decode_clip made them: a memmap row of a raw cache, decoded JPEGs of a jpeg one.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        import json

        import pandas as pd

        from emotions.cache.format import FRAMES, INDEX, STATS

        cache = Path(cache_dir)
        stats = json.loads((cache / STATS).read_text(encoding="utf-8"))
        self.format = stats.get("cache_format", "raw")
        if self.format == "jpeg":
            index = pd.read_parquet(cache / INDEX, columns=["row", "shard", "offset", "jpeg_bytes"])
            self._where = {
                int(r.row): (str(r.shard), int(r.offset), [int(n) for n in r.jpeg_bytes])
                for r in index.itertuples(index=False)
            }
            self._reader = ShardReader(cache)
        else:
            self._raw = np.load(cache / FRAMES, mmap_mode="r")

    def __getitem__(self, row: int) -> np.ndarray:
        """Every cached frame of the row, (J·T, R, R, 3): all positions per segment."""
        return self.view(row, None)

    def view(self, row: int, keep: Sequence[int] | None) -> np.ndarray:
        """The row's frames ``keep`` (all when None), decoding or reading only those."""
        if self.format == "jpeg":
            shard, offset, lengths = self._where[int(row)]
            return self._reader.frames(shard, offset, lengths, keep).permute(0, 2, 3, 1).numpy()
        frames = self._raw[row]
        return np.asarray(frames if keep is None else frames[np.asarray(keep)])
