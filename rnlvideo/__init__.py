"""rnlvideo: Region-based Non-local video classification on TSM ResNets."""

from rnlvideo.config import build_dataset_from_config, build_model_from_config, compose_config

__all__ = ["build_dataset_from_config", "build_model_from_config", "compose_config"]
__version__ = "0.1.0"
