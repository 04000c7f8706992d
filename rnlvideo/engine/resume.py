"""Resuming: the run directory's policy, the resume decision and its checks, in one place.

``train.resume`` decides what a launch does with its run directory (``output_dir``):

============  ==================  ==========================================================
value         no checkpoints      checkpoints in the directory
============  ==================  ==========================================================
auto          a new run           continue the newest that loads (``last.pt``, the epoch
                                  files newest first, ``best.pt``) if only resumable keys
                                  changed (:data:`RESUMABLE_CHANGES`, a longer
                                  ``train.epochs``) and the total batch is the same, else
                                  refused; refused too when none of them loads
force         a new run           continue the newest that loads whatever changed (logged);
                                  another batch layout mid-epoch restarts that epoch
never         a new run           refused
overwrite     a new run           a new run; the old checkpoints are deleted once the launch
                                  is accepted
a path        continue that checkpoint, as ``force``
============  ==================  ==========================================================

Every launch takes the directory's lock first (:class:`RunLock`: one run at a time) and writes
nothing until every check has passed: :func:`claim_run_dir` decides, :func:`accept_run_dir`
writes, so a refused launch leaves the directory as it found it. The config may only change in
resumable keys (:func:`check_config_unchanged`); a mid-epoch checkpoint continues only with the
batch layout it was written with (:func:`check_batch_layout`); the optimiser's parameter groups
must match (checked when the trainer loads the state).
"""

from __future__ import annotations

import fcntl
import fnmatch
import logging
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnlvideo.checkpoint_format import CheckpointError, load_checkpoint, stored_config
from rnlvideo.config import ConfigError
from rnlvideo.config.validation import check_stored_values, resolved_container
from rnlvideo.engine.run_log import PendingLog
from rnlvideo.engine.training_state import BEST, EPOCH_FILE, LAST
from rnlvideo.files import remove_stale_temporaries, write_text_atomic
from rnlvideo.text import printable

logger = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never", "force", "overwrite")

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


class ResumeRefusedError(RuntimeError):
    """Resuming would continue a run under other settings; the message lists the changes."""


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


# ------------------------------------------------------------------------------ the decision
@dataclass
class Claim:
    """A launch's hold on its run directory: the lock and the checkpoint to continue (None: a
    new run), already loaded on the rank that claimed."""

    lock: RunLock
    checkpoint: str | None = None
    state: dict[str, Any] | None = None


def claim_run_dir(run_dir: str | Path, mode: str) -> Claim:
    """Lock ``run_dir`` and apply ``train.resume`` (``mode``) to it, writing nothing.

    Raises RunDirectoryError (``never`` on checkpoints, no checkpoint loads, the directory in
    use) or FileNotFoundError (a ``train.resume`` path that does not exist).
    """
    run_dir = Path(run_dir)
    found = existing_checkpoints(run_dir) if run_dir.is_dir() else []
    if mode == "never" and found:
        raise RunDirectoryError(
            f"{run_dir} holds checkpoints of an earlier run "
            f"({', '.join(p.name for p in found)}) and train.resume=never: nothing was "
            "touched. Continue that run with train.resume=auto, replace it with "
            "train.resume=overwrite, or choose another output_dir."
        )
    if mode not in RESUME_MODES and not Path(mode).is_file():
        raise FileNotFoundError(f"train.resume={mode}: no such checkpoint file")
    claim = Claim(RunLock(run_dir))
    try:
        if mode not in RESUME_MODES:
            claim.checkpoint = mode
        elif mode in ("auto", "force"):
            claim.checkpoint, claim.state = _newest_loadable(run_dir)
    except BaseException:
        claim.lock.release()
        raise
    return claim


