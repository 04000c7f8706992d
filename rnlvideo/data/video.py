"""The dataset of videos stored as files (mp4, webm, ...), decoded with decord."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from rnlvideo.data.frames import DEFAULT_MIN_FRAMES, ClipDataset, OffsetsFn, VideoDataError
from rnlvideo.data.lists import VideoRecord
from rnlvideo.data.transforms import VideoTransform

logger = logging.getLogger(__name__)


def read_video_frames(
    path: Path, offsets_for: OffsetsFn, num_threads: int = 1, min_frames: int = 1
) -> torch.Tensor:
    """Decode the frames at ``offsets_for(len(video))`` of a video file.

    Returns uint8 ``(len(offsets), 3, H, W)``; each distinct frame is decoded once. A missing,
    empty or undecodable file, or one with fewer than ``min_frames`` frames (at least 1), raises
    :class:`VideoDataError` naming it.
    """
    import decord

    if not path.is_file():
        raise VideoDataError(f"video not found: {path}")
    errors = (RuntimeError, decord.DECORDError)
    try:
        reader = decord.VideoReader(str(path), num_threads=num_threads)
        num_frames = len(reader)
    except errors as exc:
        raise VideoDataError(f"cannot open video {path}: {exc}") from exc
    if num_frames < max(min_frames, 1):
        raise VideoDataError(
            f"video has {num_frames} frames, fewer than min_frames={max(min_frames, 1)}: {path}"
        )
    unique, positions = np.unique(offsets_for(num_frames), return_inverse=True)
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
    except errors as exc:
        raise VideoDataError(f"cannot decode video {path}: {exc}") from exc
    return torch.from_numpy(frames[positions]).permute(0, 3, 1, 2)


class VideoFileDataset(ClipDataset):
    """Videos as files ``root/<record.path>``, decoded with decord (``pip install decord``).

    List lines are ``path num_frames label`` or ``path label``. Frames are sampled from the
    container's own frame count (a list count that differs is reported by
    ``tools/check_dataset.py --decode``). ``min_frames`` leaves out the videos whose list count
    is smaller when the dataset is built; a video whose container holds fewer frames (the only
    count of a ``path label`` line) raises :class:`VideoDataError` when it is read, which goes
    through ``on_error``.
    ``num_threads`` is decord's per-video decoding thread count (1 suits DataLoader workers).
    Samples, views, randomness, list checks, ``on_error`` and ``device_transform``: see
    :class:`ClipDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        transform: VideoTransform,
        num_segments: int = 8,
        sampling: str = "tsn_train",
        num_clips: int = 1,
        seed: int = 0,
        min_frames: int = DEFAULT_MIN_FRAMES,
        on_error: str = "raise",
        device_transform: bool = False,
        horizontal_flip: bool = False,
        flip_label_map: Mapping[int, int] | str | Path | None = None,
        num_threads: int = 1,
        num_classes: int | None = None,
        slowfast_alpha: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video root directory not found: {self.root}")
        super().__init__(
            list_file,
            transform,
            num_segments=num_segments,
            sampling=sampling,
            num_clips=num_clips,
            seed=seed,
            min_frames=min_frames,
            on_error=on_error,
            device_transform=device_transform,
            horizontal_flip=horizontal_flip,
            flip_label_map=flip_label_map,
            num_classes=num_classes,
            slowfast_alpha=slowfast_alpha,
        )
        self.num_threads = num_threads

    def read_clip(self, record: VideoRecord, offsets_for: OffsetsFn) -> torch.Tensor:
        return read_video_frames(
            self.video_location(record), offsets_for, self.num_threads, self.min_frames
        )
