"""Build models and datasets from the same Hydra configs and overrides the CLI tools take."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from rnlvideo.engine.checkpoint import load_checkpoint, model_state_from

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A configured dataset is not on disk; the message says how to prepare it."""


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The config ``tools/train.py`` would run with these command-line ``overrides``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="rnlvideo"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    cfg.overrides = list(overrides)
    return cfg


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate ``cfg.model`` (its ``_target_`` is a model builder function)."""
    return instantiate(cfg.model, _convert_="all")


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
    """Instantiate ``cfg.data.<split>`` (``train``, ``val`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    check_dataset_on_disk(cfg, split)
    return instantiate(cfg.data[split], _convert_="all")


def load_model_weights(model: nn.Module, path: str | Path, reinit_classifier: bool = False) -> None:
    """Load the weights of a checkpoint of ours (or a bare state dict) into ``model``.

    With ``reinit_classifier`` a classifier whose shape differs (another number of classes) keeps
    its fresh initialisation instead of failing: the fine-tuning case.
    """
    state = model_state_from(load_checkpoint(path))
    if reinit_classifier:
        own = model.state_dict()
        dropped = [
            k for k, v in state.items() if k.startswith("head.fc.") and own[k].shape != v.shape
        ]
        for key in dropped:
            del state[key]
        if dropped:
            logger.info("classifier re-initialised (shape differs): %s", ", ".join(dropped))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in dropped]
        if missing or unexpected:
            raise RuntimeError(
                f"{path}: weights do not match the configured model; "
                f"missing {missing}, unexpected {unexpected}"
            )
    else:
        model.load_state_dict(state)


def build_model_from_config(
    overrides: Sequence[str] = (), checkpoint: str | Path | None = None
) -> nn.Module:
    """A model from command-line style overrides, optionally with a checkpoint's weights.

    >>> model = build_model_from_config(["+experiment=demo"], checkpoint="outputs/demo/last.pt")
    """
    model = build_model(compose_config(overrides))
    if checkpoint is not None:
        load_model_weights(model, checkpoint)
    return model


def build_dataset_from_config(overrides: Sequence[str] = (), split: str = "val") -> Dataset:
    """The dataset of ``split`` that ``tools/train.py`` would build with these overrides."""
    return build_dataset(compose_config(overrides), split)


def checkpoint_overrides(path: str | Path) -> list[str]:
    """The command-line overrides a checkpoint was trained with."""
    return list(load_checkpoint(path).get("overrides", []))
