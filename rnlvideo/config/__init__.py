"""The config layer: schema, validation, composition and building from configs.

Nothing here imports the engine; checkpoints are read by :mod:`rnlvideo.checkpoint`.
"""

from rnlvideo.config.build import (
    DATA_SPLITS,
    build_dataset,
    build_model,
    check_category_file,
    check_dataset_on_disk,
    config_node,
    instantiate,
)
from rnlvideo.config.compose import (
    CONFIG_DIR,
    apply_overrides,
    compose_config,
    portable_config,
)
from rnlvideo.config.errors import ConfigError, DatasetNotFoundError, UntrustedTargetError
from rnlvideo.config.schema import PROTOCOL_PRESETS, register_schemas
from rnlvideo.config.targets import ALLOWED_TARGETS
from rnlvideo.config.validation import validate_config

__all__ = [
    "ALLOWED_TARGETS",
    "CONFIG_DIR",
    "DATA_SPLITS",
    "PROTOCOL_PRESETS",
    "ConfigError",
    "DatasetNotFoundError",
    "UntrustedTargetError",
    "apply_overrides",
    "build_dataset",
    "build_model",
    "check_category_file",
    "check_dataset_on_disk",
    "config_node",
    "compose_config",
    "instantiate",
    "portable_config",
    "register_schemas",
    "validate_config",
]
