"""SGD / AdamW over named parameter groups (:mod:`rnlvideo.engine.param_groups`), and
per-iteration LR schedules that rescale every group by its own lr multiplier."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from rnlvideo.engine.param_groups import parameter_groups


def create_sgd(
    model: nn.Module,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    nesterov: bool = False,
    policy: str = "release",
    fc_weight_lr_mult: float = 5.0,
    fc_bias_lr_mult: float = 10.0,
    no_weight_decay_norm_bias: bool = False,
) -> torch.optim.SGD:
    """SGD over the groups of ``policy`` (``release``, ``tsm`` or ``simple``).

    ``lr`` is the base learning rate; each group trains at ``lr * lr_mult`` with
    ``weight_decay`` or none, as :func:`rnlvideo.engine.param_groups.parameter_groups` says.
    """
    groups = parameter_groups(
        model,
        lr,
        weight_decay,
        policy,
        fc_weight_lr_mult,
        fc_bias_lr_mult,
        no_weight_decay_norm_bias,
    )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def create_adamw(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    betas: Sequence[float] = (0.9, 0.999),
    policy: str = "simple",
    fc_weight_lr_mult: float = 1.0,
    fc_bias_lr_mult: float = 1.0,
    no_weight_decay_norm_bias: bool = True,
) -> torch.optim.AdamW:
    """AdamW over the groups of ``policy`` (fast convergence when training from scratch).

    The update runs as torch's fused kernel when every parameter is on a CPU or CUDA device
    (the same update in one pass over memory), else as torch's default implementation.
    """
    groups = parameter_groups(
        model,
        lr,
        weight_decay,
        policy,
        fc_weight_lr_mult,
        fc_bias_lr_mult,
        no_weight_decay_norm_bias,
    )
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)


def warmup_factor(step: int, warmup_steps: int, start_factor: float) -> float:
    """Linear ramp from ``start_factor`` to 1 over ``warmup_steps`` iterations."""
    return start_factor + (1.0 - start_factor) * step / warmup_steps


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
    policy: str = "cosine",
    warmup_epochs: float = 1.0,
    warmup_start_factor: float = 0.1,
    milestones: Sequence[int] = (20, 40),
    gamma: float = 0.1,
    min_lr_factor: float = 0.0,
) -> LambdaLR:
    """A per-iteration schedule: linear warmup from ``lr * warmup_start_factor``, then decay.

    ``policy``: ``cosine`` (to ``min_lr_factor * lr`` at the last iteration) or ``step``
    (multiply by ``gamma`` at each epoch in ``milestones``). The scheduler is stepped once per
    optimiser step; ``steps_per_epoch`` counts optimiser steps, not loader batches.
    """
    if policy not in ("cosine", "step"):
        raise ValueError(f"schedule.policy={policy!r}: expected 'cosine' or 'step'")
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_factor(step, warmup, warmup_start_factor)
        if policy == "step":
            epoch = step // steps_per_epoch
            return gamma ** sum(epoch >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
