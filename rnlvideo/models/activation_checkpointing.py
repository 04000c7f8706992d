"""Activation checkpointing that leaves BatchNorm running statistics alone when recomputing.

:func:`run_checkpointed` runs part of a model under :func:`torch.utils.checkpoint.checkpoint`
(non-reentrant, RNG state preserved): its forward keeps only the part's inputs, and the backward
pass reruns the forward to get the activations back. The recomputed forward is the same
computation, so gradients are the same; but a BatchNorm in training mode would update its
running mean / variance and ``num_batches_tracked`` a second time. During the recompute every
BatchNorm of the part (any ``_BatchNorm``: BatchNorm1d/2d/3d, SyncBatchNorm) that tracks
running statistics updates scratch copies of them instead: it runs the same operation on the
same batch statistics as in the first forward, and its own buffers change once per forward, as
without checkpointing.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

CHECKPOINTING_MODES = ("none", "nonlocal", "all")
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
# The fused attention kernels of scaled_dot_product_attention (CPU, CUDA flash / efficient /
# cuDNN): their outputs are kept, so that the backward pass does not run attention twice.
_ATTENTION_OPS = frozenset(
    getattr(torch.ops.aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
)


def check_checkpointing_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`CHECKPOINTING_MODES`, else a ``ValueError`` naming it."""
    if mode not in CHECKPOINTING_MODES:
        choices = ", ".join(repr(m) for m in CHECKPOINTING_MODES)
        raise ValueError(f"activation_checkpointing={mode!r}: expected one of {choices}")
    return mode


@contextmanager
def batchnorm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Within the context, the training-mode BatchNorms of ``module`` leave their buffers alone.

    Each such BatchNorm runs exactly as before (same operation, same batch statistics, same
    output and saved tensors) but updates scratch copies of ``running_mean``, ``running_var``
    and ``num_batches_tracked``; its own buffers are put back untouched on exit. BatchNorms in
    eval mode or without running statistics are left as they are.
    """
    swapped: list[tuple[nn.Module, str, Tensor]] = []
    for bn in module.modules():
        if isinstance(bn, _BatchNorm) and bn.training and bn.track_running_stats:
            for name in _STATISTICS:
                buffer = getattr(bn, name)
                if buffer is not None:
                    swapped.append((bn, name, buffer))
                    setattr(bn, name, buffer.clone())
    try:
        yield
    finally:
        for bn, name, buffer in swapped:
            setattr(bn, name, buffer)


def _keep_attention(_: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective checkpointing policy: keep the attention kernels' outputs, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


@contextmanager
def _recomputing(module: nn.Module, selective: Any) -> Iterator[None]:
    # Buffers are swapped before the selective mode starts: it expects exactly the forward's ops.
    with batchnorm_statistics_frozen(module), selective:
        yield


def _contexts(module: nn.Module) -> tuple[Any, Any]:
    """(forward context, recompute context) for :func:`torch.utils.checkpoint.checkpoint`."""
    forward, selective = create_selective_checkpoint_contexts(_keep_attention)
    return forward, _recomputing(module, selective)


def run_checkpointed(module: nn.Module, function: Callable[..., Tensor], *args: Any) -> Tensor:
    """``function(*args)`` with its activations recomputed in the backward pass.

    Args:
        module: the module(s) ``function`` runs; their BatchNorms keep their running
            statistics during the recompute.
        function: the forward to run, e.g. ``module`` itself.
        args: its arguments (tensors and plain values).

    Returns:
        ``function(*args)``; gradients flow to ``args`` and to the parameters as without
        checkpointing.
    """
    if torch.compiler.is_compiling():
        # Compiled graphs recompute only the values the backward needs and do not replay buffer
        # updates; there a context_fn may only return the selective-checkpointing modes.
        contexts = partial(create_selective_checkpoint_contexts, _keep_attention)
    else:
        contexts = partial(_contexts, module)
    return checkpoint(
        function, *args, use_reentrant=False, preserve_rng_state=True, context_fn=contexts
    )
