"""Atomic checkpoint files, RNG-state capture and checkpoint rotation."""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` so that ``path`` is always either the old or the complete new file.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and the
    file is renamed over ``path``; the directory is fsynced so the rename survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def link_atomic(source: str | Path, path: str | Path) -> None:
    """Make ``path`` another name of the complete file ``source`` (no second write).

    A hard link to a temporary name, renamed over ``path``. Later atomic saves replace
    ``source`` by a new file, so ``path`` keeps the content it had now.
    """
    source, path = Path(source), Path(path)
    tmp = path.with_name(f".{path.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, path)


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete temporary files left by a writer that was killed mid-write."""
    for tmp in Path(run_dir).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)
        logger.info("removed an incomplete checkpoint write: %s", tmp.name)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def model_state_from(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of one of our checkpoints, or of a bare state dict."""
    state = checkpoint.get("model", checkpoint)
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in weights_only-safe types."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["key"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def prune_epoch_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` ``epoch_XXXX.pt`` files (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    files = sorted(
        (p for p in Path(run_dir).glob("epoch_*.pt") if _EPOCH_FILE.fullmatch(p.name)),
        key=lambda p: int(_EPOCH_FILE.fullmatch(p.name).group(1)),
    )
    for old in files[:-keep]:
        old.unlink()
        logger.info("removed old checkpoint %s", old)
