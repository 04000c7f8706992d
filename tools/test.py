"""Evaluate a checkpoint: python tools/test.py ckpt=outputs/demo/last.pt [key=value ...]

The model and data are configured with the overrides stored in the checkpoint (those it was
trained with), followed by the command line's, which win. Works under torchrun too.
"""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnlvideo.config import (  # noqa: E402
    DatasetNotFoundError,
    build_dataset,
    build_model,
    checkpoint_overrides,
    compose_config,
    load_model_weights,
)
from rnlvideo.engine.distributed import cleanup_distributed, init_distributed  # noqa: E402
from rnlvideo.engine.evaluation import evaluate_dataset  # noqa: E402
from rnlvideo.engine.runtime import quiet_non_main_ranks  # noqa: E402

logger = logging.getLogger("test")


def parse_checkpoint_arg(argv: list[str]) -> str:
    for arg in argv:
        if arg.startswith("ckpt="):
            return arg.split("=", 1)[1]
    sys.exit("usage: python tools/test.py ckpt=PATH [key=value ...]")


def main(argv: list[str]) -> dict:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    ckpt_path = parse_checkpoint_arg(argv)
    stored = [o for o in checkpoint_overrides(ckpt_path) if not o.startswith("ckpt=")]
    cfg = compose_config(stored + argv)
    ctx = init_distributed(cfg.train.device)
    quiet_non_main_ranks(ctx)
    try:
        model = build_model(cfg)
        load_model_weights(model, ckpt_path)
        model.to(ctx.device)
        dataset = build_dataset(cfg, "test")
        metrics = evaluate_dataset(
            model,
            dataset,
            ctx,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.eval.num_workers,
            amp=cfg.train.amp,
            softmax=cfg.eval.softmax,
        )
    except DatasetNotFoundError as err:
        logger.error("%s", err)
        sys.exit(2)
    finally:
        cleanup_distributed()
    metrics.update(views=cfg.data.test_views, checkpoint=str(ckpt_path))
    if ctx.is_main:
        out = Path(ckpt_path).with_name(f"test_{Path(ckpt_path).stem}_{cfg.data.test_views}.json")
        out.write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info(
            "%s views: top1 %.2f  top5 %.2f  mean-class %.2f  (%d videos) -> %s",
            metrics["views"],
            metrics["top1"],
            metrics["top5"],
            metrics["mean_class_acc"],
            metrics["num_videos"],
            out,
        )
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
