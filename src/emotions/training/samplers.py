"""The one sampler training and validation use, on one process or many.

Why not torch's RandomSampler/DistributedSampler: a DataLoader built once with persistent
workers keeps its dataset copies for the whole run, so telling the dataset the epoch
(``set_epoch``) no longer reaches the workers. This sampler instead yields ``(epoch, index)``
keys, and the dataset derives a sample's augmentation from the key: the sample is a pure
function of (seed, epoch, index) whatever the worker count, the persistence or the rank. It can
also start an epoch part-way (``skip``), which is how a run resumes from a mid-epoch checkpoint
without reading the batches it already trained on.

The order: a permutation drawn from a generator seeded with ``seed * 1000 + epoch`` (the order
a ``RandomSampler`` with that generator gives on one process); under DDP the permutation is
padded to a multiple of the world size, as ``DistributedSampler`` does for training, and each
rank takes every ``world_size``-th key from its rank on. Validation passes ``pad=False``: the
shards are then disjoint and cover each clip exactly once, so all-reduced metrics count no
clip twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """(epoch, index) keys of one rank's share of an epoch, in a (seed, epoch)-fixed order."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and how many of this rank's leading keys to leave out."""
        if skip < 0 or skip > self.full_length:
            raise ValueError(f"skip {skip} is outside this rank's {self.full_length} samples")
        self.epoch, self.skip = epoch, skip

    @property
    def full_length(self) -> int:
        """This rank's number of samples in a whole epoch (no skip)."""
        if self.pad:
            return -(-self.size // self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return self.full_length - self.skip

    def indices(self) -> list[int]:
        """This rank's indices of the whole epoch, before ``skip``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and order:
            total = self.full_length * self.world_size
            order = (order * (-(-total // len(order))))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.indices()[self.skip :]:
            yield epoch, index
