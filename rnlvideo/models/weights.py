"""Weights in files: reading a state dict, removing wrapper prefixes, refitting the classifier.

One reader for every source of weights a model takes:

- a torchvision ResNet state dict (``resnet50-0676ba61.pth``), or a torchvision weights name
  (``ResNet50_Weights.IMAGENET1K_V1``, the one case that downloads);
- a pytorchvideo / PySlowFast ``.pyth`` file (weights under ``model_state``);
- one of rnlvideo's checkpoints (weights under ``model``), or any bare state dict.

Files are read with ``torch.load(weights_only=True)``. Prefixes that wrappers add to every key
(``module.`` for DataParallel / DDP, ``_orig_mod.`` for ``torch.compile``, PySlowFast's
``model.``) are removed. :func:`load_refitting_classifier` loads weights whose classifier has
another number of classes (fine-tuning) and leaves that classifier as initialised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

CLASSIFIER_PREFIX = "head.fc."  # TSM ResNets; other models name theirs in `classifier_prefix`
# Where files keep their weights: pytorchvideo / PySlowFast, rnlvideo, others.
STATE_KEYS = ("model_state", "model", "state_dict")
# Removed from every key that has it: DataParallel / DDP and torch.compile wrappers.
_KEY_WRAPPERS = ("module.", "_orig_mod.")
# Removed when every key has it: PySlowFast's wrapper of pytorchvideo models.
_COMMON_WRAPPERS = ("model.",)
TORCHVISION_WEIGHTS_NAME = re.compile(r"\w+_Weights\.\w+")


def classifier_prefix(model: nn.Module) -> str:
    """The state-dict prefix of ``model``'s classifier (``head.fc.`` unless the model says)."""
    return getattr(model, "classifier_prefix", CLASSIFIER_PREFIX)


def state_dict_in(loaded: Any, source: str | Path) -> dict[str, Tensor]:
    """The state dict in what a weights file held, wrapper prefixes removed.

    ``loaded`` is a state dict or a mapping holding one under :data:`STATE_KEYS`. Raises
    ``ValueError`` naming ``source`` when no mapping of names to tensors is found.
    """
    if isinstance(loaded, Mapping):
        for key in STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()
    ):
        raise ValueError(
            f"{source}: expected a state dict of tensors, or one under {' / '.join(STATE_KEYS)}"
        )
    state = dict(loaded)
    for prefix in _KEY_WRAPPERS:
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    for prefix in _COMMON_WRAPPERS:
        if state and all(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def read_state_dict(path: str | Path, key: str = "model.weights") -> dict[str, Tensor]:
    """The weights in a local file (see the module docstring); nothing is downloaded.

    ``key`` names the setting the path came from, for the messages. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` for one that holds no weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}={str(path)!r}: expected a local weights file (e.g. a pytorchvideo "
            "model-zoo .pyth); nothing is downloaded"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{key}={str(path)!r}: not a readable weights file ({reason})") from None
    return state_dict_in(loaded, f"{key}={str(path)!r}")


def torchvision_state_dict(weights: str) -> dict[str, Tensor]:
    """A torchvision state dict from a local file or a weights name (which downloads once)."""
    if Path(weights).expanduser().is_file():
        return read_state_dict(weights, "weights")
    if not TORCHVISION_WEIGHTS_NAME.fullmatch(weights):
        raise ValueError(
            f"weights={weights!r}: no such file, and not a torchvision weights name such as "
            f"'ResNet50_Weights.IMAGENET1K_V1'"
        )
    return dict(torchvision.models.get_weight(weights).get_state_dict(progress=True))


def load_refitting_classifier(
    model: nn.Module, state: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Load ``state`` into ``model``, leaving a classifier of another shape as initialised.

    Returns ``(refit, missing, unexpected)``: the classifier keys left out for their shape
    (another number of classes, as when fine-tuning), and the other keys ``model`` lacks or
    does not know. The caller decides whether ``missing`` or ``unexpected`` is an error.
    """
    own = model.state_dict()
    prefix = classifier_prefix(model)
    refit = [
        key
        for key, value in state.items()
        if key.startswith(prefix) and key in own and own[key].shape != value.shape
    ]
    kept = {key: value for key, value in state.items() if key not in refit}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    return refit, [key for key in missing if key not in refit], list(unexpected)
