"""TSM ResNets: torchvision ResNet + temporal shift + non-local placement + TSN head.

State-dict layout of :class:`TSMResNet`:

- ``backbone.<torchvision ResNet keys>`` without ``fc``: torchvision weights load unchanged;
- ``nonlocal_blocks.<stage>_<block>.<i>.<block keys>``: blocks run after that residual block;
- ``head.fc.weight|bias``: the classifier.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from rnlvideo.models.activation_checkpointing import check_checkpointing_mode, run_checkpointed
from rnlvideo.models.nonlocal_blocks import (
    ChannelGate,
    NLBlock,
    RNLBlock,
    check_attention_precision,
)
from rnlvideo.models.temporal_shift import TemporalShift
from rnlvideo.models.weights import torchvision_state_dict

logger = logging.getLogger(__name__)

STAGES = ("layer1", "layer2", "layer3", "layer4")
SHIFT_PLACES = ("blockres", "block", "none")


def _choices(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


class _ShiftedResidual:
    """Forward of a torchvision residual block with an optional TSM temporal shift.

    ``shift_place``: ``"blockres"`` shifts the residual branch input only (the identity path
    sees the unshifted input), ``"block"`` shifts the block input for both paths, ``"none"``
    does not shift. Shapes: ``(N*T, C, H, W) -> (N*T, C', H', W')``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shift_place = "none"
        self.temporal_shift: nn.Module = nn.Identity()

    def set_temporal_shift(self, num_segments: int, shift_div: int, shift_place: str) -> None:
        if shift_place not in SHIFT_PLACES:
            raise ValueError(
                f"shift_place={shift_place!r}: expected one of {_choices(SHIFT_PLACES)}"
            )
        self.shift_place = shift_place
        self.temporal_shift = (
            nn.Identity() if shift_place == "none" else TemporalShift(num_segments, shift_div)
        )

    def forward(self, x: Tensor) -> Tensor:
        shifted = self.temporal_shift(x)
        if self.shift_place == "block":
            x = shifted
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual_branch(shifted) + identity)


def _used_taps(kernel: int, padding: int, stride: int, size: int) -> tuple[int, int, int]:
    """``(first, last, right padding)``: the kernel taps that ever touch an input of ``size``.

    Taps outside ``[first, last]`` only ever multiply padding zeros. With ``first`` and
    ``padding - first`` as the new left padding and the returned right padding, the cropped
    kernel gives the same output positions.
    """
    out = (size + 2 * padding - kernel) // stride + 1
    if out > 1 and stride > size:  # the used taps are not one run; keep them all
        return 0, kernel - 1, padding
    first = max(0, padding - (out - 1) * stride)
    last = min(kernel - 1, padding + size - 1)
    left = padding - first
    return first, last, max(0, (out - 1) * stride + last - first + 1 - size - left)


def conv_on_map(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, computed without the kernel taps that only see padding on a small map.

    On a map as small as the kernel (the last stages of a ResNet on 32x32 inputs), some taps of
    a zero-padded kernel multiply nothing but padding: dropping them changes no output and no
    gradient (theirs are exactly zero either way), and the CPU backward of a 3x3 kernel on a 1x1
    map is about 20 times slower than that of the 1x1 kernel it reduces to. Only while
    gradients are recorded; inference and FLOP counting run the convolution as it is.
    """
    if not torch.is_grad_enabled() or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return conv(x)
    if not isinstance(conv.padding, tuple) or x.shape[-1] > conv.kernel_size[1]:
        return conv(x)
    rows = _used_taps(conv.kernel_size[0], conv.padding[0], conv.stride[0], x.shape[-2])
    cols = _used_taps(conv.kernel_size[1], conv.padding[1], conv.stride[1], x.shape[-1])
    if (rows[1] - rows[0], cols[1] - cols[0]) == (conv.kernel_size[0] - 1, conv.kernel_size[1] - 1):
        return conv(x)
    weight = conv.weight[:, :, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1]
    pads = (conv.padding[1] - cols[0], cols[2], conv.padding[0] - rows[0], rows[2])
    return F.conv2d(F.pad(x, pads), weight, conv.bias, conv.stride, 0, 1, conv.groups)


class TSMBasicBlock(_ShiftedResidual, BasicBlock):
    """torchvision ``BasicBlock`` (same parameter names) with the temporal shift."""

    def residual_branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(conv_on_map(self.conv1, x)))
        return self.bn2(conv_on_map(self.conv2, out))


class TSMBottleneck(_ShiftedResidual, Bottleneck):
    """torchvision ``Bottleneck`` (same parameter names) with the temporal shift."""

    def residual_branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(conv_on_map(self.conv2, out)))
        return self.bn3(self.conv3(out))


_ARCHITECTURES: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (TSMBasicBlock, [2, 2, 2, 2]),
    34: (TSMBasicBlock, [3, 4, 6, 3]),
    50: (TSMBottleneck, [3, 4, 6, 3]),
    101: (TSMBottleneck, [3, 4, 23, 3]),
}


class TSNHead(nn.Module):
    """Dropout, per-frame Linear classifier, average over frames ("avg consensus").

    Shapes: ``(N, T, D) -> (N, num_classes)``.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features)).mean(dim=1)


