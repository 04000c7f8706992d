"""Parameter and multiply-accumulate (MAC) counts of video models, per block.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a real (or meta)
forward pass and reported as FLOPs / 2. Like the counter, only matrix products, convolutions and
attention count; normalisation, activations, softmax and pooling are free. On CPU the counter of
torch 2.14 has no formula for the fused attention kernel that
:func:`torch.nn.functional.scaled_dot_product_attention` runs, so it would count attention as
zero; :data:`CPU_ATTENTION_FORMULAS` adds its forward (two matrix products, ``2 * Lq * Lk * C'``
MACs), which :func:`rnl_block_macs` restates in closed form. On the meta device attention runs
as plain matrix products, which the counter sees.
"""

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from rnlvideo.models.nonlocal_blocks import NLBlock, RNLBlock
from rnlvideo.models.reference import ReferenceNLBlock, ReferenceRNLBlock
from rnlvideo.models.tsm_resnet import STAGES, TSMResNet

aten = torch.ops.aten
Shape = Sequence[int]


def _cpu_attention_flops(query: Shape, key: Shape, value: Shape, *_: Any, **__: Any) -> int:
    """Forward FLOPs of attention on ``(B, heads, L, d)`` inputs: ``Q K^T`` and ``P V``."""
    *batch, q_len, dim = query
    pairs = int(torch.Size(batch).numel()) * q_len * key[-2]
    return 2 * pairs * (dim + value[-1])


CPU_ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
}


@dataclass(frozen=True)
class CostRow:
    """One line of a cost table: a named part of a model, its parameters and MACs per view."""

    name: str
    params: int
    macs: int


def count_parameters(modules: nn.Module | Sequence[nn.Module]) -> int:
    """Number of parameters (every ``nn.Parameter``, trainable or not) of one or more modules."""
    modules = [modules] if isinstance(modules, nn.Module) else modules
    return sum(p.numel() for module in modules for p in module.parameters())


def count_macs(module: nn.Module, inputs: Tensor | list[Tensor]) -> int:
    """MACs (FLOPs / 2) of ``module(inputs)``, forward only, attention included."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)
    with torch.no_grad(), counter:
        module(inputs)
    return counter.get_total_flops() // 2


def _record_flops_inside(
    modules: Sequence[nn.Module], counter: FlopCounterMode, spent: list[int]
) -> list[RemovableHandle]:
    """Hooks adding to ``spent[0]`` the FLOPs ``counter`` counts while any of ``modules`` runs."""
    started: list[int] = []

    def before(*_: Any) -> None:
        started.append(counter.get_total_flops())

    def after(*_: Any) -> None:
        spent[0] += counter.get_total_flops() - started.pop()

    return [m.register_forward_pre_hook(before) for m in modules] + [
        m.register_forward_hook(after) for m in modules
    ]


def count_macs_by_part(
    model: nn.Module, inputs: Tensor | list[Tensor], parts: Mapping[str, Sequence[nn.Module]]
) -> tuple[int, dict[str, int]]:
    """Total MACs of ``model(inputs)`` and the MACs spent inside each named group of modules.

    The modules of different parts must not nest in one another (their MACs would be counted
    twice). Returns ``(total, {part name: MACs})``.
    """
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)
    spent = {name: [0] for name in parts}
    handles = [
        handle
        for name, modules in parts.items()
        for handle in _record_flops_inside(modules, counter, spent[name])
    ]
    try:
        with torch.no_grad(), counter:
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops() // 2, {name: flops[0] // 2 for name, flops in spent.items()}


def tsm_resnet_parts(model: TSMResNet) -> dict[str, list[nn.Module]]:
    """The rows of a TSM ResNet's cost table, in forward order.

    ``stem`` (conv1, bn1), each stage's residual blocks (``layer1``..``layer4``), each inserted
    video block (``layer2_0.0 ChannelGate``, ``layer2_0.1 RNLBlock``, ...), then ``head``.
    """
    backbone = model.backbone
    parts: dict[str, list[nn.Module]] = {"stem": [backbone.conv1, backbone.bn1]}
    for stage in STAGES:
        parts[stage] = list(getattr(backbone, stage))
    for key, blocks in model.nonlocal_blocks.items():
        for index, block in enumerate(blocks):
            parts[f"{key}.{index} {type(block).__name__}"] = [block]
    parts["head"] = [model.head]
    return parts


def tsm_resnet_cost(model: TSMResNet, input_size: int = 224) -> list[CostRow]:
    """Per-part parameters and MACs of one view ``(1, 3, T, S, S)``, ``S = input_size``.

    The model runs where its parameters are (use the meta device for a count without compute).
    Rows as :func:`cost_table`, parts from :func:`tsm_resnet_parts`.
    """
    parameter = next(model.parameters())
    view = torch.zeros(
        1, 3, model.num_segments, input_size, input_size, device=parameter.device
    ).to(parameter.dtype)
    return cost_table(model, view, tsm_resnet_parts(model))


def block_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The rows of a pytorchvideo ``Net``'s cost table: each of its ``blocks`` (stem, stages,
    head), named ``blocks.<i> <class>``."""
    return {f"blocks.{i} {type(block).__name__}": [block] for i, block in enumerate(model.blocks)}


