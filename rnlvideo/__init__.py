"""rnlvideo: Region-based Non-local video classification on TSM ResNets.

The Python API (:mod:`rnlvideo.api`): :func:`load_model`, :func:`evaluate`, :func:`classify`,
:func:`export` (ONNX / torch.export, :mod:`rnlvideo.deploy`), and
:func:`build_model_from_config` / :func:`build_dataset_from_config` for the objects a
training run with the same overrides would build.
"""

from rnlvideo.api import (
    build_dataset_from_config,
    build_model_from_config,
    classify,
    evaluate,
    export,
    load_model,
)
from rnlvideo.config import compose_config
from rnlvideo.version import __version__

__all__ = [
    "__version__",
    "build_dataset_from_config",
    "build_model_from_config",
    "classify",
    "compose_config",
    "evaluate",
    "export",
    "load_model",
]
