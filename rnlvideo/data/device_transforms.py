"""Device-side augmentation: resize and normalise whole batches on the training device.

The CPU half (a dataset with ``device_transform=True``) decodes the frames and makes every
random choice of the CPU pipeline with the same generator draws, but stops before the resize:
a sample is a :class:`DeferredClip` holding the uint8 pixels the resize reads, on a fixed
``S x S`` canvas (``S`` the output size), and the box to resample. The device half,
:class:`DeviceTransform`, resamples all boxes of a batch at once (``F.grid_sample``, bilinear)
and normalises: float ``(N, [V,] C, T, S, S)``, as the CPU pipeline would have returned.

Supported pipelines (``rnlvideo.data.transforms``): ``MultiScaleCrop + Normalize``
(training), ``ResizeShorter + CenterCrop + Normalize`` (validation) and
``ResizeShorter + ThreeCrop + Normalize`` (full-res test views).

Equivalence with the CPU pipeline: where the resize enlarges (every crop of
Something-Something V1, whose frames are 100 px tall) antialiased bilinear equals plain
bilinear, so the device output matches the CPU one up to the CPU path's rounding to uint8
(at most about 1 grey level, 0.3 on average, before normalisation). Where a crop would be
shrunk, plain bilinear would alias: for a 320 -> 224 shrink it differs from the antialiased CPU
resize by 16 grey levels on average (100 at most) on pixel noise, 0.5 (6) on smooth content.
So the CPU half does shrinking resizes itself, exactly as the CPU pipeline, and hands over the
finished ``S x S`` pixels with an identity box: the device then only normalises (still saving
the float conversion and 4x of the host-to-device traffic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnlvideo.data.transforms import (
    CenterCrop,
    Compose,
    MultiScaleCrop,
    Normalize,
    ResizeShorter,
    ThreeCrop,
    VideoTransform,
    fixed_crop_offsets,
)


class DeferredClip(NamedTuple):
    """Frames awaiting their resize: a CPU sample, or a collated batch (leading ``N``).

    - ``frames``: uint8 ``(..., S, S)`` canvases; the pixels the resize reads are the top-left
      ``sizes`` block (the rest is zero and never read).
    - ``boxes``: float32 ``(..., 4)``, ``(x0, y0, x1, y1)`` in canvas pixels: output pixel
      ``(i, j)`` of the ``S x S`` result samples ``(x0 + (j + .5) (x1 - x0) / S - .5,
      y0 + (i + .5) (y1 - y0) / S - .5)``, clamped to the content (``align_corners=False``).
    - ``sizes``: int64 ``(..., 2)``, the content's ``(height, width)``.
    """

    frames: torch.Tensor
    boxes: torch.Tensor
    sizes: torch.Tensor


Batch = torch.Tensor | DeferredClip  # one collated clip batch, complete or deferred


def _source_grid(
    boxes: torch.Tensor, sizes: torch.Tensor, canvas: tuple[int, int], output_size: int
) -> torch.Tensor:
    """``grid_sample`` grid ``(B, S, S, 2)`` for ``boxes`` ``(B, 4)`` and ``sizes`` ``(B, 2)``."""
    steps = (torch.arange(output_size, device=boxes.device, dtype=boxes.dtype) + 0.5) / output_size
    coords = []
    for start, end, extent, length in (
        (boxes[:, 0], boxes[:, 2], sizes[:, 1], canvas[1]),
        (boxes[:, 1], boxes[:, 3], sizes[:, 0], canvas[0]),
    ):
        source = start[:, None] + steps * (end - start)[:, None] - 0.5
        source = torch.minimum(source.clamp(min=0), (extent - 1)[:, None].to(source.dtype))
        coords.append((2 * source + 1) / length - 1)  # grid_sample's normalised coordinates
    x, y = coords
    size = (len(boxes), output_size, output_size)
    return torch.stack((x[:, None, :].expand(size), y[:, :, None].expand(size)), dim=-1)


class DeviceTransform(nn.Module):
    """Finish a batch of :class:`DeferredClip`: bilinear resample of each box, then normalise.

    ``frames`` uint8 ``(N, [V,] C, T, S_c, S_c)`` -> float32 ``(N, [V,] C, T, S, S)`` on the
    frames' device; one ``grid_sample`` call for the whole batch (all frames of a clip share its
    box). ``scale`` and ``shift`` (``(C, 1, 1)``) are those of the CPU pipeline's ``Normalize``:
    ``out = pixel * scale - shift``.
    """

    def __init__(self, output_size: int, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.output_size = output_size
        self.register_buffer("scale", scale.reshape(-1, 1, 1, 1).clone(), persistent=False)
        self.register_buffer("shift", shift.reshape(-1, 1, 1, 1).clone(), persistent=False)

    def forward(self, clip: DeferredClip) -> torch.Tensor:
        frames = clip.frames
        *lead, channels, time, height, width = frames.shape
        images = frames.reshape(-1, channels * time, height, width).float()
        grid = _source_grid(
            clip.boxes.reshape(-1, 4).float(),
            clip.sizes.reshape(-1, 2),
            (height, width),
            self.output_size,
        )
        out = F.grid_sample(images, grid, "bilinear", padding_mode="zeros", align_corners=False)
        size = self.output_size
        out = out.view(-1, channels, time, size, size).mul_(self.scale).sub_(self.shift)
        return out.view(*lead, channels, time, size, size)


def to_model_input(
    batch: tuple[Batch | list[Batch], torch.Tensor],
    device: torch.device,
    device_transform: DeviceTransform | None = None,
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """A loader batch ``(clips, labels)`` as model input on ``device``, in either data mode.

    CPU-complete clips are moved as they are; a :class:`DeferredClip` batch is moved (uint8)
    and finished by ``device_transform`` (the dataset's ``device_transform`` attribute).
    Returns float ``(N, [V,] C, T, S, S)`` clips and ``(N,)`` labels. A list of clip batches
    (the pathways of a SlowFast input, ``data.slowfast_alpha``) becomes a list of such clips.
    """
    clips, labels = batch
    labels = labels.to(device, non_blocking=True)
    if isinstance(clips, list):
        return [_on_device(part, device, device_transform) for part in clips], labels
    return _on_device(clips, device, device_transform), labels


def _on_device(
    clips: Batch, device: torch.device, device_transform: DeviceTransform | None
) -> torch.Tensor:
    if not isinstance(clips, DeferredClip):
        return clips.to(device, non_blocking=True)
    if device_transform is None:
        raise ValueError(
            "the loader returns deferred clips (data.device_transform=true) but no "
            "DeviceTransform was given: pass the dataset's device_transform"
        )
    moved = DeferredClip(*(part.to(device, non_blocking=True) for part in clips))
    return device_transform.to(device)(moved)


# ------------------------------------------------------------------------------ CPU half
def _on_canvas(region: torch.Tensor, size: int) -> torch.Tensor:
    """``(..., C, h, w)`` uint8 at the top-left of a zero ``(..., C, size, size)`` canvas."""
    canvas = region.new_zeros((*region.shape[:-2], size, size))
    canvas[..., : region.shape[-2], : region.shape[-1]] = region
    return canvas


def _finished(frames: torch.Tensor, views: int | None) -> DeferredClip:
    """Already resized ``S x S`` frames with identity boxes (the device only normalises)."""
    size = frames.shape[-1]
    box = torch.tensor([0.0, 0.0, size, size])
    shape = (4,) if views is None else (views, 4)
    sizes = torch.tensor([size, size]).expand(shape[:-1] + (2,))
    return DeferredClip(frames, box.expand(shape).clone(), sizes.clone())


def multiscale_crop_box(
    crop: MultiScaleCrop, image_w: int, image_h: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(x, y, crop_w, crop_h)`` that ``crop`` would cut, with the same generator draws."""
    sizes = crop.candidate_sizes(image_w, image_h)
    crop_w, crop_h = sizes[rng.integers(len(sizes))]
    corners = fixed_crop_offsets(image_w, image_h, crop_w, crop_h, crop.more_fix_crop)
    x, y = corners[rng.integers(len(corners))]
    return x, y, crop_w, crop_h


class DeferredMultiScaleCrop:
    """CPU half of ``MultiScaleCrop``: the crop on an ``S x S`` canvas and its box.

    ``(T, C, H, W)`` uint8 -> DeferredClip(``(T, C, S, S)``, ``(4,)``, ``(2,)``). A crop larger
    than ``S`` in either side is resized here (antialiased, as ``MultiScaleCrop``).
    """

    def __init__(self, crop: MultiScaleCrop) -> None:
        self.crop = crop

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> DeferredClip:
        size = self.crop.output_size
        state = rng.bit_generator.state
        x, y, crop_w, crop_h = multiscale_crop_box(self.crop, video.shape[-1], video.shape[-2], rng)
        if crop_w > size or crop_h > size:
            rng.bit_generator.state = state  # replay the same draws in the CPU transform
            return _finished(self.crop(video, rng), views=None)
        region = video[..., y : y + crop_h, x : x + crop_w]
        box = torch.tensor([0.0, 0.0, crop_w, crop_h])
        return DeferredClip(_on_canvas(region, size), box, torch.tensor([crop_h, crop_w]))


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """``(H', W')`` of ``ResizeShorter(shorter)``: torchvision's rule (long side truncated)."""
    if width <= height:
        return int(shorter * height / width), shorter
    return shorter, int(shorter * width / height)


def _crop_corners(crop: CenterCrop | ThreeCrop, height: int, width: int) -> list[tuple[int, int]]:
    """Top-left ``(x, y)`` of each view of ``crop`` on a ``height x width`` frame."""
    size = crop.size
    if isinstance(crop, CenterCrop):
        return [(int(round((width - size) / 2.0)), int(round((height - size) / 2.0)))]
    w_step, h_step = (width - size) // 4, (height - size) // 4
    if width >= height:
        return [(i * w_step, 2 * h_step) for i in (0, 2, 4)]
    return [(2 * w_step, i * h_step) for i in (0, 2, 4)]


def _source_span(start: float, end: float, output_size: int, limit: int) -> tuple[int, int]:
    """The pixel range ``[first, stop)`` bilinear resampling of ``[start, end)`` reads."""
    step = (end - start) / output_size
    low = start + 0.5 * step - 0.5
    high = end - 0.5 * step - 0.5
    return min(max(math.floor(low), 0), limit - 1), min(max(math.floor(high) + 2, 1), limit)


class DeferredResizeCrop:
    """CPU half of ``ResizeShorter`` followed by ``CenterCrop`` or ``ThreeCrop``.

    Each view's crop of the resized frame is mapped back to a box on the original frame; the
    pixels it reads are cut out onto an ``S x S`` canvas. ``(T, C, H, W)`` uint8 ->
    DeferredClip(``(T, C, S, S)``, ``(4,)``, ``(2,)``) for CenterCrop, with a leading 3 for
    ThreeCrop. Shrinking resizes, and views that do not fit the canvas, are done here.
    """

    def __init__(self, resize: ResizeShorter, crop: CenterCrop | ThreeCrop) -> None:
        self.resize = resize
        self.crop = crop
        self.views = None if isinstance(crop, CenterCrop) else 3

    def _on_cpu(self, video: torch.Tensor, rng: np.random.Generator) -> DeferredClip:
        return _finished(self.crop(self.resize(video, rng), rng), self.views)

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> DeferredClip:
        height, width = video.shape[-2:]
        size = self.crop.size
        resized_h, resized_w = resized_shape(height, width, self.resize.size)
        if min(height, width) > self.resize.size or min(resized_h, resized_w) < size:
            return self._on_cpu(video, rng)
        scale_x, scale_y = width / resized_w, height / resized_h
        canvases, boxes, sizes = [], [], []
        for x, y in _crop_corners(self.crop, resized_h, resized_w):
            x0, x1 = x * scale_x, (x + size) * scale_x
            y0, y1 = y * scale_y, (y + size) * scale_y
            left, right = _source_span(x0, x1, size, width)
            top, bottom = _source_span(y0, y1, size, height)
            if right - left > size or bottom - top > size:
                return self._on_cpu(video, rng)
            canvases.append(_on_canvas(video[..., top:bottom, left:right], size))
            boxes.append([x0 - left, y0 - top, x1 - left, y1 - top])
            sizes.append([bottom - top, right - left])
        if self.views is None:
            return DeferredClip(canvases[0], torch.tensor(boxes[0]), torch.tensor(sizes[0]))
        return DeferredClip(torch.stack(canvases), torch.tensor(boxes), torch.tensor(sizes))


DeferredTransformHalf = DeferredMultiScaleCrop | DeferredResizeCrop


class DeferredTransform:
    """A CPU pipeline split in two: ``self(video, rng)`` is the CPU half (-> DeferredClip),
    ``self.device_transform`` the device half."""

    def __init__(self, cpu_half: DeferredTransformHalf, device_transform: DeviceTransform) -> None:
        self.cpu_half = cpu_half
        self.device_transform = device_transform

    def __call__(self, video: torch.Tensor, rng: np.random.Generator) -> DeferredClip:
        return self.cpu_half(video, rng)


def _type_names(steps: Sequence[object]) -> str:
    return " + ".join(type(step).__name__ for step in steps)


def defer_transform(transform: VideoTransform) -> DeferredTransform:
    """Split a CPU pipeline of ``rnlvideo.data.transforms`` into its CPU and device halves.

    Supported: ``Compose([MultiScaleCrop, Normalize])`` (``train_transform``),
    ``Compose([ResizeShorter, CenterCrop | ThreeCrop, Normalize])`` (``val_transform``,
    ``three_crop_transform``); anything else raises ``ValueError``.
    """
    steps = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    *geometry, normalize = steps
    cpu_half: DeferredTransformHalf | None = None
    if isinstance(normalize, Normalize):
        if len(geometry) == 1 and isinstance(geometry[0], MultiScaleCrop):
            cpu_half = DeferredMultiScaleCrop(geometry[0])
            size = geometry[0].output_size
        elif (
            len(geometry) == 2
            and isinstance(geometry[0], ResizeShorter)
            and isinstance(geometry[1], (CenterCrop, ThreeCrop))
        ):
            cpu_half = DeferredResizeCrop(geometry[0], geometry[1])
            size = geometry[1].size
    if cpu_half is None:
        raise ValueError(
            "device_transform supports MultiScaleCrop + Normalize and ResizeShorter + "
            f"CenterCrop/ThreeCrop + Normalize pipelines, got {_type_names(steps)}"
        )
    return DeferredTransform(cpu_half, DeviceTransform(size, normalize.scale, normalize.shift))
