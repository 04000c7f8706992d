"""A trained model rebuilt from a checkpoint alone: its stored config, weights and class names.

Nothing is read from ``configs/`` and nothing is downloaded: the stored config is validated
(keys, types, value rules, allowed ``_target_`` builders) before anything is instantiated, and
the weights come from the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from rnlvideo.checkpoint_format import (
    CheckpointError,
    load_checkpoint,
    stored_class_names,
    stored_config,
    stored_progress,
)
from rnlvideo.config import apply_overrides, build_model, validate_config
from rnlvideo.data.lists import class_names_for
from rnlvideo.models.weights import state_dict_in


@dataclass
class TrainedModel:
    """``model`` (eval mode) with ``path``'s weights, built from ``cfg``.

    ``epoch``: epochs it trained; ``class_names``: one name per output (the class indices
    when the checkpoint stores none and no category file is found); ``trust_code``: whether
    the caller allowed the config to name code outside rnlvideo's builders (the datasets built
    from ``cfg`` need the same permission).
    """

    path: Path | None
    cfg: DictConfig
    model: nn.Module
    epoch: int
    class_names: list[str]
    trust_code: bool = False


def load_trained_model(
    path: str | Path,
    overrides: Sequence[str] = (),
    trust_code: bool = False,
    protocol: str | None = None,
) -> TrainedModel:
    """Rebuild a checkpoint's model from the config stored in it.

    Args:
        path: a checkpoint written by rnlvideo (format 1 or 2).
        overrides: ``key=value`` changes of the stored config (``data.root=...``,
            ``protocol=2x3``, ``eval.batch_size=4``); see :func:`rnlvideo.config.apply_overrides`.
        trust_code: allow ``_target_`` names outside rnlvideo's builders. Never for files
            from someone else: a config names the code that builds the model.
        protocol: a test-protocol preset (``1x1``, ``2x3``, ``10x3``) chosen before
            ``overrides``.

    Raises:
        CheckpointError: the file is unreadable, holds no config or its weights do not fit.
        ConfigError: the stored config (or an override) is invalid or names untrusted code.
    """
    path = Path(path)
    state = load_checkpoint(path)
    cfg = validate_config(stored_config(state, path), trust_code=trust_code, stored=True)
    epoch = stored_progress(state, path).get("epoch", 0)
    names = stored_class_names(state, path)
    if names is not None and len(names) != cfg.data.num_classes:
        raise CheckpointError(
            f"{path}: stores {len(names)} class names for data.num_classes={cfg.data.num_classes}"
        )
    if overrides or protocol:
        cfg = apply_overrides(cfg, overrides, trust_code, protocol)
    model = build_model(cfg, load_weights=False, trust_code=trust_code)
    try:
        model.load_state_dict(state_dict_in(state, path))
    except (RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: the weights do not fit its config's model: {reason}"
        ) from None
    model.eval()
    if names is None:
        names = class_names_for(
            cfg.data.val.list_file, cfg.data.num_classes, cfg.data.category_file
        )
    return TrainedModel(path, cfg, model, epoch, names, trust_code)
