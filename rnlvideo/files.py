"""Crash-safe file writes: a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

logger = logging.getLogger(__name__)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileWriteError(OSError):
    """A file could not be written (disk full, no permission, ...); names the file and why."""


class _RecordingFile:
    """A binary file whose first OS error is kept: serializers such as ``torch.save`` replace
    it by an error of their own (``unexpected pos ...``) that no longer says what happened."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self._file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The bytes are flushed and fsynced before the rename, and the directory after it, so the
    new content survives a crash once this returns. When the write fails (a full disk, say) the
    temporary file is removed, ``path`` keeps its old content and :class:`FileWriteError`
    names ``path`` and the operating system's reason.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            file = _RecordingFile(raw)
            try:
                write(file)
                raw.flush()
                os.fsync(raw.fileno())
            except Exception as err:
                cause = file.error or err
                if isinstance(cause, OSError):
                    reason = cause.strerror or str(cause)
                    failure = FileWriteError(f"cannot write {path}: {reason}")
                    failure.errno = cause.errno
                    raise failure from err
                raise
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    write_atomic(path, lambda f: torch.save(state, f))


def copy_atomic(source: str | Path, path: str | Path) -> None:
    """Make ``path`` an independent copy of the complete file ``source``, atomically.

    A copy, not a hard link: damage to one file (a truncation in place, say) must not reach the
    other, since each is the other's fallback.
    """
    with Path(source).open("rb") as src:
        write_atomic(path, lambda f: shutil.copyfileobj(src, f, 16 * 2**20))


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete temporary files of :func:`write_atomic` left by a crash."""
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        logger.info("removed an incomplete write: %s", tmp.name)
