"""A trained model rebuilt from one of our checkpoints and the overrides stored in it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from rnlvideo.config import build_model, compose_config
from rnlvideo.engine.checkpoint import load_checkpoint, model_state_from


@dataclass
class TrainedModel:
    """``model`` with ``path``'s weights, built from ``cfg``; ``epoch``: epochs it trained."""

    path: Path
    cfg: DictConfig
    model: nn.Module
    epoch: int


def load_trained_model(path: str | Path, overrides: Sequence[str] = ()) -> TrainedModel:
    """Rebuild a checkpoint's model with the overrides it was trained with, then ``overrides``.

    The command-line ``overrides`` come last, so they win (e.g. ``protocol=2x3``, ``data.root``).
    The checkpoint is read once, onto the CPU.
    """
    path = Path(path)
    state = load_checkpoint(path)
    stored = [o for o in state.get("overrides", []) if not o.startswith("ckpt=")]
    cfg = compose_config([*stored, *overrides])
    model = build_model(cfg)
    model.load_state_dict(model_state_from(state))
    model.eval()
    epoch = int(state.get("progress", {}).get("epoch", 0))
    return TrainedModel(path=path, cfg=cfg, model=model, epoch=epoch)
