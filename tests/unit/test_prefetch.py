"""train.device_prefetch: the next batches moved (and decoded) by a background thread.

Without a GPU: every batch arrives in order, equal to ``move_batch``'s, on the device asked
for (the meta device stands in for CUDA); a loader's failure reaches the training loop; a loop
that stops early leaves no thread reading the loader. Training with it equals training without
it: tests/unit/test_cache_store.py, on a jpeg cache decoded "on the device".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from emotions.training.predict import move_batch
from emotions.training.prefetch import prefetched, prefetches
from emotions.training.runtime import Runtime
from emotions.training.samplers import EpochSampler

CPU = Runtime(torch.device("cpu"))


def batches(n: int) -> Iterator[dict[str, Any]]:
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        yield {
            "video": torch.randint(0, 256, (2, 4, 3, 8, 8), dtype=torch.uint8, generator=generator),
            "audio": torch.randn(2, 16, 8, generator=generator),
            "label": torch.tensor([i, i + 1]),
            "clip_id": [f"c{i}a", f"c{i}b"],
        }


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "device-prefetch"]


def test_batches_arrive_in_order_equal_to_move_batch() -> None:
    expected = [move_batch(batch, CPU) for batch in batches(7)]
    got = list(prefetched(batches(7), CPU, depth=2))
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.keys() == theirs.keys() and mine["clip_id"] == theirs["clip_id"]
        for key in ("video", "audio", "label"):
            assert torch.equal(mine[key], theirs[key])
    assert not prefetch_threads()


def test_batches_land_on_the_training_device() -> None:
    meta = Runtime(torch.device("meta"))
    got = list(prefetched(batches(3), meta))
    assert [b["label"].device.type for b in got] == ["meta"] * 3
    assert all(b["video"].device.type == "meta" and b["video"].dtype == torch.uint8 for b in got)


def test_a_loader_failure_reaches_the_training_loop() -> None:
    def failing() -> Iterator[dict[str, Any]]:
        yield from batches(2)
        raise OSError("shard 7 is unreadable")

    seen = []
    with pytest.raises(OSError, match="shard 7"):
        for batch in prefetched(failing(), CPU):
            seen.append(batch["clip_id"][0])
    assert seen == ["c0a", "c1a"]
    assert not prefetch_threads()


def test_stopping_early_stops_the_thread_before_the_loader_is_read_again() -> None:
    read = []

    def endless() -> Iterator[dict[str, Any]]:
        i = 0
        while True:
            read.append(i)
            yield {"label": torch.tensor([i])}
            i += 1

    stream = prefetched(endless(), CPU, depth=2)
    assert int(next(stream)["label"]) == 0
    stream.close()  # what a loop that breaks out and drops the generator does
    assert not prefetch_threads()
    count = len(read)
    assert count <= 1 + 2 + 1  # the one taken, the queue's two, one the thread held
    threading.Event().wait(0.3)
    assert len(read) == count  # and nobody reads on


class Squares(Dataset):
    """Keys (epoch, i) → a small sample, read in DataLoader worker processes."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        return {"x": torch.full((3,), float(epoch * 100 + i * i)), "label": torch.tensor(i)}


def test_persistent_workers_feed_the_thread_epoch_after_epoch() -> None:
    """The train loader's shape: persistent workers, a new prefetch thread per epoch (each
    restarts the loader's iterator from its own thread), an epoch left early in between."""
    sampler = EpochSampler(12, seed=0)
    loader = DataLoader(
        Squares(), batch_size=4, sampler=sampler, num_workers=2, persistent_workers=True
    )
    for epoch in range(3):
        sampler.set_epoch(epoch)
        expected = [batch["x"] for batch in loader]
        sampler.set_epoch(epoch)
        got = []
        for batch in prefetched(loader, CPU):
            got.append(batch["x"])
            if epoch == 1 and len(got) == 1:
                break  # a loop that stops early: the next epoch must still read cleanly
        if epoch != 1:
            assert len(got) == len(expected) == 3
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=False))
        assert not prefetch_threads()


def test_auto_prefetches_on_cuda_only() -> None:
    assert prefetches("auto", torch.device("cuda"))
    assert not prefetches("auto", torch.device("cpu"))
    assert prefetches(True, torch.device("cpu")) and not prefetches(False, torch.device("cuda"))
