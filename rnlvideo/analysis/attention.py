"""Affinity ("attention") maps of the RNL / NL blocks of a TSM ResNet for chosen query points.

A query is ``(t, y, x)``: frame index ``t`` of the clip and the position as fractions of the
frame height and width (``(T // 2, 0.5, 0.5)`` is the centre of the middle frame). The input of
the attention block is captured with a forward pre-hook while the model runs on the clip (for a
``cg+rnl`` entry that is the channel gate's output), then ``block.affinity`` gives the softmax
rows of the chosen query positions over every key position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnlvideo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

Query = tuple[int, float, float]


@dataclass
class AttentionMaps:
    """The attention of ``Q`` query points of one block over a ``T``-frame clip.

    Attributes:
        block: key of the block in ``model.nonlocal_blocks`` (e.g. ``"layer2_0"``).
        kind: class name of the attention module (``"RNLBlock"`` or ``"NLBlock"``).
        frames: ``(T, H, W, 3)`` uint8, the clip as the model saw it (de-normalised).
        queries: the ``Q`` queries ``(t, y, x)``, ``y`` and ``x`` fractions of the frame.
        query_cells: ``(Q, 3)`` long, each query's ``(t, row, col)`` on the block's input grid.
        affinity: ``(Q, T', H', W')`` float, each query's attention over the key grid (sums to
            1; ``H' x W'`` is the block's feature map, halved for sub-sampled keys).
    """

    block: str
    kind: str
    frames: Tensor
    queries: list[Query]
    query_cells: Tensor
    affinity: Tensor

    def heatmaps(self) -> Tensor:
        """``(Q, T, H, W)``: the affinity upsampled (bilinear) to the frames' size."""
        height, width = self.frames.shape[1:3]
        return F.interpolate(
            self.affinity, size=(height, width), mode="bilinear", align_corners=False
        )


class _InputCaptured(Exception):
    """Raised by the capture hook to stop the forward pass once the input is known."""


def attention_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The attention module (RNL / NL: any with an ``affinity`` method) of each entry of
    ``model.nonlocal_blocks``, by entry key; entries without one (a lone channel gate) are
    left out."""
    found = {}
    for key, blocks in model.nonlocal_blocks.items():
        attention = [m for m in blocks.modules() if callable(getattr(m, "affinity", None))]
        if attention:
            found[key] = attention[0]
    return found


def capture_input(model: nn.Module, module: nn.Module, clips: Tensor) -> Tensor:
    """The input ``module`` receives when ``model`` runs on ``clips`` ``(N, C, T, H, W)``.

    The forward pass stops right after ``module``'s input is captured.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured.append(args[0].detach())
        raise _InputCaptured

    handle = module.register_forward_pre_hook(hook)
    try:
        model(clips)
    except _InputCaptured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the attention block did not run in the model's forward pass")
    return captured[0]


def query_cells(queries: Sequence[Query], grid: Sequence[int]) -> Tensor:
    """``(Q, 3)`` long ``(t, row, col)`` cells of a ``(T, H, W)`` grid for ``(t, y, x)`` queries.

    ``y`` and ``x`` are fractions in ``[0, 1]``; ``1`` maps to the last row / column.
    """
    frames, height, width = grid
    cells = []
    for t, y, x in queries:
        if not 0 <= int(t) < frames:
            raise ValueError(f"query {(t, y, x)}: frame index must lie in [0, {frames})")
        if not (0.0 <= y <= 1.0 and 0.0 <= x <= 1.0):
            raise ValueError(f"query {(t, y, x)}: y and x are fractions of the frame in [0, 1]")
        cells.append((int(t), min(int(y * height), height - 1), min(int(x * width), width - 1)))
    return torch.tensor(cells, dtype=torch.long)


def denormalize(
    clip: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """A normalised clip ``(C, T, H, W)`` back to displayable uint8 frames ``(T, H, W, C)``."""
    mean_t = torch.tensor(mean, dtype=clip.dtype).view(-1, 1, 1, 1)
    std_t = torch.tensor(std, dtype=clip.dtype).view(-1, 1, 1, 1)
    pixels = ((clip.cpu() * std_t + mean_t) * 255).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(1, 2, 3, 0)


@torch.no_grad()
def attention_maps(
    model: nn.Module,
    clip: Tensor,
    block: str | None = None,
    queries: Sequence[Query] | None = None,
) -> AttentionMaps:
    """The attention maps of ``queries`` in block ``block`` for one normalised clip.

    Args:
        model: a ``TSMResNet`` (anything with ``nonlocal_blocks`` and ``forward(N,C,T,H,W)``).
        clip: ``(C, T, H, W)`` float, normalised as the model's inputs.
        block: key of ``model.nonlocal_blocks``; default: the first with an attention module.
        queries: ``(t, y, x)`` points; default: the centre of the middle frame.
    """
    blocks = attention_blocks(model)
    if not blocks:
        raise ValueError("the model has no RNL / NL block")
    block = block or next(iter(blocks))
    if block not in blocks:
        raise ValueError(f"block={block!r}: expected one of {sorted(blocks)}")
    module = blocks[block]
    frames = clip.shape[1]
    queries = list(queries) if queries else [(frames // 2, 0.5, 0.5)]
    model.eval()
    device = next(model.parameters()).device
    features = capture_input(model, module, clip.unsqueeze(0).to(device))  # (1, C, T, H, W)
    cells = query_cells(queries, features.shape[2:])
    t, h, w = features.shape[2:]
    flat = (cells[:, 0] * h + cells[:, 1]) * w + cells[:, 2]
    rows = module.affinity(features, flat.to(device))[0].float().cpu()  # (Q, L_keys)
    key_pool = getattr(module, "pool", nn.Identity())  # NL / RNL sub-sampling of the keys
    key_grid = key_pool(features[:, :1]).shape[2:]
    logger.info(
        "%s (%s): input %s, %d queries, keys %s",
        block,
        type(module).__name__,
        tuple(features.shape),
        len(queries),
        tuple(key_grid),
    )
    return AttentionMaps(
        block=block,
        kind=type(module).__name__,
        frames=denormalize(clip),
        queries=[(int(q[0]), float(q[1]), float(q[2])) for q in queries],
        query_cells=cells,
        affinity=rows.view(len(queries), *key_grid),
    )
