"""The dataset of videos stored as files (mp4, webm, ...), decoded by a chosen backend."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from rnlvideo.data.decoders import read_video_frames, resolve_backend
from rnlvideo.data.frames import DEFAULT_MIN_FRAMES, ClipDataset, OffsetsFn
from rnlvideo.data.lists import VideoRecord
from rnlvideo.data.transforms import VideoTransform

logger = logging.getLogger(__name__)


class VideoFileDataset(ClipDataset):
    """Videos as files ``root/<record.path>``, decoded by ``video_backend``.

    ``video_backend``: ``auto`` (the first usable of PyAV, torchcodec, decord) or one of
    :data:`rnlvideo.data.decoders.VIDEO_BACKENDS`; it is resolved when the dataset is built, so a
    backend that is not installed fails then. Every backend gives the same frames for the same
    indices (:mod:`rnlvideo.data.decoders`).

    List lines are ``path num_frames label`` or ``path label``. Frames are sampled from the
    container's own frame count (a list count that differs is reported by
    ``tools/check_dataset.py --decode``). ``min_frames`` leaves out the videos whose list count
    is smaller when the dataset is built; a video whose container holds fewer frames (the only
    count of a ``path label`` line) raises :class:`VideoDataError` when it is read, which goes
    through ``on_error``.
    ``num_threads`` is the decoder's per-video thread count (1 suits DataLoader workers).
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
        video_backend: str = "auto",
    ) -> None:
        self.video_backend = resolve_backend(video_backend)
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
        logger.info("%s: videos decoded with %s", self.list_file, self.video_backend)

    def read_clip(self, record: VideoRecord, offsets_for: OffsetsFn) -> torch.Tensor:
        return read_video_frames(
            self.video_location(record),
            offsets_for,
            self.video_backend,
            self.num_threads,
            self.min_frames,
        )
