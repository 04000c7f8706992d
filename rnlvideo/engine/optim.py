"""Optimiser with the official recipe's parameter groups, and per-iteration LR schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

CLASSIFIER_PREFIX = "head.fc."


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    fc_weight_lr_mult: float = 5.0,
    fc_bias_lr_mult: float = 10.0,
    no_weight_decay_norm_bias: bool = False,
) -> list[dict]:
    """Split trainable parameters into the recipe's groups.

    The classifier (``head.fc``, or the model's ``classifier_prefix``: ``blocks.5.proj.`` of a
    pytorchvideo X3D) weight trains at ``lr * fc_weight_lr_mult`` and its bias at
    ``lr * fc_bias_lr_mult``. With ``no_weight_decay_norm_bias`` every normalisation parameter and
    every bias is excluded from weight decay. Each group records its ``lr_mult`` so schedules can
    rescale it; empty groups are dropped.
    """
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
        for p in m.parameters(recurse=False)
    }
    groups: dict[str, dict] = {
        "decay": {"params": [], "lr_mult": 1.0, "weight_decay": weight_decay},
        "no_decay": {"params": [], "lr_mult": 1.0, "weight_decay": 0.0},
        "fc_weight": {"params": [], "lr_mult": fc_weight_lr_mult, "weight_decay": weight_decay},
        "fc_bias": {"params": [], "lr_mult": fc_bias_lr_mult, "weight_decay": weight_decay},
    }
    classifier = getattr(model, "classifier_prefix", CLASSIFIER_PREFIX)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        bare = name.removeprefix("module.").removeprefix("_orig_mod.")
        if bare.startswith(classifier):
            key = "fc_weight" if bare.endswith("weight") else "fc_bias"
            if key == "fc_bias" and no_weight_decay_norm_bias:
                groups[key]["weight_decay"] = 0.0
        elif no_weight_decay_norm_bias and (id(param) in norm_params or param.ndim <= 1):
            key = "no_decay"
        else:
            key = "decay"
        groups[key]["params"].append(param)
    result = []
    for name, group in groups.items():
        if group["params"]:
            result.append({**group, "name": name, "lr": lr * group["lr_mult"]})
    return result


def create_sgd(
    model: nn.Module,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    nesterov: bool = False,
    fc_weight_lr_mult: float = 5.0,
    fc_bias_lr_mult: float = 10.0,
    no_weight_decay_norm_bias: bool = False,
) -> torch.optim.SGD:
    """SGD over :func:`parameter_groups` (the official RNL / TSM recipe)."""
    groups = parameter_groups(
        model, lr, weight_decay, fc_weight_lr_mult, fc_bias_lr_mult, no_weight_decay_norm_bias
    )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def create_adamw(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    betas: Sequence[float] = (0.9, 0.999),
    fc_weight_lr_mult: float = 1.0,
    fc_bias_lr_mult: float = 1.0,
    no_weight_decay_norm_bias: bool = True,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` (fast convergence when training from scratch)."""
    groups = parameter_groups(
        model, lr, weight_decay, fc_weight_lr_mult, fc_bias_lr_mult, no_weight_decay_norm_bias
    )
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


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
