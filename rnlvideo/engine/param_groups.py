"""Optimiser parameter groups ("policies"): the RNL release's, TSM's, or a simple split.

Every trainable tensor falls in exactly one named group with an lr multiplier and either the
full weight decay or none. The policies (``optim.policy``):

- ``release``: the official RNL release's groups. Convolution / linear weights x1 with decay,
  their biases x2 without, BatchNorm weights and biases x1 without; inside the non-local blocks
  (the release's ``nl`` modules: :class:`RNLBlock`, :class:`NLBlock`) the first parameter of
  every layer (conv weight, BatchNorm weight) is ``nl_weight`` (x1, decay) and the second
  ``nl_bias`` (x2, no decay). Quirk, kept because the published models were trained with it:
  the release's region-aggregation layer registers a fixed mask before its kernel, so the kernel
  is that layer's "second parameter" and lands in ``nl_bias``; our
  :class:`RegionAggregation` ``weight`` therefore trains at x2 without decay.
- ``tsm``: TSM's groups, the same rules without the non-local case: every conv / linear weight
  (region aggregation included) x1 with decay, every bias x2 without, every BatchNorm (also
  inside non-local blocks) x1 without.
- ``simple``: ``decay`` / ``no_decay`` (with ``no_weight_decay_norm_bias``: normalisation
  parameters and biases undecayed) for the demo and AdamW.

In every policy the classifier (``head.fc``, or the model's ``classifier_prefix``:
``blocks.5.proj.`` of a pytorchvideo X3D) weight trains at ``fc_weight_lr_mult`` (5) with
decay and its bias at ``fc_bias_lr_mult`` (10); ``release`` and ``tsm`` never decay the bias.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from rnlvideo.config.schema import OPTIM_POLICIES
from rnlvideo.models.nonlocal_blocks import NLBlock, RegionAggregation, RNLBlock
from rnlvideo.models.weights import classifier_prefix

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, RegionAggregation)
_SIMPLE_NORMS = (_NormBase, nn.GroupNorm, nn.LayerNorm)


def _group_table(
    policy: str, fc_weight_lr_mult: float, fc_bias_lr_mult: float, fc_bias_decay: bool
) -> dict[str, tuple[float, bool]]:
    """``{group name: (lr multiplier, decayed)}`` of ``policy``, in optimiser order."""
    classifier = {
        "fc_weight": (fc_weight_lr_mult, True),
        "fc_bias": (fc_bias_lr_mult, fc_bias_decay),
    }
    if policy == "simple":
        return {"decay": (1.0, True), "no_decay": (1.0, False), **classifier}
    table = {"weight": (1.0, True), "bias": (2.0, False), "bn": (1.0, False)}
    if policy == "release":
        table.update(nl_weight=(1.0, True), nl_bias=(2.0, False))
    return {**table, **classifier}


def _nonlocal_layers(model: nn.Module) -> set[int]:
    """``id`` of every module inside an RNL / NL block (the release's ``nl`` modules)."""
    return {
        id(inner)
        for block in model.modules()
        if isinstance(block, RNLBlock | NLBlock)
        for inner in block.modules()
    }


def _release_or_tsm_group(
    policy: str, name: str, module: nn.Module, param_name: str, in_nonlocal: bool
) -> str:
    if policy == "release" and in_nonlocal and isinstance(module, (*_WEIGHT_LAYERS, _BatchNorm)):
        # The release files a layer's second parameter as a bias; see the module docstring.
        second = param_name == "bias" or isinstance(module, RegionAggregation)
        return "nl_bias" if second else "nl_weight"
    if isinstance(module, _WEIGHT_LAYERS):
        return "bias" if param_name == "bias" else "weight"
    if isinstance(module, _BatchNorm):
        return "bn"
    raise ValueError(
        f"optim.policy={policy!r}: no rule for parameter {name} of a {type(module).__name__}; "
        f"this policy knows convolutions, linear layers and BatchNorm (use "
        f"optim.policy=simple for other layers)"
    )


def _simple_group(module: nn.Module, param: torch.Tensor, no_weight_decay_norm_bias: bool) -> str:
    if no_weight_decay_norm_bias and (isinstance(module, _SIMPLE_NORMS) or param.ndim <= 1):
        return "no_decay"
    return "decay"


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    policy: str = "simple",
    fc_weight_lr_mult: float = 5.0,
    fc_bias_lr_mult: float = 10.0,
    no_weight_decay_norm_bias: bool = False,
) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` in the named groups of ``policy``.

    Each group is a dict for ``torch.optim``: ``name``, ``params`` as ``(name, tensor)`` pairs
    (the optimiser keeps the names in ``param_names``), ``lr_mult`` (schedules rescale each
    group's lr by its own multiplier), ``lr = lr * lr_mult`` and ``weight_decay`` (the full
    ``weight_decay`` or 0). Empty groups are left out. Frozen tensors (``requires_grad``
    false) belong to no group.

    Raises:
        ValueError: an unknown ``policy``; ``no_weight_decay_norm_bias`` with a policy other
            than ``simple``; a layer type ``release`` / ``tsm`` have no rule for.
    """
    if policy not in OPTIM_POLICIES:
        raise ValueError(f"optim.policy={policy!r}: expected one of {', '.join(OPTIM_POLICIES)}")
    if no_weight_decay_norm_bias and policy != "simple":
        raise ValueError(
            f"optim.no_weight_decay_norm_bias=true only applies to optim.policy=simple; "
            f"optim.policy={policy!r} fixes the decay of every group itself"
        )
    fc_bias_decay = policy == "simple" and not no_weight_decay_norm_bias
    table = _group_table(policy, fc_weight_lr_mult, fc_bias_lr_mult, fc_bias_decay)
    members: dict[str, list[tuple[str, nn.Parameter]]] = {key: [] for key in table}
    classifier = classifier_prefix(model)
    nonlocal_layers = _nonlocal_layers(model)
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{param_name}" if module_name else param_name
            bare = name.removeprefix("module.").removeprefix("_orig_mod.")
            if bare.startswith(classifier):
                key = "fc_bias" if param_name == "bias" else "fc_weight"
            elif policy == "simple":
                key = _simple_group(module, param, no_weight_decay_norm_bias)
            else:
                in_nonlocal = id(module) in nonlocal_layers
                key = _release_or_tsm_group(policy, name, module, param_name, in_nonlocal)
            members[key].append((name, param))
    return [
        {
            "name": key,
            "params": members[key],
            "lr_mult": lr_mult,
            "lr": lr * lr_mult,
            "weight_decay": weight_decay if decayed else 0.0,
        }
        for key, (lr_mult, decayed) in table.items()
        if members[key]
    ]


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Per group of ``optimizer``: name, tensor and element counts, lr, multiplier, decay.

    ``lr`` is the group's current learning rate (the base lr times ``lr_mult`` before any
    schedule step); ``param_names`` lists the tensors when the optimiser has their names.
    """
    rows = []
    for index, group in enumerate(optimizer.param_groups):
        rows.append(
            {
                "name": group.get("name", f"group{index}"),
                "tensors": len(group["params"]),
                "elements": sum(p.numel() for p in group["params"]),
                "lr": group.get("initial_lr", group["lr"]),
                "lr_mult": group.get("lr_mult", 1.0),
                "weight_decay": group["weight_decay"],
                "param_names": list(group.get("param_names", [])),
            }
        )
    return rows


def format_groups(rows: Sequence[dict[str, Any]]) -> str:
    """``describe_groups`` rows as an aligned text table (one line per group, then the total)."""
    lines = [f"{'group':<10} {'tensors':>7} {'elements':>11} {'lr':>10} {'x lr':>5} {'wd':>8}"]
    for row in rows:
        lines.append(
            f"{row['name']:<10} {row['tensors']:>7} {row['elements']:>11} {row['lr']:>10.4g} "
            f"{row['lr_mult']:>5g} {row['weight_decay']:>8.2g}"
        )
    tensors = sum(row["tensors"] for row in rows)
    elements = sum(row["elements"] for row in rows)
    lines.append(f"{'total':<10} {tensors:>7} {elements:>11}")
    return "\n".join(lines)


def write_groups(path: str | Path, rows: Sequence[dict[str, Any]], policy: str) -> None:
    """``{"policy": ..., "groups": rows}`` as JSON at ``path``."""
    Path(path).write_text(json.dumps({"policy": policy, "groups": list(rows)}, indent=2) + "\n")
