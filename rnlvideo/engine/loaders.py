"""DataLoader construction shared by training and evaluation."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from rnlvideo.data.frames import ExcludedVideo
from rnlvideo.engine.samplers import ShardedEvalSampler


def make_loader(
    dataset: Dataset,
    sampler: Sampler,
    batch_size: int,
    num_workers: int,
    drop_last: bool,
    seed: int = 0,
    timeout: float = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
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
        collate_fn=collate_fn,
        # A private generator: creating loader iterators must not consume the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(seed),
    )


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process checkpoints and stops the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collate_scored(samples: Sequence[tuple[Any, Any]]) -> tuple[Any, Any, torch.Tensor, list[str]]:
    """Collate an evaluation batch, setting apart the videos excluded by the dataset.

    ``samples`` are ``(clip, label)`` pairs; a clip may be an :class:`ExcludedVideo`
    (``on_error="exclude"``). Returns ``(clips, labels, scored, messages)``: the collated
    clips and labels of the other samples (both None if there are none), ``scored`` bool
    ``(B,)`` (False for an excluded sample, in batch order) and the excluded samples' error
    messages in batch order.
    """
    scored = [not isinstance(clip, ExcludedVideo) for clip, _ in samples]
    kept = [sample for sample, keep in zip(samples, scored, strict=True) if keep]
    clips, labels = default_collate(kept) if kept else (None, None)
    messages = [clip.message for clip, _ in samples if isinstance(clip, ExcludedVideo)]
    return clips, labels, torch.tensor(scored, dtype=torch.bool), messages


def make_eval_loader(
    dataset: Dataset, rank: int, world_size: int, batch_size: int, num_workers: int
) -> tuple[DataLoader, list[int]]:
    """This rank's shard of ``dataset`` (every video once over all ranks) and its indices.

    Batches are :func:`collate_scored`'s ``(clips, labels, scored, messages)``.
    """
    sampler = ShardedEvalSampler(len(dataset), rank, world_size)
    loader = make_loader(
        dataset, sampler, batch_size, num_workers, drop_last=False, collate_fn=collate_scored
    )
    return loader, sampler.indices
