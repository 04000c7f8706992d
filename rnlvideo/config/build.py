"""Build models and datasets from validated configs."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from rnlvideo.config.errors import DatasetNotFoundError

logger = logging.getLogger(__name__)

DATA_SPLITS = ("train", "val")


def build_model(cfg: DictConfig, load_weights: bool = True) -> nn.Module:
    """Instantiate ``cfg.model`` (its ``_target_`` is a model builder function).

    ``load_weights=False``: the weights will come from elsewhere (a checkpoint), so the
    ``model.weights`` initialisation (ImageNet, say) is skipped: nothing is read or downloaded.
    """
    node = OmegaConf.to_container(cfg.model, resolve=True)
    if not load_weights and node.get("weights") is not None:
        logger.debug("model.weights=%s ignored: weights come from the checkpoint", node["weights"])
        node["weights"] = None
    return instantiate(node, _convert_="all")


def check_dataset_on_disk(cfg: DictConfig, split: str) -> None:
    """Fail at once, with the dataset's preparation hint, when a split's files are missing."""
    node = cfg.data[split]
    missing = [
        str(p) for p in (node.get("root"), node.get("list_file")) if p and not Path(p).exists()
    ]
    if missing:
        raise DatasetNotFoundError(
            f"data.{split}: not found: {', '.join(missing)}\n{cfg.data.get('prepare_hint', '')}"
        )


def build_dataset(cfg: DictConfig, split: str) -> Dataset:
    """Instantiate ``cfg.data.<split>`` (``train`` or ``val``)."""
    if split not in DATA_SPLITS:
        raise ValueError(f"split={split!r}: expected one of {DATA_SPLITS}")
    check_dataset_on_disk(cfg, split)
    return instantiate(cfg.data[split], _convert_="all")
