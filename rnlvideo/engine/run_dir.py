"""The run directory: one run at a time, what an earlier run left, what may change on resume."""

from __future__ import annotations

import fcntl
import fnmatch
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnlvideo.engine.checkpoint import BEST, EPOCH_FILE, LAST

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
    ends, so a crashed run never leaves a stale lock. The file names the holder.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "unknown process"
            os.close(self._fd)
            self._fd = None
            raise RunDirectoryError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to end "
                "or choose another output_dir"
            ) from None
        os.ftruncate(self._fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
