"""Train a video classifier: python tools/train.py +experiment=demo [key=value ...]

Multi-GPU / multi-node, e.g. 4 GPUs x 4 clips x 4 accumulation = the recipe's total batch of 64:
torchrun --nproc_per_node=4 tools/train.py +experiment=rnl_sthv1 train.batch_size=4

``--trust-code`` allows ``_target_`` names outside rnlvideo's builders (your own model
builder, say); without it such a config is refused. Exit status: 0 done, 1 error, 2 the dataset
is missing, 75 stopped by a signal after writing last.pt (relaunch to resume).
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnlvideo.config import (  # noqa: E402
    ConfigError,
    DatasetNotFoundError,
    register_schemas,
    validate_config,
)
from rnlvideo.engine.distributed import cleanup_distributed, init_distributed  # noqa: E402
from rnlvideo.engine.preemption import EXIT_PREEMPTED, Preempted  # noqa: E402
from rnlvideo.engine.runtime import quiet_non_main_ranks  # noqa: E402
from rnlvideo.engine.trainer import Trainer  # noqa: E402

logger = logging.getLogger("train")
TRUST_FLAG = "--trust-code"


def run_config(cfg: DictConfig, trust_code: bool) -> DictConfig:
    """The validated config of this run, with its command-line overrides and run directory.

    Under ``--multirun`` each job trains in its own sweep directory unless the command line
    sets ``output_dir``.
    """
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    cfg.overrides = overrides
    if hydra_cfg.mode == RunMode.MULTIRUN and not any(
        o.lstrip("+").startswith("output_dir=") for o in overrides
    ):
        cfg.output_dir = hydra_cfg.runtime.output_dir
    return validate_config(cfg, trust_code=trust_code)


def main(cfg: DictConfig, trust_code: bool = False) -> float:
    try:
        cfg = run_config(cfg, trust_code)
    except ConfigError as err:
        logger.error("invalid config: %s", err)
        sys.exit(1)
    ctx = init_distributed(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
    quiet_non_main_ranks(ctx)
    try:
        metrics = Trainer(cfg, ctx, cfg.output_dir).fit()
    except DatasetNotFoundError as err:
        logger.error("%s", err)
        sys.exit(2)
    except Preempted as stop:
        logger.warning("%s; last.pt written, relaunch the same command to resume", stop)
        sys.exit(EXIT_PREEMPTED)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        logger.info(
            "test (%s views): top1 %.2f  top5 %.2f  mean-class %.2f  (%d videos)",
            metrics["views"],
            metrics["top1"],
            metrics["top5"],
            metrics["mean_class_acc"],
            metrics["num_videos"],
        )
        logger.info("run directory: %s", Path(cfg.output_dir).resolve())
    return metrics["top1"]


if __name__ == "__main__":
    trusted = TRUST_FLAG in sys.argv
    sys.argv = [arg for arg in sys.argv if arg != TRUST_FLAG]
    register_schemas()
    hydra.main(config_path="../configs", config_name="config", version_base="1.3")(
        lambda cfg: main(cfg, trusted)
    )()
