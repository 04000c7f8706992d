"""The dataset of videos stored as files (mp4, webm, ...), decoded with decord."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from rnlvideo.data.frames import ClipDataset, OffsetsFn, VideoDataError
from rnlvideo.data.lists import VideoRecord
from rnlvideo.data.transforms import VideoTransform

logger = logging.getLogger(__name__)


def read_video_frames(path: Path, offsets_for: OffsetsFn, num_threads: int = 1) -> torch.Tensor:
    """Decode the frames at ``offsets_for(len(video))`` of a video file.

    Returns uint8 ``(len(offsets), 3, H, W)``; each distinct frame is decoded once. A missing,
    empty or undecodable file raises :class:`VideoDataError` naming it.
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
    if num_frames < 1:
        raise VideoDataError(f"video has no frames: {path}")
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
    ``tools/check_dataset.py --decode``); the list count only serves ``min_frames``.
    ``num_threads`` is decord's per-video decoding thread count (1 suits DataLoader workers).
    Samples, views, randomness, ``on_error`` and ``device_transform``: see :class:`ClipDataset`.
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
        min_frames: int = 1,
        on_error: str = "raise",
        device_transform: bool = False,
        horizontal_flip: bool = False,
        flip_label_map: Mapping[int, int] | str | Path | None = None,
        num_threads: int = 1,
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
        )
        self.num_threads = num_threads

    def read_clip(self, record: VideoRecord, offsets_for: OffsetsFn) -> torch.Tensor:
        return read_video_frames(self.root / record.path, offsets_for, self.num_threads)
