"""Total-batch arithmetic: gradient accumulation and the learning rate for any process count.

A recipe fixes the total batch (clips per optimiser step, ``train.total_batch_size``) and the
learning rate for a total batch (``optim.lr`` at ``train.lr_total_batch_size``). The per-process
batch (``train.batch_size``) and the number of processes only decide how that total is reached:
``accumulation = total / (per-process x processes)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    """How each optimiser step is made, and its learning rate."""

    per_process: int  # clips per process and per forward / backward pass
    processes: int
    accumulation: int  # passes accumulated into one optimiser step
    lr: float  # base learning rate for this total batch
    recipe_lr: float  # optim.lr
    lr_total_batch_size: int | None  # the total batch optim.lr is for (None: lr used as given)

    @property
    def total(self) -> int:
        """Clips per optimiser step."""
        return self.per_process * self.processes * self.accumulation

    def describe(self) -> str:
        """One log line, e.g. ``batch 4 per process x 4 processes x 4 accumulation = 64 ...``."""
        line = (
            f"batch {self.per_process} per process x {self.processes} processes x "
            f"{self.accumulation} accumulation = {self.total} clips per optimiser step; "
            f"lr {self.lr:.6g}"
        )
        if self.lr_total_batch_size is None:
            return line + " (optim.lr, not scaled)"
        if self.total == self.lr_total_batch_size:
            return line + f" (optim.lr, the recipe's lr at total {self.lr_total_batch_size})"
        return line + (
            f" (optim.lr={self.recipe_lr:.6g} at total {self.lr_total_batch_size}, scaled "
            f"linearly to total {self.total})"
        )


def valid_per_process_sizes(total: int, processes: int) -> list[int]:
    """Every per-process batch that reaches ``total`` exactly with ``processes`` processes."""
    if total % processes:
        return []
    per_step = total // processes
    return [size for size in range(1, per_step + 1) if per_step % size == 0]


def accumulation_steps(total: int | None, per_process: int, processes: int) -> int:
    """``total / (per_process x processes)``; 1 when ``total`` is None (no accumulation).

    Raises:
        ValueError: ``total`` is not a whole multiple of ``per_process x processes``; the
            message lists the per-process sizes that work.
    """
    if per_process < 1 or processes < 1:
        raise ValueError(
            f"train.batch_size={per_process} with {processes} processes: expected positive sizes"
        )
    if total is None:
        return 1
    step = per_process * processes
    if total >= step and total % step == 0:
        return total // step
    sizes = valid_per_process_sizes(total, processes)
    if not sizes:
        hint = (
            f"no per-process batch works: use a total that is a multiple of {processes}, or "
            f"another number of processes"
        )
    else:
        hint = f"per-process sizes that work: train.batch_size in {sizes}"
    raise ValueError(
        f"train.total_batch_size={total} is not reachable with train.batch_size={per_process} "
        f"per process x {processes} processes (x an integer accumulation); {hint}"
    )


def scaled_lr(lr: float, total: int, lr_total_batch_size: int | None) -> float:
    """``lr`` scaled linearly from ``lr_total_batch_size`` to ``total`` (as is when None)."""
    if lr_total_batch_size is None:
        return lr
    if lr_total_batch_size < 1:
        raise ValueError(
            f"train.lr_total_batch_size={lr_total_batch_size}: expected a positive total batch "
            f"or null"
        )
    return lr * total / lr_total_batch_size


def plan_batches(
    per_process: int,
    processes: int,
    total_batch_size: int | None,
    lr: float,
    lr_total_batch_size: int | None,
) -> BatchPlan:
    """The accumulation and learning rate that give ``total_batch_size`` on ``processes``.

    ``total_batch_size`` None means no accumulation (total = per-process x processes).
    """
    if total_batch_size is not None and total_batch_size < 1:
        raise ValueError(
            f"train.total_batch_size={total_batch_size}: expected a positive number of clips per "
            f"optimiser step, or null (no accumulation)"
        )
    accumulation = accumulation_steps(total_batch_size, per_process, processes)
    total = per_process * processes * accumulation
    return BatchPlan(
        per_process=per_process,
        processes=processes,
        accumulation=accumulation,
        lr=scaled_lr(lr, total, lr_total_batch_size),
        recipe_lr=lr,
        lr_total_batch_size=lr_total_batch_size,
    )
