"""Build models, datasets and optimisers from validated configs, without a second resolution.

Every object a config describes is made by :func:`instantiate` from plain data: the config
node is resolved once (:func:`rnlvideo.config.validation.resolved_container`, which refuses a
value still holding ``${``), and each ``_target_`` node is checked against the allow-list and
its builder's signature at the moment it is called. Nothing is handed to Hydra's
``instantiate``, whose own interpolation pass would resolve the values a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from rnlvideo.config.errors import ConfigError, DatasetNotFoundError
from rnlvideo.config.targets import check_target_node
from rnlvideo.config.validation import resolved_container
from rnlvideo.text import printable

logger = logging.getLogger(__name__)

DATA_SPLITS = ("train", "val")


def _build_value(value: Any, path: str, trust_code: bool) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            return instantiate(value, path, trust_code)
        return {k: _build_value(v, f"{path}.{k}", trust_code) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_build_value(v, f"{path}[{i}]", trust_code) for i, v in enumerate(value)]
    return value


def instantiate(node: Mapping[str, Any], path: str, trust_code: bool = False, **given: Any) -> Any:
    """Call the builder of the plain target node ``node`` with its keys as keyword arguments.

    Nested target nodes are built first (depth first). ``given`` are keyword arguments made by
    the caller (the model for an optimiser, say); they replace keys of the same name, which are
    then not built. ``path`` is the node's key in the whole config, for the messages.

    Raises:
        UntrustedTargetError: a ``_target_`` is not one of rnlvideo's builders (without
            ``trust_code``).
        ConfigError: a key or value is not accepted by its builder, or the builder refused its
            arguments (its ``ValueError`` / ``TypeError``, with the key named).
    """
    builder = check_target_node(node, path, trust_code)
    kwargs = {
        key: _build_value(value, f"{path}.{key}", trust_code)
        for key, value in node.items()
        if key != "_target_" and key not in given
    }
    try:
        return builder(**kwargs, **given)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path}: {printable(str(err))}") from err


def config_node(cfg: DictConfig, key: str) -> Any:
    """``cfg.<key>`` resolved once into plain data (a value still holding ``${`` is refused)."""
    node = OmegaConf.select(cfg, key, throw_on_missing=False)
    return resolved_container(node, key)


def build_model(cfg: DictConfig, load_weights: bool = True, trust_code: bool = False) -> nn.Module:
    """Instantiate ``cfg.model`` (its ``_target_`` is a model builder function).

    ``load_weights=False``: the weights will come from elsewhere (a checkpoint), so the
    ``model.weights`` initialisation (ImageNet, say) is skipped: nothing is read or downloaded.
    """
    node = config_node(cfg, "model")
    if not load_weights and node.get("weights") is not None:
        logger.debug("model.weights=%s ignored: weights come from the checkpoint", node["weights"])
        node["weights"] = None
    return instantiate(node, "model", trust_code)


def check_dataset_on_disk(cfg: DictConfig, split: str) -> None:
    """Fail at once, with the dataset's preparation hint, when a split's files are missing."""
    node = config_node(cfg, f"data.{split}")
    missing = [
        str(p) for p in (node.get("root"), node.get("list_file")) if p and not Path(p).exists()
    ]
    if missing:
        hint = printable(str(config_node(cfg, "data").get("prepare_hint", "")), keep_newlines=True)
        raise DatasetNotFoundError(
            f"data.{split}: not found: {printable(', '.join(missing))}\n{hint}"
        )


def build_dataset(cfg: DictConfig, split: str, trust_code: bool = False) -> Dataset:
    """Instantiate ``cfg.data.<split>`` (``train`` or ``val``)."""
    if split not in DATA_SPLITS:
        raise ValueError(f"split={split!r}: expected one of {DATA_SPLITS}")
    check_dataset_on_disk(cfg, split)
    node = config_node(cfg, f"data.{split}")
    if split == "val" and node.get("on_error") == "resample":
        raise ConfigError("data.val.on_error='resample': validation never substitutes a video")
    return instantiate(node, f"data.{split}", trust_code)


def check_category_file(cfg: DictConfig) -> None:
    """A configured ``data.category_file`` must exist (a misspelt path is not ignored)."""
    path = cfg.data.category_file
    if path and not Path(path).is_file():
        raise DatasetNotFoundError(
            f"data.category_file={printable(str(path))!r}: no such file (it names the classes, "
            "one per line; set data.category_file=null to name classes by index)"
        )
