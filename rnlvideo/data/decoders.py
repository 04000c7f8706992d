"""Video-file decoding with a choice of backend: PyAV, torchcodec or decord.

Frame ``i`` of a video is its ``i``-th frame in presentation order, out of every frame the
container holds: each backend indexes the file's packets when it opens it (nothing is inferred
from the header's frame rate or duration) and decodes from the keyframe before a requested
frame. So every backend reports the same frame count and returns the same frame for an index;
pixels may differ by a few grey levels (each backend converts YUV to RGB its own way).

``auto`` picks the first backend of :data:`AUTO_ORDER` that imports and works here: PyAV
(it bundles its own FFmpeg, so every machine decodes with the same build, and it was the fastest
in docs/benchmarks.md), then torchcodec (PyTorch's decoder; it needs the system's FFmpeg
libraries, whose version varies between machines), then decord (unmaintained since 2022, no
aarch64 wheels). A file that a backend cannot open or decode raises
:class:`~rnlvideo.data.frames.VideoDataError` naming it, whichever backend it is.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rnlvideo.data.frames import OffsetsFn, VideoDataError

logger = logging.getLogger(__name__)

VIDEO_BACKENDS = ("pyav", "torchcodec", "decord")
AUTO_ORDER = ("pyav", "torchcodec", "decord")
# What each backend is imported as, and how to install it.
_MODULES = {"pyav": "av", "torchcodec": "torchcodec.decoders", "decord": "decord"}
_INSTALL_HINTS = {
    "pyav": "pip install av (part of rnlvideo[video])",
    "torchcodec": "pip install torchcodec, and the FFmpeg libraries (apt-get install ffmpeg)",
    "decord": "pip install decord (x86_64 only; part of rnlvideo[video] there)",
}


class VideoReader(Protocol):
    """An open video file: its frame count and frames by index."""

    path: Path
    num_frames: int

    def read(self, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
        """Frames at sorted distinct ``indices``: uint8 ``(N, 3, H, W)`` and their times (s)."""
        ...

    def close(self) -> None: ...


@functools.cache
def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot be used here (not installed, libraries missing), or None."""
    try:
        importlib.import_module(_MODULES[name])
    except Exception as exc:  # noqa: BLE001 - whatever stops the import is the reason
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    # torchcodec imports without FFmpeg (its image decoders need none) and says so here.
    if name == "torchcodec" and sys.modules["torchcodec"].ffmpeg_major_version is None:
        return (
            "torchcodec cannot load the system's FFmpeg libraries (FFmpeg 4 to 9 needed: "
            "apt-get install ffmpeg, conda install ffmpeg or a cluster module)"
        )
    return None


def available_backends() -> list[str]:
    """The backends that import and work here, in :data:`AUTO_ORDER`."""
    return [name for name in AUTO_ORDER if backend_problem(name) is None]


def resolve_backend(name: str) -> str:
    """The backend to use for ``name`` (``auto`` or one of :data:`VIDEO_BACKENDS`).

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` (with how to install it)
    for a backend that is not usable here.
    """
    if name == "auto":
        available = available_backends()
        if not available:
            raise RuntimeError(
                "no video decoder is installed: pip install av (or rnlvideo[video]); "
                + "; ".join(f"{b}: {backend_problem(b)}" for b in AUTO_ORDER)
            )
        return available[0]
    if name not in VIDEO_BACKENDS:
        raise ValueError(
            f"video_backend={name!r}: expected 'auto' or one of {', '.join(VIDEO_BACKENDS)}"
        )
    problem = backend_problem(name)
    if problem is not None:
        raise RuntimeError(
            f"video_backend={name!r} is not usable here ({problem}); install it: "
            f"{_INSTALL_HINTS[name]}, or choose another (data.video_backend=auto)"
        )
    return name


