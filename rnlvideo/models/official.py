"""Read checkpoints of the official TSM and RNL releases into :class:`TSMResNet` state dicts.

The releases save a TSN wrapper (usually from ``DataParallel``) whose keys look like::

    module.base_model.conv1.weight                  -> backbone.conv1.weight
    module.base_model.layer1.0.conv1.net.weight     -> backbone.layer1.0.conv1.weight
    module.base_model.layer2.0.block.bn1.weight     -> backbone.layer2.0.bn1.weight
    module.base_model.layer2.0.cg.W_k.weight        -> nonlocal_blocks.layer2_0.0.W_k.weight
    module.base_model.layer2.0.nl.theta.weight      -> nonlocal_blocks.layer2_0.1.theta.weight
    module.base_model.layer2.0.nl.penta.weight      -> nonlocal_blocks.layer2_0.1.aggregation.weight
    module.base_model.layer2.0.nl.penta.mask        -> (checked, then dropped)
    module.base_model.layer3.0.nl.g.0.weight        -> nonlocal_blocks.layer3_0.0.g.weight (TSM NL)
    module.new_fc.weight                            -> head.fc.weight

``conv1.net`` is TSM's "blockres" shift wrapper (``net`` alone wraps a whole block with the
"block" shift), ``block`` / ``nl`` / ``cg`` the release's non-local wrapper around a residual
block. TSM's NL blocks hold ``g`` and ``phi`` as ``Sequential(conv, max-pool)`` (keys ``g.0.*``)
when they sub-sample, as plain convs otherwise. The release's masked grouped aggregation weight
``(C', C'/groups, k...)`` becomes our depthwise ``(C', 1, k...)`` by keeping, for output channel
``i``, input channel ``i % (C'/groups)``: the only one its mask lets through.
"""

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnlvideo.models.nonlocal_blocks import ChannelGate, NLBlock, RNLBlock
from rnlvideo.models.tsm_resnet import STAGES, TSMResNet

logger = logging.getLogger(__name__)

_WRAPPED = re.compile(r"(?P<stage>layer[1-4])\.(?P<block>\d+)\.(?P<part>nl|cg)\.(?P<tail>.+)")
_RESIDUAL = re.compile(r"(?P<prefix>layer[1-4]\.\d+\.)(?P<tail>.+)")
_METADATA_KEYS = ("epoch", "best_prec1", "arch")
_BLOCK_KEY = re.compile(
    r"base_model\.(?P<stage>layer[1-4])\.(?P<block>\d+)\.(?:block\.)?(?P<rest>.+)"
)


class OfficialCheckpointError(ValueError):
    """An official checkpoint does not fit the configured model; the message says how."""


