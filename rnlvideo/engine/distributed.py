"""Process-group set-up for torchrun (env://) launches, with a single-process fallback."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job and which device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(
    device: str = "auto", backend: str | None = None, timeout_s: float = 1800
) -> DistContext:
    """Join the process group that torchrun describes in the environment.

    Without torchrun's variables (``WORLD_SIZE`` unset or 1) this is a single-process run and no
    process group is created. The backend defaults to NCCL on GPU and gloo on CPU.
    ``timeout_s`` bounds every collective: a rank that waits longer for the others (one of them
    died or hangs) fails with an error instead of waiting forever.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch_device.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {
            "backend": backend,
            "init_method": "env://",
            "timeout": timedelta(seconds=timeout_s),
        }
        if backend == "nccl":
            kwargs["device_id"] = torch_device
        dist.init_process_group(**kwargs)
        logger.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return DistContext(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


T = TypeVar("T")


class MainRankError(RuntimeError):
    """Raised on the other ranks when a step that rank 0 runs alone failed there."""


def call_on_main(ctx: DistContext, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give its (picklable) result to every rank.

    If ``fn`` raises, rank 0 re-raises the error and every other rank raises MainRankError
    with its message, so no rank is left waiting for a rank that failed.
    """
    result, failure = None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as err:
            failure = err
    message = f"{type(failure).__name__}: {failure}" if failure is not None else None
    result, message = broadcast_object((result, message))
    if failure is not None:
        raise failure
    if message is not None:
        raise MainRankError(f"rank 0 failed: {message}")
    return result


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