# ------------------------------------------------------------------------------------- PyAV
class _PyAVReader:
    """PyAV: the packets' presentation times index the frames; decoding seeks to keyframes."""

    def __init__(self, path: Path, num_threads: int) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self.path = path
        # One converter for the file: a frame's own to_ndarray() sets up swscale every time.
        self._to_rgb = VideoReformatter()
        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise VideoDataError(f"no video stream in {path}")
        self._stream = self._container.streams.video[0]
        if num_threads > 1:
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = num_threads
        times, keyframes = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:  # the demuxer's closing flush packet
                continue
            times.append(packet.pts)
            keyframes.append(packet.is_keyframe)
        self.num_frames = len(times)
        # Without usable timestamps (some AVI files) frames are counted in decoding order.
        self._by_order = None in times or len(set(times)) != len(times)
        order = range(self.num_frames) if self._by_order else np.argsort(times, kind="stable")
        self._pts = [times[i] for i in order]
        self._index_of_pts = {pts: index for index, pts in enumerate(self._pts)}
        key_pts = {times[i] for i in range(self.num_frames) if keyframes[i]}
        # Index 0 stands for the file's start; without timestamps there is nothing to seek to.
        seekable = [] if self._by_order else [i for i, t in enumerate(self._pts) if t in key_pts]
        self._keyframes = sorted({0, *seekable})
        self._frames: Iterator | None = None
        self._next = 0  # the index of the next frame self._frames yields

    def _decode_from(self, keyframe: int) -> None:
        if keyframe == 0 or self._by_order:
            self._container.seek(0)
            self._next = 0
        else:
            self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
            self._next = keyframe
        self._frames = self._container.decode(self._stream)

    def _index(self, frame, position: int) -> int | None:
        if self._by_order:
            return position
        return self._index_of_pts.get(frame.pts)

    def _keyframe_before(self, index: int) -> int:
        return self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]

    def _decode_until(self, target: int, wanted: set[int], found: dict) -> None:
        position = self._next
        for frame in self._frames:
            index = self._index(frame, position)
            position += 1
            if index is None:
                continue
            self._next = index + 1
            if index in wanted:
                rgb = self._to_rgb.reformat(frame, format="rgb24").to_ndarray()
                found[index] = (rgb, float(frame.time or 0.0))
            if index >= target:
                return
        self._frames = None

    def read(self, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
        wanted, found = set(indices), {}
        for target in indices:
            if target in found:
                continue
            keyframe = self._keyframe_before(target)
            if self._frames is None or target < self._next or keyframe > self._next:
                self._decode_from(keyframe)
            self._decode_until(target, wanted, found)
            if target not in found and keyframe > 0:  # the seek landed after the frame
                self._decode_from(0)
                self._decode_until(target, wanted, found)
            if target not in found:
                raise VideoDataError(
                    f"cannot decode frame {target} of {self.num_frames} of video {self.path}"
                )
        frames = np.stack([found[i][0] for i in indices])
        times = np.array([found[i][1] for i in indices])
        return torch.from_numpy(frames).permute(0, 3, 1, 2), times

    def close(self) -> None:
        self._container.close()


# ------------------------------------------------------------------------------- torchcodec
class _TorchCodecReader:
    """torchcodec in exact mode: it scans the file to index every frame when it opens it."""

    def __init__(self, path: Path, num_threads: int) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self._decoder = VideoDecoder(
            str(path), seek_mode="exact", num_ffmpeg_threads=num_threads, dimension_order="NCHW"
        )
        self.num_frames = len(self._decoder)

    def read(self, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
        batch = self._decoder.get_frames_at(list(indices))
        return batch.data, batch.pts_seconds.double().numpy()

    def close(self) -> None:
        del self._decoder


# ----------------------------------------------------------------------------------- decord
class _DecordReader:
    """decord: it indexes the file's packets when it opens it."""

    def __init__(self, path: Path, num_threads: int) -> None:
        import decord

        self.path = path
        self._reader = decord.VideoReader(str(path), num_threads=num_threads)
        self.num_frames = len(self._reader)

    def read(self, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
        frames = self._reader.get_batch(list(indices)).asnumpy()  # (N, H, W, 3)
        times = self._reader.get_frame_timestamp(list(indices))[:, 0]
        return torch.from_numpy(frames).permute(0, 3, 1, 2), np.asarray(times, dtype=float)

    def close(self) -> None:
        del self._reader


_READERS = {"pyav": _PyAVReader, "torchcodec": _TorchCodecReader, "decord": _DecordReader}


def _backend_errors(backend: str) -> tuple[type[BaseException], ...]:
    """The exceptions ``backend`` raises for a file it cannot read."""
    if backend == "pyav":
        import av

        return (av.FFmpegError, OSError, ValueError)
    if backend == "decord":
        import decord

        return (RuntimeError, decord.DECORDError)
    return (RuntimeError, ValueError, IndexError)


def _reason(exc: BaseException) -> str:
    """The library's message without a source location prefix (``Name, file.cpp:41, ``)."""
    return re.sub(r"^\w+, \S+:\d+, ", "", str(exc))


class _CheckedReader:
    """A backend's reader whose decoding errors become :class:`VideoDataError` naming the file."""

    def __init__(self, reader: VideoReader, backend: str) -> None:
        self._reader, self._backend = reader, backend
        self._errors = _backend_errors(backend)
        self.path, self.num_frames = reader.path, reader.num_frames

    def read(self, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
        try:
            return self._reader.read(indices)
        except VideoDataError:
            raise
        except self._errors as exc:
            raise VideoDataError(
                f"cannot decode video {self.path} ({self._backend}): {_reason(exc)}"
            ) from exc

    def close(self) -> None:
        self._reader.close()


@contextmanager
def open_video(path: str | Path, backend: str = "auto", num_threads: int = 1):
    """Open a video file with ``backend``; yields a :class:`VideoReader`, closed on exit.

    A missing file, or one the backend cannot open, or frames it cannot decode (``read``),
    raise :class:`VideoDataError` naming it; other errors in the ``with`` block pass unchanged.
    """
    path = Path(path)
    name = resolve_backend(backend)
    if not path.is_file():
        raise VideoDataError(f"video not found: {path}")
    try:
        reader = _CheckedReader(_READERS[name](path, num_threads), name)
    except VideoDataError:
        raise
    except _backend_errors(name) as exc:
        raise VideoDataError(f"cannot open video {path} ({name}): {_reason(exc)}") from exc
    try:
        yield reader
    finally:
        reader.close()


def read_video_frames(
    path: str | Path,
    offsets_for: OffsetsFn,
    backend: str = "auto",
    num_threads: int = 1,
    min_frames: int = 1,
) -> torch.Tensor:
    """Decode the frames at ``offsets_for(number of frames)`` of a video file.

    Returns uint8 ``(len(offsets), 3, H, W)``; each distinct frame is decoded once. A missing,
    empty or undecodable file, or one with fewer than ``min_frames`` frames (at least 1), raises
    :class:`VideoDataError` naming it.
    """
    with open_video(path, backend, num_threads) as reader:
        if reader.num_frames < max(min_frames, 1):
            raise VideoDataError(
                f"video has {reader.num_frames} frames, fewer than "
                f"min_frames={max(min_frames, 1)}: {path}"
            )
        unique, positions = np.unique(offsets_for(reader.num_frames), return_inverse=True)
        frames, _ = reader.read(unique.tolist())
    return frames[torch.from_numpy(positions.reshape(-1))]


def count_frames(path: str | Path, backend: str = "auto") -> int:
    """The number of frames of a video file; :class:`VideoDataError` if it cannot be read."""
    with open_video(path, backend) as reader:
        return reader.num_frames
