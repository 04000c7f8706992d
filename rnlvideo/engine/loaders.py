"""DataLoader construction shared by training and evaluation."""

from __future__ import annotations

import signal

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
    timeout: float = 0,
) -> DataLoader:
    """A DataLoader whose workers leave Ctrl-C to the main process.

    ``timeout`` (seconds, 0: none) bounds the wait for one batch from the workers, so a worker
    stuck on a dead filesystem fails the run with a message instead of hanging it.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        timeout=timeout if num_workers > 0 else 0,
        worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
        # A private generator: creating loader iterators must not consume the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(seed),
    )


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process checkpoints and stops the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_eval_loader(
    dataset: Dataset, rank: int, world_size: int, batch_size: int, num_workers: int
) -> tuple[DataLoader, list[int]]:
    """This rank's shard of ``dataset`` (every video once over all ranks) and its indices."""
    sampler = ShardedEvalSampler(len(dataset), rank, world_size)
    loader = make_loader(dataset, sampler, batch_size, num_workers, drop_last=False)
    return loader, sampler.indices
