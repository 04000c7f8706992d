"""DataLoader construction shared by training and evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rnlvideo.engine.samplers import ShardedEvalSampler


def make_loader(
    dataset: Dataset,
    sampler: Sampler,
    batch_size: int,
    num_workers: int,
    drop_last: bool,
    seed: int = 0,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        # A private generator: creating loader iterators must not consume the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(seed),
    )


def make_eval_loader(
    dataset: Dataset, rank: int, world_size: int, batch_size: int, num_workers: int
) -> tuple[DataLoader, list[int]]:
    """This rank's shard of ``dataset`` (every video once over all ranks) and its indices."""
    sampler = ShardedEvalSampler(len(dataset), rank, world_size)
    loader = make_loader(dataset, sampler, batch_size, num_workers, drop_last=False)
    return loader, sampler.indices
