"""Transforms of uint8 videos ``(T, C, H, W)`` with explicit, per-sample randomness.

Every transform is called as ``transform(video, rng)`` with an ``np.random.Generator`` so a
dataset can seed each sample; one random draw is shared by all frames of the clip. The
geometric transforms keep uint8; ``Normalize`` returns float32. A frame too small for a crop
raises :class:`FrameSizeError` (the datasets turn it into an error naming the video).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTI_SCALES = (1, 0.875, 0.75, 0.66)
# TSM snaps a crop side to the output size when they differ by less than this many pixels.
_SNAP_DISTANCE = 3


class FrameSizeError(ValueError):
    """The frames are too small for a transform's crop."""


class VideoTransform(Protocol):
    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor: ...


def _resize_square(video: torch.Tensor, size: int) -> torch.Tensor:
    return F.resize(video, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def crop_sizes(
    image_w: int,
    image_h: int,
    output_size: int,
    scales: Sequence[float] = MULTI_SCALES,
    max_distort: int = 1,
) -> list[tuple[int, int]]:
    """The candidate ``(crop_w, crop_h)`` pairs of ``MultiScaleCrop``, in TSM order.

    Sides are ``int(min(w, h) * s)`` for each scale ``s``, replaced by ``output_size`` when
    within 3 px of it (``|side - output_size| < 3``); a pair combines the height of scale ``i``
    with the width of scale ``j`` for ``|i - j| <= max_distort``, ``i`` the outer loop.
    """
    base = min(image_w, image_h)
    sides = [int(base * s) for s in scales]
    sides = [output_size if abs(side - output_size) < _SNAP_DISTANCE else side for side in sides]
    return [
        (crop_w, crop_h)
        for i, crop_h in enumerate(sides)
        for j, crop_w in enumerate(sides)
        if abs(i - j) <= max_distort
    ]


def fixed_crop_offsets(
    image_w: int, image_h: int, crop_w: int, crop_h: int, more_fix_crop: bool = True
) -> list[tuple[int, int]]:
    """The ``(x, y)`` top-left corners of the fixed crop grid, steps ``(image - crop) // 4``.

    Order: upper-left, upper-right, lower-left, lower-right, centre; then with
    ``more_fix_crop``: centre-left, centre-right, lower-centre, upper-centre, and the upper-left,
    upper-right, lower-left, lower-right quarter points (13 in all).
    """
    w_step = (image_w - crop_w) // 4
    h_step = (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
    if more_fix_crop:
        grid += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * w_step, j * h_step) for i, j in grid]


class MultiScaleCrop:
    """TSM's multi-scale fixed-corner crop, resized to ``(output_size, output_size)``.

    A ``(crop_w, crop_h)`` pair is drawn uniformly from ``crop_sizes``, then a corner uniformly
    from ``fixed_crop_offsets``; the same crop is cut from every frame and resized bilinearly
    with antialiasing. ``(T, C, H, W)`` uint8 -> ``(T, C, output_size, output_size)`` uint8.
    """

    def __init__(
        self,
        output_size: int,
        scales: Sequence[float] = MULTI_SCALES,
        max_distort: int = 1,
        more_fix_crop: bool = True,
    ) -> None:
        self.output_size = output_size
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = max_distort
        self.more_fix_crop = more_fix_crop

    def candidate_sizes(self, image_w: int, image_h: int) -> list[tuple[int, int]]:
        """``crop_sizes`` for a ``image_w x image_h`` frame; FrameSizeError if one does not fit.

        A crop side below 1 px (frames under 2 px) or beyond the frame (a side snapped up to
        the output size) cannot be cut; every candidate is checked so that a video fails
        whatever the draw.
        """
        sizes = crop_sizes(image_w, image_h, self.output_size, self.scales, self.max_distort)
        if any(not (1 <= w <= image_w and 1 <= h <= image_h) for w, h in sizes):
            raise FrameSizeError(
                f"frames of {image_h}x{image_w} px are too small for MultiScaleCrop to "
                f"{self.output_size} px (crop sizes {sorted(set(sizes))})"
            )
        return sizes

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        image_h, image_w = video.shape[-2:]
        sizes = self.candidate_sizes(image_w, image_h)
        crop_w, crop_h = sizes[rng.integers(len(sizes))]
        corners = fixed_crop_offsets(image_w, image_h, crop_w, crop_h, self.more_fix_crop)
        x, y = corners[rng.integers(len(corners))]
        crop = video[..., y : y + crop_h, x : x + crop_w]
        return _resize_square(crop, self.output_size)


