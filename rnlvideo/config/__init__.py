"""The config layer: schema, validation, composition and building from configs.

Nothing here imports the engine; checkpoints are read by :mod:`rnlvideo.checkpoint_format`.
The names below load on first use, so that ``rnlvideo.config.schema`` (which the data layer
reads its test-protocol names from) imports without Hydra.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATA_SPLITS": "build",
    "build_dataset": "build",
    "build_model": "build",
    "check_category_file": "build",
    "check_dataset_on_disk": "build",
    "config_node": "build",
    "instantiate": "build",
    "CONFIG_DIR": "compose",
    "REPRODUCIBLE_RUN_OVERRIDES": "compose",
    "apply_overrides": "compose",
    "compose_config": "compose",
    "portable_config": "compose",
    "select_protocol": "compose",
    "ConfigError": "errors",
    "DatasetNotFoundError": "errors",
    "UntrustedTargetError": "errors",
    "PROTOCOL_PRESETS": "schema",
    "register_schemas": "schema",
    "ALLOWED_TARGETS": "targets",
    "validate_config": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnlvideo.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rnlvideo.config.{module}"), name)
