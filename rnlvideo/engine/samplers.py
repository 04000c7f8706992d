"""Samplers: a resumable shuffled sampler for training and an exact sharded one for evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[int]):
    """DistributedSampler semantics, plus starting part-way through an epoch.

    The epoch's permutation depends only on ``(seed, epoch)``; it is padded by repetition so every
    rank gets ``ceil(len / world_size)`` indices, and rank ``r`` takes positions ``r::world_size``.
    ``set_epoch(epoch, start=k)`` skips this rank's first ``k`` indices, so a run resumed
    mid-epoch sees exactly the batches the interrupted one had still to see.
    """

    def __init__(
        self,
        dataset_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.dataset_size = dataset_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_samples = math.ceil(dataset_size / world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=g).tolist()
        else:
            order = list(range(self.dataset_size))
        total = self.num_samples * self.world_size
        order += (order * math.ceil(total / max(1, len(order))))[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardedEvalSampler(Sampler[int]):
    """Rank ``r`` gets indices ``r, r + W, r + 2W, ...``: every sample exactly once, no padding."""

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, dataset_size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
