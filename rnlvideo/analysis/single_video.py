"""One video, from a folder of frames, a packed frame file or a video file, as test views.

A frame folder holds JPEG files (``.jpg``, ``.jpeg``) taken in sorted name order, as
the datasets store them (``00001.jpg``, ...); a ``.pack`` file is a folder packed by
``tools/pack_frames.py``. A video file is decoded by the chosen backend (``data.video_backend``:
:mod:`rnlvideo.data.decoders`; install the ``video`` extra). The frames are sampled and
transformed as the evaluation protocols do (test-mode sampling and crops of
:class:`rnlvideo.engine.protocols.TestProtocol`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from rnlvideo.data.decoders import read_video_frames
from rnlvideo.data.frames import VideoDataError, arrange_views, load_frame, load_packed_frames
from rnlvideo.data.packed import PACK_SUFFIX, packed_count
from rnlvideo.data.sampling import sample_offsets
from rnlvideo.data.transforms import FrameSizeError
from rnlvideo.engine.protocols import TestProtocol

FRAME_SUFFIXES = (".jpg", ".jpeg")


def frame_files(folder: Path) -> list[Path]:
    """The JPEG files of a frame folder in sorted name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def read_clip(
    video: str | Path | torch.Tensor,
    offsets_for: Callable[[int], np.ndarray],
    video_backend: str = "auto",
) -> torch.Tensor:
    """The frames at ``offsets_for(number of frames)`` of a video.

    ``video`` is a frame folder, a packed frame file (``.pack``), a video file (decoded with
    ``video_backend``) or every frame of the video as a uint8 tensor ``(num_frames, 3, H, W)``.
    Returns uint8 ``(len(offsets), 3, H, W)``.
    """
    if isinstance(video, torch.Tensor):
        if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(
                f"expected a video as uint8 frames (num_frames, 3, H, W), got "
                f"{video.dtype} {tuple(video.shape)}"
            )
        return video[torch.from_numpy(offsets_for(len(video)))]
    path = Path(video)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.suffix == PACK_SUFFIX and path.is_file():
        try:
            offsets = offsets_for(packed_count(path)).tolist()
        except ValueError as error:  # PackedFormatError
            raise VideoDataError(str(error)) from error
        return torch.stack(load_packed_frames(path, offsets))
    if not path.is_dir():
        return read_video_frames(path, offsets_for, video_backend)
    files = frame_files(path)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(FRAME_SUFFIXES)} frames in {path}")
    offsets = offsets_for(len(files)).tolist()
    decoded = {i: load_frame(files[i]) for i in set(offsets)}
    return torch.stack([decoded[i] for i in offsets])


def video_views(
    video: str | Path | torch.Tensor,
    num_segments: int,
    protocol: TestProtocol,
    video_backend: str = "auto",
) -> torch.Tensor:
    """The test views of one video under ``protocol``: ``(views, C, T, S, S)`` float32.

    ``video``, ``video_backend``: as for :func:`read_clip`. Unreadable frames, or frames too
    small for the crops, raise :class:`VideoDataError` naming the video.
    """
    frames = read_clip(
        video,
        lambda n: sample_offsets(protocol.sampling, n, num_segments, None, protocol.clips),
        video_backend,
    )
    try:
        # Test transforms draw nothing: any generator gives the same views.
        clip = protocol.transform()(frames, np.random.default_rng(0))
    except FrameSizeError as error:
        where = "the given frames" if isinstance(video, torch.Tensor) else video
        raise VideoDataError(f"{where}: {error}") from error
    return arrange_views(clip, protocol.clips, num_segments).contiguous()


def config_views(
    video: str | Path | torch.Tensor, cfg: DictConfig, single_view: bool = False
) -> torch.Tensor:
    """:func:`video_views` under the test protocol and video backend of ``cfg``.

    ``single_view`` forces one clip (test-mode segment centres) and one centre crop.
    """
    protocol = TestProtocol.of(cfg, single_view)
    backend = cfg.data.get("video_backend", "auto")
    return video_views(video, cfg.data.num_segments, protocol, backend)
