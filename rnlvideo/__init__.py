"""rnlvideo: Region-based Non-local video classification on TSM ResNets.

The Python API (:mod:`rnlvideo.api`): :func:`load_model`, :func:`evaluate`, :func:`classify`,
:func:`export` (ONNX / torch.export, :mod:`rnlvideo.deploy`), and
:func:`build_model_from_config` / :func:`build_dataset_from_config` for the objects a
training run with the same overrides would build. These names load on first use, so that
``import rnlvideo.models`` or ``import rnlvideo.data`` stays light (no Hydra, matplotlib or
TensorBoard).
"""

from __future__ import annotations

import importlib
from typing import Any

from rnlvideo.version import __version__

_EXPORTS = {
    "build_dataset_from_config": "rnlvideo.api",
    "build_model_from_config": "rnlvideo.api",
    "classify": "rnlvideo.api",
    "evaluate": "rnlvideo.api",
    "export": "rnlvideo.api",
    "load_model": "rnlvideo.api",
    "compose_config": "rnlvideo.config",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnlvideo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
