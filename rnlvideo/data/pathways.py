"""SlowFast's two-pathway input: a low-frame-rate clip beside the full-rate one.

``data.slowfast_alpha`` (the datasets' ``slowfast_alpha``) makes every sample ``[slow, fast]``
instead of one clip; a DataLoader collates it into a list of two batches, which the trainer and
the evaluation move, finish and split into views like a single clip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnlvideo.data.device_transforms import DeferredClip

Clip = Tensor | DeferredClip


def check_slowfast_alpha(slowfast_alpha: int | None, num_segments: int) -> None:
    """``slowfast_alpha`` must be None or a positive divisor of ``num_segments``."""
    if slowfast_alpha is None:
        return
    if not isinstance(slowfast_alpha, int) or slowfast_alpha < 1 or num_segments % slowfast_alpha:
        raise ValueError(
            f"data.slowfast_alpha={slowfast_alpha!r}: expected null or a positive divisor of "
            f"data.num_segments={num_segments} (the fast pathway's frame count)"
        )


def slow_frame_indices(frames: int, alpha: int) -> Tensor:
    """The ``frames // alpha`` frames of the slow pathway: ``linspace(0, frames - 1)`` rounded
    down, as the SlowFast and pytorchvideo model zoos pack them (``[0, 4, 8, 13, ...]`` for
    32 frames and alpha 4)."""
    return torch.linspace(0, frames - 1, frames // alpha).long()


def with_pathways(clip: Clip, slowfast_alpha: int | None) -> Clip | list[Clip]:
    """``clip`` as the data option presents it: itself (``slowfast_alpha`` None), else
    :func:`slowfast_pathways`."""
    return slowfast_pathways(clip, slowfast_alpha) if slowfast_alpha else clip


def slowfast_pathways(clip: Clip, alpha: int) -> list[Clip]:
    """``[slow, fast]`` of a clip whose frame axis is ``-3``.

    ``fast`` is ``clip`` itself: ``(C, T, H, W)``, views ``(V, C, T, H, W)``, or a
    :class:`DeferredClip` of such frames. ``slow`` holds its :func:`slow_frame_indices`
    frames, ``(..., C, T // alpha, H, W)``; a DeferredClip's boxes and sizes are per view and
    shared by both pathways.
    """
    frames = clip.frames if isinstance(clip, DeferredClip) else clip
    index = slow_frame_indices(frames.shape[-3], alpha)
    slow = frames.index_select(-3, index)
    if isinstance(clip, DeferredClip):
        return [DeferredClip(slow, clip.boxes, clip.sizes), clip]
    return [slow, clip]
