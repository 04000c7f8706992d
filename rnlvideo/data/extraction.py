"""Frame extraction: video files to TSM-style frame folders (``tools/extract_frames.py``).

The video ``<video root>/<path>`` becomes the folder ``<frame root>/<path without suffix>/``
holding ``00001.jpg``, ``00002.jpg``, ... (the layout :class:`FrameFolderDataset` reads), every
frame by default or ``fps`` frames per second (each output time takes the nearest frame), its
shorter side resized to ``short_side`` if given.

A folder counts as done only once all its frames are written: they go to a hidden temporary
folder beside it (``.<name>.<random>.partial``) that is renamed to the folder's name at the end.
A rerun skips the folders that exist and removes the temporary folders that an interrupted run
left, so no half-written folder ever looks finished. One run at a time per frame root.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from rnlvideo.data.decoders import open_video, resolve_backend
from rnlvideo.data.frames import VideoDataError
from rnlvideo.data.lists import path_under

logger = logging.getLogger(__name__)
T = TypeVar("T")

FRAME_TEMPLATE = "{:05d}.jpg"  # 1-based, as FrameFolderDataset's defaults
PARTIAL_SUFFIX = ".partial"
# Frames decoded per read (bounds the memory of a long video).
_CHUNK = 32
# A frame this close (s) past an output time still counts as at or before it (rounding).
_TIME_SLACK = 1e-6


@dataclass(frozen=True)
class ExtractSettings:
    """How frames are written: ``short_side`` px (None: as decoded), JPEG ``quality``,
    ``fps`` frames per second (None: every frame), decoded with ``video_backend``."""

    short_side: int | None = None
    quality: int = 90
    fps: float | None = None
    video_backend: str = "auto"


@dataclass(frozen=True)
class ExtractResult:
    """What happened to one video: its frame count, or the error that stopped it."""

    video: str  # the video's path relative to the video root
    folder: str  # the frame folder's path relative to the frame root
    num_frames: int | None
    skipped: bool = False  # finished by an earlier run
    error: str | None = None


def frame_folder_name(video_path: str) -> str:
    """The frame folder of a video path: the path without its suffix (``a/b.mp4`` -> ``a/b``)."""
    path = PurePosixPath(video_path)
    return str(path.with_suffix("")) if path.suffix else f"{path}_frames"


def resample(frames: Iterable[tuple[float, T]], fps: float | None) -> Iterator[T]:
    """The items of ``(time, item)`` pairs in time order: all of them, or ``fps`` a second.

    Output ``k`` is at time ``t0 + k / fps`` (``t0``: the first item's time) and takes the item
    nearest to it (the earlier on a tie); output times after the last item are not written.
    """
    if fps is None:
        yield from (item for _, item in frames)
        return
    previous: tuple[float, T] | None = None
    start, k = None, 0
    for time, item in frames:
        start = time if start is None else start
        while start + k / fps <= time + _TIME_SLACK:
            target = start + k / fps
            nearer_before = previous is not None and target - previous[0] <= time - target
            yield previous[1] if nearer_before else item
            k += 1
        previous = (time, item)


def _resize(frame: np.ndarray, short_side: int | None) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(frame))
    if short_side is None or min(image.size) == short_side:
        return image
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def extract_video(video: Path, folder: Path, settings: ExtractSettings) -> int:
    """Write the frames of ``video`` as the folder ``folder``; returns how many.

    The frames go to a temporary folder beside ``folder``, renamed to it once complete; on any
    error it is deleted. An unreadable video, or one that yields no frame, raises
    :class:`VideoDataError` naming it.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(
        tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=PARTIAL_SUFFIX, dir=folder.parent)
    )
    try:
        count = 0
        with open_video(video, settings.video_backend) as reader:

            def decoded() -> Iterator[tuple[float, np.ndarray]]:
                for start in range(0, reader.num_frames, _CHUNK):
                    chunk = list(range(start, min(start + _CHUNK, reader.num_frames)))
                    frames, times = reader.read(chunk)  # (N, 3, H, W)
                    yield from zip(times.tolist(), frames.permute(0, 2, 3, 1).numpy(), strict=True)

            for pixels in resample(decoded(), settings.fps):
                count += 1
                _resize(pixels, settings.short_side).save(
                    partial / FRAME_TEMPLATE.format(count), "JPEG", quality=settings.quality
                )
        if count == 0:
            raise VideoDataError(f"no frames decoded from video {video}")
        os.rename(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return count


def remove_partial_folders(parents: Iterable[Path]) -> int:
    """Delete the temporary folders an interrupted extraction left in ``parents``; how many."""
    removed = 0
    for parent in parents:
        try:
            entries = list(os.scandir(parent))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    if removed:
        logger.info("removed %d incomplete frame folder(s) of an interrupted run", removed)
    return removed


@dataclass(frozen=True)
class _Job:
    video: str
    video_root: str
    frame_root: str
    settings: ExtractSettings


def _run_job(job: _Job) -> ExtractResult:
    folder = frame_folder_name(job.video)
    try:
        count = extract_video(
            path_under(job.video_root, job.video), path_under(job.frame_root, folder), job.settings
        )
    except (VideoDataError, OSError) as error:
        return ExtractResult(job.video, folder, None, error=str(error))
    return ExtractResult(job.video, folder, count)


def _start_worker() -> None:
    torch.set_num_threads(1)


def extract_videos(
    videos: list[str],
    video_root: str | Path,
    frame_root: str | Path,
    settings: ExtractSettings,
    workers: int = 1,
) -> Iterator[ExtractResult]:
    """Extract ``videos`` (paths relative to ``video_root``) into ``frame_root``.

    Yields one :class:`ExtractResult` per video as it finishes, in any order: finished folders
    first (``skipped``, counted on disk), then the others, extracted by ``workers`` processes.
    A video that fails gets its error in its result; the others go on. A path that would leave
    its root raises :class:`rnlvideo.data.lists.UnsafePathError` before anything is written.
    """
    settings = ExtractSettings(
        settings.short_side, settings.quality, settings.fps, resolve_backend(settings.video_backend)
    )
    frame_root = Path(frame_root)
    folders = {video: frame_folder_name(video) for video in videos}
    remove_partial_folders({path_under(frame_root, f).parent for f in folders.values()})
    todo = []
    for video, folder in folders.items():
        done = path_under(frame_root, folder)
        if done.is_dir():
            yield ExtractResult(video, folder, len(os.listdir(done)), skipped=True)
        else:
            todo.append(_Job(video, str(video_root), str(frame_root), settings))
    if workers <= 1:
        _start_worker()
        yield from map(_run_job, todo)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_start_worker) as pool:
        yield from pool.imap_unordered(_run_job, todo)
