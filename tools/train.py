"""Train a video classifier: python tools/train.py +experiment=demo [key=value ...]

Multi-GPU / multi-node, e.g. 4 GPUs x 4 clips x 4 accumulation = the recipe's total batch of 64:
torchrun --nproc_per_node=4 tools/train.py +experiment=rnl_sthv1 train.batch_size=4

``--trust-code`` allows ``_target_`` names outside rnlvideo's builders (your own model
builder, say); without it such a config is refused. Exit status: 0 done; 2 the launch was
refused (invalid config, dataset missing, run directory in use, resume refused, ...) and no
file was written; 1 training failed after it started (a checkpoint could not be written, a
non-finite loss, a bad video); 75 stopped by a signal after writing last.pt (relaunch to
resume). Every refusal or failure is reported as one message naming the file or key.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnlvideo.cli import (
    EXIT_FAILED,
    EXIT_REFUSED,
    TOOL_ERRORS,
    TRUST_FLAG,
    exit_refused,
    misspelt_trust_flag,
)
from rnlvideo.config import register_schemas, validate_config
from rnlvideo.engine.distributed import (
    cleanup_distributed,
    init_distributed,
)
from rnlvideo.engine.preemption import EXIT_PREEMPTED, Preempted
from rnlvideo.engine.run_log import PendingLog
from rnlvideo.engine.runtime import quiet_non_main_ranks
from rnlvideo.engine.trainer import Trainer

logger = logging.getLogger("train")


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


def hydra_records(cfg: DictConfig) -> dict[str, str]:
    """Hydra's records of this launch (``.hydra/``), written once the launch is accepted."""
    hydra_cfg = HydraConfig.get()
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task)),
    }


def main(cfg: DictConfig, trust_code: bool = False) -> float:
    run_log = PendingLog().install()
    try:
        records = hydra_records(cfg)
        try:
            cfg = run_config(cfg, trust_code)
        except ValueError as err:
            exit_refused(logger, err)
        ctx = init_distributed(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
        quiet_non_main_ranks(ctx)
        try:
            try:
                trainer = Trainer(cfg, ctx, cfg.output_dir, trust_code, records, run_log)
            except TOOL_ERRORS as err:
                exit_refused(logger, err)
            try:
                metrics = trainer.fit()
            except Preempted as signal_stop:
                logger.warning(
                    "%s; last.pt written, relaunch the same command to resume", signal_stop
                )
                sys.exit(EXIT_PREEMPTED)
            except TOOL_ERRORS as err:
                exit_refused(logger, err, EXIT_FAILED)
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
    finally:
        run_log.uninstall()


if __name__ == "__main__":
    misspelt = misspelt_trust_flag(sys.argv[1:])
    if misspelt:
        print(f"unknown option {misspelt}: did you mean {TRUST_FLAG}?", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    trusted = TRUST_FLAG in sys.argv
    sys.argv = [arg for arg in sys.argv if arg != TRUST_FLAG]
    register_schemas()
    hydra.main(config_path="../configs", config_name="config", version_base="1.3")(
        lambda cfg: main(cfg, trusted)
    )()