def cost_table(
    model: nn.Module, inputs: Tensor | list[Tensor], parts: Mapping[str, Sequence[nn.Module]]
) -> list[CostRow]:
    """Per-part parameters and MACs of ``model(inputs)``, one row per part in order.

    ``inputs`` is one view (a batch of 1, or a list of such tensors for a multi-pathway model).
    The last row, ``total``, covers the whole model; MACs and parameters outside the named
    parts show as a row ``other`` before it.
    """
    total, by_part = count_macs_by_part(model, inputs, parts)
    rows = [CostRow(name, count_parameters(parts[name]), by_part[name]) for name in parts]
    unassigned = total - sum(by_part.values())
    unassigned_params = count_parameters(model) - sum(row.params for row in rows)
    if unassigned or unassigned_params:
        rows.append(CostRow("other", unassigned_params, unassigned))
    rows.append(CostRow("total", count_parameters(model), total))
    return rows


def release_form(model: TSMResNet) -> TSMResNet:
    """A copy of ``model`` whose RNL / NL blocks are the release's straightforward forms.

    Each :class:`RNLBlock` becomes a :class:`ReferenceRNLBlock` (masked grouped aggregation
    conv, materialised affinity) and each :class:`NLBlock` a :class:`ReferenceNLBlock`, holding
    the same weights; their cost is the official release's.
    """
    released = copy.deepcopy(model)
    for blocks in released.nonlocal_blocks.values():
        for index, block in enumerate(blocks):
            if isinstance(block, RNLBlock):
                blocks[index] = ReferenceRNLBlock.from_block(block)
            elif isinstance(block, NLBlock):
                blocks[index] = ReferenceNLBlock.from_block(block)
    return released


def rnl_block_macs(
    in_channels: int,
    clip: Sequence[int],
    kernel_size: Sequence[int] = (3, 7, 7),
    ratio: int = 2,
    sub_sample: bool = False,
    grouped: bool = False,
) -> int:
    """Closed-form forward MACs of one RNL block on one clip of ``clip = (T, H, W)`` positions.

    ``theta`` (``C * C' * L``), the aggregation (``C' * k * L`` depthwise, or
    ``C' * (C' / groups) * k * L`` as the release's grouped conv; none for a 1x1x1 kernel,
    which builds no aggregation), the attention's two products (``2 * L * L_k * C'``) and
    ``W`` (``C' * C * L``), with ``L = T*H*W`` and ``L_k = T*(H//2)*(W//2)`` under
    ``sub_sample`` (else ``L``).
    """
    t, h, w = clip
    inter = in_channels // ratio
    positions = t * h * w
    keys = t * (h // 2) * (w // 2) if sub_sample else positions
    kernel = int(torch.Size(kernel_size).numel())
    if kernel == 1:  # no region: no aggregation conv
        kernel = 0
    fan_in = inter // max(inter // 32, 1) if grouped else 1
    projections = 2 * in_channels * inter * positions
    return projections + inter * fan_in * kernel * positions + 2 * positions * keys * inter


def format_table(header: Sequence[str], lines: Sequence[Sequence[str]], markdown: bool) -> str:
    """A plain-text table (first column left-aligned, the others right-aligned) or markdown."""
    rows = [list(header), *map(list, lines)]
    if markdown:
        rows.insert(1, ["---"] * len(header))
        return "\n".join("| " + " | ".join(row) + " |" for row in rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
