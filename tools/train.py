"""Train a video classifier: python tools/train.py +experiment=demo [key=value ...]

Multi-GPU / multi-node, e.g. 4 GPUs x 4 clips x 4 accumulation = the recipe's total batch of 64:
torchrun --nproc_per_node=4 tools/train.py +experiment=rnl_sthv1 train.batch_size=4
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnlvideo.config import DatasetNotFoundError  # noqa: E402
from rnlvideo.engine.distributed import cleanup_distributed, init_distributed  # noqa: E402
from rnlvideo.engine.runtime import quiet_non_main_ranks  # noqa: E402
from rnlvideo.engine.trainer import Trainer  # noqa: E402

logger = logging.getLogger("train")


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    OmegaConf.set_struct(cfg, False)
    cfg.overrides = list(HydraConfig.get().overrides.task)
    ctx = init_distributed(cfg.train.device)
    quiet_non_main_ranks(ctx)
    try:
        trainer = Trainer(cfg, ctx, cfg.output_dir)
        metrics = trainer.fit()
    except DatasetNotFoundError as err:
        logger.error("%s", err)
        sys.exit(2)
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
    main()