def _run_on_clips(blocks: nn.Module, frames: Tensor, num_segments: int) -> Tensor:
    """Apply ``(N, C, T, H, W)`` blocks to frames folded as ``(N*T, C, H, W)``."""
    clips = frames.unflatten(0, (-1, num_segments)).transpose(1, 2)
    return blocks(clips).transpose(1, 2).flatten(0, 1)


def _maybe_checkpointed(
    enabled: bool, module: nn.Module, function: Callable[..., Tensor], *args: Any
) -> Tensor:
    """``function(*args)``, under activation checkpointing of ``module`` if ``enabled``."""
    return run_checkpointed(module, function, *args) if enabled else function(*args)


class TSMResNet(nn.Module):
    """TSM ResNet video classifier (timm-style interface); build it with :func:`create_tsm_resnet`.

    Attributes:
        backbone: torchvision ``ResNet`` whose blocks shift in time, ``fc`` replaced by Identity.
        nonlocal_blocks: ``ModuleDict`` ``"<stage>_<block>" -> Sequential`` of
            ``(N, C, T, H, W)`` blocks run after that residual block's output.
        head: :class:`TSNHead`.
        num_segments: frames per clip ``T`` the model expects.
        num_classes: number of output logits.
        num_features: per-frame feature size ``D``.
        partial_bn: whether ``train()`` keeps every backbone BatchNorm2d but the first frozen.
        activation_checkpointing: ``"none"``, ``"nonlocal"`` (the non-local blocks recompute
            their activations in the backward pass) or ``"all"`` (also the stem and every
            residual block). Only in training mode with gradients enabled; settable.
    """

    def __init__(
        self,
        backbone: ResNet,
        nonlocal_blocks: nn.ModuleDict,
        head: TSNHead,
        num_segments: int,
        partial_bn: bool = False,
        activation_checkpointing: str = "none",
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        self.backbone = backbone
        self.nonlocal_blocks = nonlocal_blocks
        self.head = head
        self.num_segments = num_segments
        self.num_classes = head.fc.out_features
        self.num_features = head.fc.in_features
        self.partial_bn = partial_bn
        if partial_bn:
            for bn in self._partial_bn_layers():
                bn.requires_grad_(False)
        self.train(self.training)

    @property
    def activation_checkpointing(self) -> str:
        return self._activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, mode: str) -> None:
        self._activation_checkpointing = check_checkpointing_mode(mode)

    def _partial_bn_layers(self) -> list[nn.Module]:
        # Matched by base class, not BatchNorm2d, so that SyncBatchNorm conversion keeps them.
        return [
            m
            for m in self.backbone.modules()
            if isinstance(m, _BatchNorm) and m is not self.backbone.bn1
        ]

    def train(self, mode: bool = True) -> "TSMResNet":
        """As ``nn.Module.train``; with ``partial_bn`` the frozen BatchNorm2d stay in eval mode."""
        super().train(mode)
        if mode and self.partial_bn:
            for bn in self._partial_bn_layers():
                bn.eval()
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """Per-frame pooled features: ``(N, 3, T, H, W) -> (N, T, D)``."""
        if x.ndim != 5:
            raise ValueError(f"expected clips (N, 3, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] != self.num_segments:
            raise ValueError(
                f"input has T = {x.shape[2]} frames (shape {tuple(x.shape)}) but the model "
                f"was built with num_segments = {self.num_segments}"
            )
        n, t = x.shape[0], x.shape[2]
        frames = x.transpose(1, 2).flatten(0, 1)  # (N*T, 3, H, W)
        backbone = self.backbone
        recompute = self.training and torch.is_grad_enabled()
        blocks_too = recompute and self.activation_checkpointing == "all"
        video_blocks = recompute and self.activation_checkpointing != "none"
        out = _maybe_checkpointed(blocks_too, backbone.bn1, self._stem, frames)
        for stage in STAGES:
            for index, block in enumerate(getattr(backbone, stage)):
                out = _maybe_checkpointed(blocks_too, block, block, out)
                key = f"{stage}_{index}"
                if key in self.nonlocal_blocks:
                    blocks = self.nonlocal_blocks[key]
                    out = _maybe_checkpointed(video_blocks, blocks, _run_on_clips, blocks, out, t)
        return torch.flatten(backbone.avgpool(out), 1).view(n, t, -1)

    def _stem(self, frames: Tensor) -> Tensor:
        """conv1, bn1, relu, max-pool: ``(N*T, 3, H, W) -> (N*T, C, H/4, W/4)``."""
        backbone = self.backbone
        return backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(frames))))

    def forward_head(self, features: Tensor) -> Tensor:
        """Clip logits from per-frame features: ``(N, T, D) -> (N, num_classes)``."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Clip logits: ``(N, 3, T, H, W) -> (N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


# Options each kind of entry in `nonlocal_blocks` accepts, with their defaults.
_KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "rnl": {"kernel_size": (3, 7, 7), "ratio": 2, "sub_sample": False},
    "nl": {"ratio": 2, "sub_sample": True},
    "cg": {},
    "cg+rnl": {"kernel_size": (3, 7, 7), "ratio": 2, "sub_sample": False},
}
_REQUIRED_KEYS = ("stage", "block", "kind")
_ALL_KEYS = (*_REQUIRED_KEYS, "kernel_size", "ratio", "sub_sample")


@dataclass(frozen=True)
class _Placement:
    stage: str
    block: int
    kind: str
    options: dict[str, Any]


def _stage_channels(depth: int) -> dict[str, int]:
    block_type, _ = _ARCHITECTURES[depth]
    return {stage: 64 * 2**i * block_type.expansion for i, stage in enumerate(STAGES)}


def _parse_options(
    where: str, kind: str, entry: Mapping[str, Any], channels: int, stage: str
) -> dict[str, Any]:
    accepted = _KIND_OPTIONS[kind]
    options = dict(accepted)
    for key in sorted(entry.keys() - set(_REQUIRED_KEYS)):
        if key not in accepted:
            raise ValueError(
                f"{where}.{key}: not used by kind {kind!r} (it accepts: "
                f"{_choices(list(accepted)) or 'no options'})"
            )
        options[key] = entry[key]
    if "kernel_size" in options:
        kernel = options["kernel_size"]
        if (
            isinstance(kernel, str)
            or not isinstance(kernel, Sequence)
            or len(kernel) != 3
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in kernel)
            or not all(k > 0 and k % 2 == 1 for k in kernel)
        ):
            raise ValueError(
                f"{where}.kernel_size={kernel!r}: expected 3 positive odd integers [kt, kh, kw]"
            )
        options["kernel_size"] = tuple(kernel)
    if "ratio" in options:
        ratio = options["ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1 or channels % ratio:
            raise ValueError(
                f"{where}.ratio={ratio!r}: expected a positive integer dividing the "
                f"{channels} channels of {stage}"
            )
    if "sub_sample" in options and not isinstance(options["sub_sample"], bool):
        raise ValueError(f"{where}.sub_sample={options['sub_sample']!r}: expected true or false")
    return options


def _parse_placements(entries: Sequence[Mapping[str, Any]] | None, depth: int) -> list[_Placement]:
    """Validate the ``nonlocal_blocks`` config; errors name the entry, the key and what fits."""
    _, blocks_per_stage = _ARCHITECTURES[depth]
    channels = _stage_channels(depth)
    placements: list[_Placement] = []
    seen: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(entries or ()):
        where = f"nonlocal_blocks[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}={entry!r}: expected a mapping with keys stage, block, kind")
        entry = dict(entry)
        for key in entry:
            if key not in _ALL_KEYS:
                raise ValueError(
                    f"{where}.{key}: unknown key; expected one of {_choices(_ALL_KEYS)}"
                )
        for key in _REQUIRED_KEYS:
            if key not in entry:
                raise ValueError(f"{where}: missing key '{key}' (required: stage, block, kind)")
        stage, block, kind = entry["stage"], entry["block"], entry["kind"]
        if stage not in STAGES:
            raise ValueError(f"{where}.stage={stage!r}: expected one of {_choices(STAGES)}")
        num_blocks = blocks_per_stage[STAGES.index(stage)]
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < num_blocks:
            raise ValueError(
                f"{where}.block={block!r}: {stage} of resnet{depth} has blocks 0..{num_blocks - 1}"
            )
        if kind not in _KIND_OPTIONS:
            raise ValueError(
                f"{where}.kind={kind!r}: expected one of {_choices(list(_KIND_OPTIONS))}"
            )
        if (stage, block) in seen:
            raise ValueError(
                f"{where}: duplicate placement {stage} block {block}, already given by "
                f"nonlocal_blocks[{seen[stage, block]}]"
            )
        seen[stage, block] = index
        options = _parse_options(where, kind, entry, channels[stage], stage)
        placements.append(_Placement(stage, block, kind, options))
    return placements


def _build_nonlocal(
    placement: _Placement, channels: int, attention_precision: str
) -> nn.Sequential:
    options = {**placement.options, "attention_precision": attention_precision}
    if placement.kind == "nl":
        return nn.Sequential(NLBlock(channels, **options))
    if placement.kind == "cg":
        return nn.Sequential(ChannelGate(channels))
    rnl = RNLBlock(channels, **options)
    if placement.kind == "cg+rnl":
        return nn.Sequential(ChannelGate(channels), rnl)
    return nn.Sequential(rnl)


def block_shift_places(shift_place: str, layers: Sequence[int]) -> list[list[str]]:
    """The shift place of every residual block, per stage, following TSM's rule.

    ``"blockres"`` shifts every block, except in networks whose third stage has 23 or more
    blocks (ResNet-101): there TSM shifts only the blocks with an even index, in every stage.
    ``"block"`` and ``"none"`` apply to every block.

    Args:
        shift_place: ``"blockres"``, ``"block"`` or ``"none"``.
        layers: blocks per stage, e.g. ``[3, 4, 23, 3]``.

    Returns:
        One list per stage of ``"blockres"`` / ``"block"`` / ``"none"``, one entry per block.
    """
    every = 2 if shift_place == "blockres" and layers[2] >= 23 else 1
    return [
        [shift_place if index % every == 0 else "none" for index in range(blocks)]
        for blocks in layers
    ]


def _load_backbone_weights(backbone: ResNet, weights: str, depth: int) -> None:
    state = {k: v for k, v in torchvision_state_dict(weights).items() if not k.startswith("fc.")}
    expected = backbone.state_dict().keys()
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"weights={weights!r} do not fit a torchvision resnet{depth} backbone: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    backbone.load_state_dict(state, strict=True)
    logger.info("Loaded resnet%d backbone weights from %s", depth, weights)


def create_tsm_resnet(
    depth: int = 50,
    num_classes: int = 174,
    num_segments: int = 8,
    shift_div: int = 8,
    shift_place: str = "blockres",
    nonlocal_blocks: Sequence[Mapping[str, Any]] | None = (),
    dropout: float = 0.5,
    weights: str | None = None,
    partial_bn: bool = False,
    zero_init_residual: bool = False,
    activation_checkpointing: str = "none",
    attention_precision: str = "auto",
) -> TSMResNet:
    """Build a TSM ResNet video classifier, ``(N, 3, T, H, W) -> (N, num_classes)``.

    Args:
        depth: 18, 34, 50 or 101 (torchvision ResNet layouts and parameter names).
        num_classes: classifier outputs.
        num_segments: frames per clip ``T``; inputs must have exactly this many.
        shift_div: ``1 / shift_div`` of the channels shift each way in time.
        shift_place: ``"blockres"`` (shift inside each residual branch, before ``conv1``;
            in ResNet-101 only the even-indexed blocks of each stage, as TSM, see
            :func:`block_shift_places`), ``"block"`` (shift each block's input, both paths) or
            ``"none"`` (plain TSN).
        nonlocal_blocks: placements, each a mapping (plain or OmegaConf) with keys
            ``stage`` ("layer1".."layer4"), ``block`` (index in the stage), ``kind``
            ("rnl" | "nl" | "cg" | "cg+rnl") and optionally ``kernel_size`` ([kt, kh, kw],
            rnl kinds, default [3, 7, 7]), ``ratio`` (default 2) and ``sub_sample`` (default
            false for rnl kinds, true for nl). Blocks run after the residual block's output,
            ``cg+rnl`` runs the channel gate then RNL. Invalid entries raise ``ValueError``.
        dropout: dropout probability before the classifier.
        weights: backbone initialisation: ``None`` (random); a torchvision weights name such
            as ``"ResNet50_Weights.IMAGENET1K_V1"`` (downloaded by torchvision); or the path of
            a local file holding a torchvision ResNet state dict (optionally wrapped under a
            ``"state_dict"`` or ``"model"`` key). ``fc.*`` is dropped and the rest must match
            the backbone exactly, else ``ValueError`` lists the missing / unexpected keys.
        partial_bn: TSM's partial BN: in ``train()`` mode every backbone BatchNorm2d except
            the first (``backbone.bn1``) stays in eval mode with frozen affine parameters.
        zero_init_residual: with random initialisation, start every residual branch's last
            BatchNorm at zero (each block the identity: steadier training from scratch).
        activation_checkpointing: trade compute for memory in training: ``"none"`` keeps every
            activation for the backward pass; ``"nonlocal"`` keeps only the inputs of the
            non-local blocks and recomputes their insides in the backward pass; ``"all"``
            does the same for the stem and every residual block too. Gradients and
            BatchNorm statistics are those of ``"none"``; eval mode and ``torch.no_grad``
            run without it.
        attention_precision: under autocast (``train.amp``), the precision of the RNL / NL
            blocks' attention path: ``"auto"`` (float32 under fp16, bf16 under bf16),
            ``"fp32"`` or ``"amp"`` (the autocast dtype); no effect without autocast. See
            :mod:`rnlvideo.models.nonlocal_blocks`.

    Returns:
        The :class:`TSMResNet`; non-local blocks and the classifier are freshly initialised.
    """
    if depth not in _ARCHITECTURES:
        raise ValueError(f"depth={depth!r}: expected one of {sorted(_ARCHITECTURES)}")
    if shift_place not in SHIFT_PLACES:
        raise ValueError(f"shift_place={shift_place!r}: expected one of {_choices(SHIFT_PLACES)}")
    if num_segments < 1:
        raise ValueError(f"num_segments={num_segments!r}: expected a positive integer")
    check_checkpointing_mode(activation_checkpointing)
    check_attention_precision(attention_precision)
    placements = _parse_placements(nonlocal_blocks, depth)

    block_type, layers = _ARCHITECTURES[depth]
    backbone = ResNet(block_type, layers, zero_init_residual=zero_init_residual)
    backbone.fc = nn.Identity()
    if weights is not None:
        _load_backbone_weights(backbone, weights, depth)
    for stage, places in zip(STAGES, block_shift_places(shift_place, layers), strict=True):
        for block, place in zip(getattr(backbone, stage), places, strict=True):
            block.set_temporal_shift(num_segments, shift_div, place)

    channels = _stage_channels(depth)
    video_blocks = nn.ModuleDict(
        {
            f"{p.stage}_{p.block}": _build_nonlocal(p, channels[p.stage], attention_precision)
            for p in placements
        }
    )
    head = TSNHead(512 * block_type.expansion, num_classes, dropout)
    return TSMResNet(
        backbone,
        video_blocks,
        head,
        num_segments,
        partial_bn=partial_bn,
        activation_checkpointing=activation_checkpointing,
    )