def read_official_checkpoint(
    path: str | Path, trust_source: bool = False
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict and metadata (``epoch``, ``best_prec1``, ``arch``) of a release file.

    Loads with ``torch.load(weights_only=True)``. A file that needs full unpickling (e.g. it
    holds an ``argparse.Namespace``) is refused unless ``trust_source``, which allows
    ``weights_only=False``: only for files from a source you trust, since unpickling can run
    arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_source:
            raise OfficialCheckpointError(
                f"{path}: holds objects other than tensors and plain containers, which "
                f"torch.load(weights_only=True) refuses ({_first_line(err)}). If you trust its "
                f"source, allow full unpickling with --trust-source (trust_source=True)."
            ) from err
        logger.warning(
            "%s: loading with weights_only=False, which can run code in the file (trusted "
            "source): %s",
            path,
            _first_line(err),
        )
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    return _split_checkpoint(loaded, path)


def _first_line(err: Exception) -> str:
    # torch's message wraps the first line in ANSI bold codes.
    return re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()[0]


def _split_checkpoint(loaded: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        state, metadata = loaded["state_dict"], _plain_metadata(loaded)
    else:
        state, metadata = loaded, {}
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise OfficialCheckpointError(
            f"{path}: expected a state dict of tensors, or a dict with one under 'state_dict'"
        )
    return dict(state), metadata


def _plain_metadata(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """``epoch``, ``best_prec1`` and ``arch`` as plain Python values (weights_only-safe)."""
    metadata: dict[str, Any] = {}
    for key in _METADATA_KEYS:
        value = checkpoint.get(key)
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        elif hasattr(value, "item") and not isinstance(value, str):  # NumPy scalars
            value = value.item()
        if isinstance(value, bool | int | float | str):
            metadata[key] = value
    return metadata


def _video_block_indices(model: TSMResNet) -> dict[tuple[str, str], tuple[int, nn.Module]]:
    """``(stage_block, "nl" | "cg") -> (index in its Sequential, block)`` of ``model``."""
    indices = {}
    for key, blocks in model.nonlocal_blocks.items():
        for index, block in enumerate(blocks):
            part = "cg" if isinstance(block, ChannelGate) else "nl"
            indices[key, part] = (index, block)
    return indices


def _residual_key(key: str) -> str:
    """``layerX.i.[block.][net.]conv1.net.<p>`` -> ``layerX.i.conv1.<p>`` (wrappers removed)."""
    match = _RESIDUAL.fullmatch(key)
    if match is None:
        return key
    tail = match["tail"]
    while tail.startswith(("block.", "net.")):
        tail = tail.split(".", 1)[1]
    return match["prefix"] + re.sub(r"^(conv1)\.net\.", r"\1.", tail)


def _nonlocal_key(tail: str, block: nn.Module) -> str:
    """The key inside one of our blocks of a key inside the release's ``nl`` / ``cg``."""
    if isinstance(block, NLBlock):
        return re.sub(r"^(g|phi)\.0\.", r"\1.", tail)
    if isinstance(block, RNLBlock) and tail == "penta.weight":
        return "aggregation.weight"
    return tail


def _our_key(key: str, video_blocks: Mapping[tuple[str, str], tuple[int, nn.Module]]) -> str | None:
    """Our key for an official key (``module.`` already removed), or None if it has no place."""
    for head in ("new_fc.", "base_model.fc."):
        if key.startswith(head):
            return "head.fc." + key.removeprefix(head)
    if not key.startswith("base_model."):
        return None
    key = key.removeprefix("base_model.")
    wrapped = _WRAPPED.fullmatch(key)
    if wrapped is None:
        return "backbone." + _residual_key(key)
    found = video_blocks.get((f"{wrapped['stage']}_{wrapped['block']}", wrapped["part"]))
    if found is None:
        return None
    index, block = found
    return f"nonlocal_blocks.{wrapped['stage']}_{wrapped['block']}.{index}." + _nonlocal_key(
        wrapped["tail"], block
    )


def depthwise_from_masked_grouped(weight: Tensor, mask: Tensor, where: str) -> Tensor:
    """The release's masked grouped ``penta`` weight as our depthwise ``(C', 1, k...)`` weight.

    Args:
        weight: ``(C', C'/groups, kt, kh, kw)``.
        mask: same shape, must be the release's fixed pattern ``mask[i, i % (C'/groups)] = 1``.
        where: the block's name, for error messages.
    """
    if weight.shape != mask.shape or weight.ndim != 5 or weight.shape[0] % weight.shape[1]:
        raise OfficialCheckpointError(
            f"{where}: penta.weight {tuple(weight.shape)} and penta.mask {tuple(mask.shape)} are "
            f"not a grouped (C', C'/groups, kt, kh, kw) pair"
        )
    rows = torch.arange(weight.shape[0])
    columns = rows % weight.shape[1]
    expected = torch.zeros_like(mask)
    expected[rows, columns] = 1
    if not torch.equal(mask, expected):
        raise OfficialCheckpointError(
            f"{where}: penta.mask is not the release's pattern mask[i, i % (C'/groups)] = 1 "
            f"(ones everywhere over the kernel, zeros elsewhere); it is not a depthwise conv"
        )
    return weight[rows, columns].unsqueeze(1)


def _check_pooling(official: Mapping[str, Tensor], video_blocks: Mapping) -> None:
    """TSM NL blocks that sub-sample store ``g.0.*``; the configured ``sub_sample`` must agree."""
    for (stage_block, part), (_, block) in video_blocks.items():
        if not isinstance(block, NLBlock):
            continue
        prefix = "base_model." + stage_block.replace("_", ".") + ".nl.g."
        layouts = {
            key.removeprefix(prefix)[:2] == "0." for key in official if key.startswith(prefix)
        }
        pooled = isinstance(block.pool, nn.MaxPool3d)
        if layouts and layouts != {pooled}:
            raise OfficialCheckpointError(
                f"{stage_block} {part}: the checkpoint's NL block "
                f"{'sub-samples' if not pooled else 'does not sub-sample'} keys and values but "
                f"the configured one has sub_sample={pooled}"
            )


def require_tsm_resnet(model: nn.Module, configured: str = "the configured model") -> None:
    """Refuse, with a clear message, to convert into anything but a :class:`TSMResNet`.

    ``configured`` names the model in the message (e.g. ``model._target_=...``).
    """
    if isinstance(model, TSMResNet):
        return
    raise OfficialCheckpointError(
        f"{configured} builds a {type(model).__module__}.{type(model).__name__}, not a TSM "
        "ResNet: official checkpoints are TSM / RNL releases and convert into TSM ResNets only "
        "(model=tsm_r50, tsm_r101, ...). The pytorchvideo baselines (x3d_s, x3d_m, slow_r50, "
        "slowfast_r50) need no conversion: train them with tools/train.py, or start from "
        "pytorchvideo model-zoo weights with model.weights=PATH."
    )


def _official_shift_places(official: Mapping[str, Tensor]) -> dict[str, str]:
    """``"layerX.i" -> "blockres" | "block" | "none"``: what the key layout says of each block.

    TSM's shift wrapper leaves its trace in the keys: ``conv1.net.*`` for the "blockres" shift,
    ``net.*`` around the whole block for "block"; an unshifted block has plain ``conv1.*``.
    """
    places: dict[str, str] = {}
    for key in official:
        match = _BLOCK_KEY.fullmatch(key)
        if match is None or match["rest"].startswith(("nl.", "cg.")):
            continue
        rest = match["rest"]
        place = "blockres" if rest.startswith("conv1.net.") else "none"
        place = "block" if rest.startswith("net.") else place
        block = f"{match['stage']}.{match['block']}"
        if places.get(block, "none") == "none":
            places[block] = place
    return places


def _check_shift_places(official: Mapping[str, Tensor], model: TSMResNet) -> None:
    """The checkpoint must shift exactly the residual blocks the configured model shifts."""
    theirs = _official_shift_places(official)
    different = [
        f"{stage}.{index}: checkpoint {theirs[f'{stage}.{index}']}, model {block.shift_place}"
        for stage in STAGES
        for index, block in enumerate(getattr(model.backbone, stage))
        if theirs.get(f"{stage}.{index}", block.shift_place) != block.shift_place
    ]
    if different:
        raise OfficialCheckpointError(
            "the official checkpoint shifts other residual blocks than the configured model "
            f"(check model.depth and model.shift_place): {'; '.join(different)}"
        )


def convert_official_state_dict(
    official: Mapping[str, Tensor], model: TSMResNet
) -> dict[str, Tensor]:
    """Map an official TSM / RNL state dict onto ``model``'s keys, shapes and dtypes.

    Args:
        official: the release's state dict, with or without the ``module.`` prefix.
        model: the configured target; only its structure and dtypes are used.

    Returns:
        A state dict that ``model.load_state_dict(..., strict=True)`` accepts.

    Raises:
        OfficialCheckpointError: listing the official keys with no place in ``model``, the keys
            of ``model`` the checkpoint lacks and shape mismatches; a bad ``penta.mask``;
            residual blocks whose temporal shift (``conv1.net`` / ``net`` in the keys) differs
            from the model's; or ``model`` is not a TSM ResNet.
    """
    require_tsm_resnet(model)
    stripped = {key.removeprefix("module."): value for key, value in official.items()}
    video_blocks = _video_block_indices(model)
    _check_pooling(stripped, video_blocks)
    _check_shift_places(stripped, model)
    target = model.state_dict()
    converted: dict[str, Tensor] = {}
    unmatched: list[str] = []
    for key, value in stripped.items():
        if key.endswith(".penta.mask"):
            continue
        ours = _our_key(key, video_blocks)
        if ours is None or ours not in target:
            unmatched.append(key)
            continue
        if key.endswith(".penta.weight"):
            mask_key = key.removesuffix("weight") + "mask"
            if mask_key not in stripped:
                raise OfficialCheckpointError(f"{key}: no {mask_key} next to it")
            value = depthwise_from_masked_grouped(value, stripped[mask_key], key)
        converted[ours] = value
    unmatched += [  # masks whose weight has no place either
        key
        for key in stripped
        if key.endswith(".penta.mask") and key.removesuffix("mask") + "weight" in unmatched
    ]
    for key in sorted(target.keys() - converted.keys()):
        if key.endswith("num_batches_tracked"):  # absent from checkpoints of torch < 0.4.1
            converted[key] = torch.zeros_like(target[key])
            logger.info("%s: not in the checkpoint, set to 0", key)
    missing = sorted(target.keys() - converted.keys())
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)}, model {tuple(target[key].shape)}"
        for key, value in converted.items()
        if value.shape != target[key].shape
    ]
    if unmatched or missing or mismatched:
        raise OfficialCheckpointError(
            "the official checkpoint does not match the configured architecture:\n"
            f"  official keys with no place in the model ({len(unmatched)}): {sorted(unmatched)}\n"
            f"  model keys missing from the checkpoint ({len(missing)}): {missing}\n"
            f"  shape mismatches ({len(mismatched)}): {mismatched}"
        )
    return {key: value.to(target[key].dtype) for key, value in converted.items()}
