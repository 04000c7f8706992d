"""Packed frames: the JPEG frames of one video in one file, bytes unchanged, with an index.

A frame folder ``<root>/<path>/00001.jpg ...`` becomes the file ``<root>/<path>.pack``, so a
clip costs one file opened instead of one per frame (what counts on network filesystems, under
file-count quotas and with a cold page cache). Decoded pixels are those of the folder: the JPEG
bytes are the same.

Layout, little-endian::

    b"RNLPACK1"                      8 bytes, the format and its version
    count                            uint32, N frames
    reserved                         uint32, 0
    offsets                          N + 1 uint64: frame i is bytes [offsets[i], offsets[i+1])
                                     of the file; offsets[N] is the file's size
    crc32                            N uint32, the CRC-32 of each frame's bytes
    frames                           the N JPEG files' bytes, back to back, in frame order

Files are written atomically (temporary file, fsync, rename): a reader sees a complete file or
none. A truncated or altered file raises :class:`PackedFormatError` naming it when it is opened
or when a damaged frame is read.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnlvideo.files import write_atomic

PACK_SUFFIX = ".pack"
MAGIC = b"RNLPACK1"
_HEADER = struct.Struct("<8sII")
_JPEG_MAGIC = b"\xff\xd8\xff"
# Bytes read by the first read of a file: the header, the index of up to ~2700 frames and, for
# small videos, the frames themselves (one read instead of two).
_FIRST_READ = 256 * 1024


class PackedFormatError(ValueError):
    """A packed file is truncated, altered or not a packed file; the message names it."""


def packed_path(frame_folder: str | Path) -> Path:
    """The packed file of a frame folder: ``<folder>.pack`` beside it."""
    folder = Path(frame_folder)
    return folder.with_name(folder.name + PACK_SUFFIX)


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """The packed file holding ``frames`` (each a JPEG file's bytes), in order."""
    count = len(frames)
    start = _HEADER.size + 8 * (count + 1) + 4 * count
    offsets = np.cumsum([start, *map(len, frames)], dtype="<u8")
    crcs = np.array([zlib.crc32(frame) for frame in frames], dtype="<u4")
    return b"".join([_HEADER.pack(MAGIC, count, 0), offsets.tobytes(), crcs.tobytes(), *frames])


def write_packed(path: str | Path, frames: Sequence[bytes]) -> None:
    """Write ``frames`` as the packed file ``path``, atomically."""
    data = pack_frames(frames)
    write_atomic(path, lambda f: f.write(data))


class PackedFrames:
    """An open packed file: ``count`` frames, read by index with one open and at most 2 reads.

    The index is read when first needed; with ``read_ahead`` the kernel is asked to start
    reading the file's first bytes at once (``posix_fadvise``), so opening the files of a batch
    first overlaps their disk reads with the work on the others. Use as a context manager, or
    call :meth:`close`.
    """

    def __init__(self, path: str | Path, read_ahead: bool = False) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise PackedFormatError(f"cannot read packed file {self.path}: {exc}") from exc
        self._size = os.fstat(self._file.fileno()).st_size
        if read_ahead:
            os.posix_fadvise(self._file.fileno(), 0, _FIRST_READ, os.POSIX_FADV_WILLNEED)
        self._head: bytes | None = None

    @property
    def count(self) -> int:
        """The number of frames."""
        self._read_index()
        return self._count

    def _error(self, what: str) -> PackedFormatError:
        return PackedFormatError(f"packed file {self.path} is truncated or corrupt: {what}")

    def _read_index(self) -> None:
        """Read and check the header and the index (once)."""
        if self._head is not None:
            return
        head = self._file.read(_FIRST_READ)
        if len(head) < _HEADER.size:
            raise self._error(f"{self._size} bytes, shorter than the {_HEADER.size}-byte header")
        magic, count, _ = _HEADER.unpack_from(head)
        if magic != MAGIC:
            raise PackedFormatError(
                f"{self.path} is not a packed frame file (starts with {magic[:8]!r}, "
                f"expected {MAGIC!r})"
            )
        index_end = _HEADER.size + 12 * count + 8
        if count == 0 or index_end > self._size:
            raise self._error(f"{count} frames announced in a {self._size}-byte file")
        if index_end > len(head):
            head += self._file.read(index_end - len(head))
        offsets = np.frombuffer(head, "<u8", count + 1, _HEADER.size).astype(np.int64)
        if offsets[0] != index_end or np.any(np.diff(offsets) <= 0):
            raise self._error("the frame index is damaged")
        if offsets[-1] != self._size:
            raise self._error(f"the index ends at byte {offsets[-1]}, the file has {self._size}")
        self._crcs = np.frombuffer(head, "<u4", count, _HEADER.size + 8 * (count + 1))
        self._head, self._count, self._offsets = head, count, offsets

    def frame_sizes(self) -> np.ndarray:
        """The byte size of every frame, ``(count,)``."""
        self._read_index()
        return np.diff(self._offsets)

    def read(self, indices: Sequence[int]) -> list[bytes]:
        """The JPEG bytes of frames ``indices`` (0-based, any order, repeats allowed).

        The frames' checksums are verified: a damaged frame raises :class:`PackedFormatError`.
        """
        wanted = sorted(set(indices))
        self._read_index()
        if wanted[0] < 0 or wanted[-1] >= self.count:
            raise PackedFormatError(
                f"frame {wanted[-1] if wanted[-1] >= self.count else wanted[0]} requested, "
                f"packed file {self.path} holds frames 0..{self.count - 1}"
            )
        start, end = int(self._offsets[wanted[0]]), int(self._offsets[wanted[-1] + 1])
        if end <= len(self._head):
            span, span_start = self._head, 0
        else:
            self._file.seek(start)
            span, span_start = self._file.read(end - start), start
            if len(span) != end - start:
                raise self._error(f"reading bytes {start}..{end} returned {len(span)}")
        frames = {}
        for index in wanted:
            begin = int(self._offsets[index]) - span_start
            data = span[begin : begin + int(self._offsets[index + 1] - self._offsets[index])]
            if zlib.crc32(data) != int(self._crcs[index]):
                raise self._error(f"frame {index} fails its checksum")
            frames[index] = data
        return [frames[index] for index in indices]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PackedFrames:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def packed_count(path: str | Path) -> int:
    """The frame count of a packed file (its index is checked, not its frames)."""
    with PackedFrames(path) as packed:
        return packed.count


def pack_folder(
    folder: str | Path, num_frames: int, filename_tmpl: str = "{:05d}.jpg", start_index: int = 1
) -> Path:
    """Pack frames ``0 .. num_frames - 1`` of a frame folder into ``<folder>.pack``; its path.

    The frame files are ``filename_tmpl.format(i + start_index)``. A missing or empty frame
    file, or one that is not a JPEG, raises ``ValueError`` naming it (``FileNotFoundError``
    for a missing folder) and nothing is written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    frames = []
    for index in range(num_frames):
        path = folder / filename_tmpl.format(index + start_index)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"frame not found: {path}") from None
        if not data.startswith(_JPEG_MAGIC):
            what = "an empty file" if not data else f"not a JPEG (starts with {data[:4].hex(' ')})"
            raise ValueError(f"frame is {what}: {path}")
        frames.append(data)
    target = packed_path(folder)
    write_packed(target, frames)
    return target