class ResizeShorter:
    """Resize so the shorter side is ``size`` (aspect kept; bilinear, antialiased).

    ``(..., C, H, W)`` uint8 -> ``(..., C, H', W')`` uint8 with ``min(H', W') == size``.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return F.resize(
            video, [self.size], interpolation=InterpolationMode.BILINEAR, antialias=True
        )


class CenterCrop:
    """The central ``size x size`` crop (torchvision rounding): ``(..., C, size, size)``.

    Frames smaller than ``size`` raise FrameSizeError.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        image_h, image_w = video.shape[-2:]
        if min(image_h, image_w) < self.size:
            raise FrameSizeError(
                f"CenterCrop({self.size}) needs frames at least that big, got {image_h}x{image_w}"
            )
        return F.center_crop(video, [self.size, self.size])


class ThreeCrop:
    """TSM's "full-res" views: three ``size x size`` crops along the longer side.

    With ``step = (long - size) // 4`` the crops start at ``0``, ``2*step`` and ``4*step``
    along the longer side (left, centre, right for landscape frames) and at
    ``(short - size) // 4 * 2`` along the shorter one.
    ``(T, C, H, W)`` -> ``(3, T, C, size, size)``, views in the order left, centre, right.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        image_h, image_w = video.shape[-2:]
        if min(image_h, image_w) < self.size:
            raise FrameSizeError(
                f"ThreeCrop({self.size}) needs frames at least that big, got {image_h}x{image_w}"
            )
        w_step = (image_w - self.size) // 4
        h_step = (image_h - self.size) // 4
        if image_w >= image_h:
            corners = [(i * w_step, 2 * h_step) for i in (0, 2, 4)]
        else:
            corners = [(2 * w_step, i * h_step) for i in (0, 2, 4)]
        return torch.stack([video[..., y : y + self.size, x : x + self.size] for x, y in corners])


class Normalize:
    """uint8 ``(..., C, H, W)`` -> float32 ``(x / 255 - mean) / std`` per channel."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        mean_tensor = torch.tensor([float(m) for m in mean]).view(-1, 1, 1)
        std_tensor = torch.tensor([float(s) for s in std]).view(-1, 1, 1)
        # x * scale - shift in place is ~4x faster than the textbook formula on large clips.
        self.scale = 1 / (255 * std_tensor)
        self.shift = mean_tensor / std_tensor

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if video.dtype != torch.uint8:
            raise TypeError(f"Normalize expects a uint8 video, got {video.dtype}")
        return video.to(torch.float32).mul_(self.scale).sub_(self.shift)


class Compose:
    """Apply transforms in order, handing each the same generator."""

    def __init__(self, transforms: Sequence[VideoTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for transform in self.transforms:
            video = transform(video, rng)
        return video


def _check_crop_within_scale(input_size: int, scale_size: int) -> None:
    if input_size > scale_size:
        raise ValueError(
            f"crop size {input_size} exceeds scale_size {scale_size} (the shorter side after "
            "resizing): check data.input_size / protocol.crop_size against data.scale_size"
        )


def train_transform(
    input_size: int = 224,
    scales: Sequence[float] = MULTI_SCALES,
    max_distort: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Something-Something training: MultiScaleCrop + Normalize, NO flip (labels say left/right).

    ``(T, C, H, W)`` uint8 -> ``(T, C, input_size, input_size)`` float32.
    """
    return Compose([MultiScaleCrop(input_size, scales, max_distort), Normalize(mean, std)])


def val_transform(
    input_size: int = 224,
    scale_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Single-view evaluation: shorter side to ``scale_size``, centre crop, Normalize.

    ``(T, C, H, W)`` uint8 -> ``(T, C, input_size, input_size)`` float32.
    """
    _check_crop_within_scale(input_size, scale_size)
    return Compose([ResizeShorter(scale_size), CenterCrop(input_size), Normalize(mean, std)])


def three_crop_transform(
    input_size: int = 256,
    scale_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """The "full-res" test protocol: shorter side to ``scale_size``, three crops, Normalize.

    ``(T, C, H, W)`` uint8 -> ``(3, T, C, input_size, input_size)`` float32.
    """
    _check_crop_within_scale(input_size, scale_size)
    return Compose([ResizeShorter(scale_size), ThreeCrop(input_size), Normalize(mean, std)])
