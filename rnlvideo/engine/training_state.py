"""Training-state pieces of checkpoints: RNG states, epoch-file rotation, fine-tuning weights.

File writing and reading live in :mod:`rnlvideo.files` and :mod:`rnlvideo.checkpoint_format`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnlvideo.checkpoint_format import (
    EPOCH_FILE,
    CheckpointError,
)
from rnlvideo.models.weights import load_refitting_classifier, read_state_dict

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


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


def prune_epoch_checkpoints(run_dir: str | Path, written: Sequence[str], keep: int) -> list[str]:
    """Delete all but the newest ``keep`` epoch files among ``written`` (this run's own).

    Files of ``run_dir`` that this run did not write are never touched. Returns the names
    still kept (``keep <= 0`` keeps all).
    """
    if keep <= 0 or len(written) <= keep:
        return list(written)
    ordered = sorted(written, key=lambda name: int(EPOCH_FILE.fullmatch(name).group(1)))
    for name in ordered[:-keep]:
        (Path(run_dir) / name).unlink(missing_ok=True)
        logger.info("removed old checkpoint %s", name)
    return ordered[-keep:]


def load_finetune_weights(model: nn.Module, path: str | Path) -> None:
    """Load the weights of a checkpoint (or a bare state dict) to fine-tune from.

    A classifier whose shape differs (another number of classes) keeps its fresh
    initialisation; every other weight must fit, else CheckpointError lists the keys.
    """
    dropped, missing, unexpected = load_refitting_classifier(
        model, read_state_dict(path, "train.finetune_from")
    )
    if dropped:
        logger.info("classifier re-initialised (shape differs): %s", ", ".join(dropped))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the configured model; "
            f"missing {missing}, unexpected {unexpected}"
        )
