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


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The bytes are flushed and fsynced before the rename, and the directory after it, so the
    new content survives a crash once this returns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
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


def link_atomic(source: str | Path, path: str | Path) -> None:
    """Make ``path`` hold the complete file ``source``, atomically.

    A hard link (no second write) to a temporary name, renamed over ``path``; where hard links
    are not possible (some network or FUSE filesystems) a copy is written atomically instead.
    Later atomic saves replace ``source`` by a new file, so ``path`` keeps today's content.
    """
    source, path = Path(source), Path(path)
    tmp = path.with_name(f".{path.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError as err:
        logger.info("cannot hard-link %s (%s): copying it to %s", source, err, path.name)
        with source.open("rb") as src:
            write_atomic(path, lambda f: shutil.copyfileobj(src, f))
        return
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete temporary files of :func:`write_atomic` / :func:`link_atomic` left by a crash."""
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        logger.info("removed an incomplete write: %s", tmp.name)