def _newest_loadable(run_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    failures = []
    for path in resume_candidates(run_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            failures.append(str(err))
            logger.warning("%s; trying an older checkpoint", err)
            continue
        if failures:
            logger.warning("resuming from %s: the newer checkpoints do not load", path.name)
        return str(path), state
    if failures:
        listed = "\n".join(f"  {failure}" for failure in failures)
        raise RunDirectoryError(
            f"{run_dir} holds checkpoints but none of them loads:\n{listed}\n"
            "Nothing was touched. Restore a checkpoint, or start over with "
            "train.resume=overwrite."
        )
    return None, None


def accept_run_dir(
    claim: Claim,
    run_dir: str | Path,
    mode: str,
    files: Mapping[str, str],
    run_log: PendingLog | None = None,
) -> None:
    """The launch goes ahead: name its process in the lock, open ``train.log``, remove the
    leftovers of crashed writes (and the old checkpoints for ``overwrite``), write ``files``
    (``{path relative to run_dir: text}``)."""
    run_dir = Path(run_dir)
    claim.lock.accept()
    if run_log is not None:
        run_log.write_to(run_dir / "train.log")
    remove_stale_temporaries(run_dir)
    if mode == "overwrite":
        for path in existing_checkpoints(run_dir):
            path.unlink()
            logger.warning("train.resume=overwrite: deleted %s", path)
    for relative, text in files.items():
        write_text_atomic(run_dir / relative, text)


def check_config_unchanged(
    state: dict[str, Any], path: str | Path, cfg: DictConfig, forced: bool
) -> None:
    """Refuse (or, ``forced``, log) the changes of ``cfg`` against the checkpoint's config
    outside :data:`RESUMABLE_CHANGES`."""
    container = stored_config(state, path)
    try:
        check_stored_values(container)
        stored = resolved_container(OmegaConf.create(container))
    except (ConfigError, OmegaConfBaseException) as err:
        raise CheckpointError(f"{path}: its stored config cannot be compared: {err}") from None
    current = resolved_container(cfg)
    changes = [c for c in config_changes(stored, current) if not is_resumable_change(c)]
    if not changes:
        return
    listed = "\n".join(f"  {change}" for change in changes)
    if not forced:
        raise ResumeRefusedError(
            f"{path} was trained with another config; resuming would silently make a "
            f"different run. Changed keys (stored -> now):\n{listed}\n"
            "Undo the changes, choose another output_dir, or pass train.resume=force to "
            "continue with the new settings."
        )
    logger.warning("resuming %s with changed settings (stored -> now):\n%s", path, listed)


def layout_text(layout: Mapping[str, int]) -> str:
    """``4 per process x 2 processes x 2 accumulation = 16``."""
    return (
        f"{layout['batch_size']} per process x {layout['world_size']} processes x "
        f"{layout['accumulate_steps']} accumulation = {layout['total_batch_size']}"
    )


def check_batch_layout(
    state: dict[str, Any],
    path: str | Path,
    layout: Mapping[str, int],
    mid_epoch: bool,
    epoch: int,
    forced: bool,
) -> bool:
    """Whether the checkpoint's epoch must restart from its beginning under ``layout``.

    Another total batch is refused (``forced``: logged). A checkpoint written in the middle of
    an epoch (``mid_epoch``) with another per-process batch or process count cannot replay its
    remaining batches: refused, or (``forced``) True. ``epoch`` is the 0-based epoch.
    """
    stored = state.get("batch_layout", {})
    if not isinstance(stored, dict) or not all(isinstance(v, int) for v in stored.values()):
        raise CheckpointError(f"{path}: batch_layout must map names to integers")
    stored_total = stored.get("total_batch_size", layout["total_batch_size"])
    if stored_total != layout["total_batch_size"]:
        message = (
            f"{path} was trained with a total batch of {stored_total}, this launch makes "
            f"{layout['total_batch_size']} ({layout_text(layout)})"
        )
        if not forced:
            raise ResumeRefusedError(
                f"{message}: the optimisation would change. Relaunch with the same total, "
                "or pass train.resume=force to continue with the new one."
            )
        logger.warning("%s; continuing (train.resume is not auto)", message)
    moved = {
        key: (stored.get(key), layout[key])
        for key in ("batch_size", "world_size")
        if stored.get(key, layout[key]) != layout[key]
    }
    if not (moved and mid_epoch):
        return False
    changes = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in moved.items())
    if not forced:
        raise ResumeRefusedError(
            f"{path} was written in the middle of epoch {epoch + 1} with another batch layout "
            f"({changes}); its remaining batches cannot be replayed. Relaunch with the old "
            "layout, or pass train.resume=force to restart that epoch from its beginning."
        )
    logger.warning(
        "batch layout changed mid-epoch (%s): epoch %d restarts from its beginning",
        changes,
        epoch + 1,
    )
    return True
