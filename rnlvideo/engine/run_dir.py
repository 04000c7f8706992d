"""The run directory: one run at a time, what an earlier run left, what may change on resume."""

from __future__ import annotations

import fcntl
import fnmatch
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnlvideo.engine.checkpoint import BEST, EPOCH_FILE, LAST
from rnlvideo.text import printable

LOCK_FILE = ".lock"
# Keys whose change does not stop an automatic resume (README "Resuming").
RESUMABLE_CHANGES = (
    "name",
    "output_dir",
    "overrides",
    "data.root",
    "data.*.root",
    "data.*.list_file",
    "data.category_file",
    "data.frame_store",  # packed files hold the folders' JPEG bytes: the same pixels
    "data.*.frame_store",
    "data.prepare_hint",
    "model.weights",
    "train.num_workers",
    "train.batch_size",  # per process; the total batch is checked on its own
    "train.total_batch_size",  # checked on its own, against the checkpoint's batch layout
    "train.resume",
    "train.finetune_from",
    "train.log_every_steps",
    "train.checkpoint_every_epochs",
    "train.checkpoint_every_steps",
    "train.keep_last_epochs",
    "train.eval_every_epochs",
    "train.dist_timeout_s",
    "train.loader_timeout_s",
    "eval.*",
    "protocol.*",
)


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


class RunLock:
    """An exclusive lock on a run directory, held while this process lives.

    ``flock`` on ``<run_dir>/.lock``: the kernel releases it when the process ends, however it
    ends, so a crashed run never leaves a stale lock. The lock file is opened without following
    a symbolic link and must be a regular file. Taking the lock changes nothing on disk but
    what it has to create (the directory, an empty ``.lock``); :meth:`accept` then writes the
    holder into the file, and :meth:`release` of a lock never accepted removes what it created,
    so a refused launch leaves the directory as it found it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []
        self._accepted = False
        missing = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        self._created = list(missing)  # deepest first
        existed = os.path.lexists(self.path)
        try:
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644
            )
        except OSError as err:
            self._remove_created()
            kind = "a symbolic link" if os.path.islink(self.path) else "not a regular file"
            raise RunDirectoryError(
                f"{self.path} is {kind} ({err.strerror}); the run lock must be a regular file: "
                "remove it or choose another output_dir"
            ) from None
        if not existed:
            self._created.insert(0, self.path)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            self.release()
            raise RunDirectoryError(
                f"{self.path} is not a regular file; the run lock must be one: remove it or "
                "choose another output_dir"
            )
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode("utf-8", "replace").strip()
            self.release()
            raise RunDirectoryError(
                f"{self.path.parent} is in use by another run ({printable(holder) or 'unknown'}); "
                "wait for it to end or choose another output_dir"
            ) from None

    def accept(self) -> None:
        """The launch goes ahead: name this process as the holder in the lock file."""
        if self._fd is None:
            raise RunDirectoryError(f"{self.path}: the lock is not held")
        os.ftruncate(self._fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}"
        os.pwrite(self._fd, holder.encode(), 0)
        self._accepted = True

    def release(self) -> None:
        """Unlock; before :meth:`accept`, also remove the lock file and directories this lock
        created (when they are still empty)."""
        if self._fd is not None:
            if not self._accepted:
                self._remove_created()
            os.close(self._fd)
            self._fd = None

    def _remove_created(self) -> None:
        for path in self._created:
            try:
                path.unlink() if path == self.path else path.rmdir()
            except OSError:
                break  # not empty any more: keep it and what holds it
        self._created = []

    def __del__(self) -> None:
        self.release()


def existing_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint files (``last.pt``, ``best.pt``, ``epoch_XXXX.pt``) in ``run_dir``."""
    run_dir = Path(run_dir)
    names = [LAST, BEST, *sorted(p.name for p in run_dir.glob("epoch_*.pt"))]
    return [run_dir / n for n in names if (run_dir / n).is_file()]


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """Checkpoints to resume from, best first: ``last.pt``, the epoch files newest first,
    then ``best.pt`` (the fallbacks when a newer file is unreadable)."""
    run_dir = Path(run_dir)
    epochs = sorted(
        (p for p in run_dir.glob("epoch_*.pt") if EPOCH_FILE.fullmatch(p.name)),
        key=lambda p: int(EPOCH_FILE.fullmatch(p.name).group(1)),
        reverse=True,
    )
    return [p for p in (run_dir / LAST, *epochs, run_dir / BEST) if p.is_file()]


@dataclass(frozen=True)
class ConfigChange:
    """A key whose value differs between a stored config and the current one."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


_ABSENT = "<absent>"


def flatten(container: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` of nested mappings (lists are leaves)."""
    if not isinstance(container, Mapping) or not container:
        return {prefix: container} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in container.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[ConfigChange]:
    """Every key whose resolved value differs (present in one config only included)."""
    old, new = flatten(stored), flatten(current)
    return [
        ConfigChange(key, old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]


def is_resumable_change(change: ConfigChange) -> bool:
    """Changes that :data:`RESUMABLE_CHANGES` allows, and a longer ``train.epochs``."""
    if change.key == "train.epochs":
        return (
            isinstance(change.new, int) and isinstance(change.old, int) and change.new >= change.old
        )
    return any(fnmatch.fnmatchcase(change.key, pattern) for pattern in RESUMABLE_CHANGES)
