"""Evaluate a checkpoint (or an ensemble) under a test protocol.

    python tools/test.py ckpt=outputs/demo/last.pt                    # the stored protocol (1x1)
    python tools/test.py ckpt=outputs/demo/last.pt protocol=2x3       # the paper's 6 views
    python tools/test.py ckpt=PATH protocol=10x3 protocol.clips=4     # custom clips x crops
    python tools/test.py ckpt=[a/last.pt,b/last.pt] protocol=2x3      # ensemble: mean scores
    torchrun --nproc_per_node=4 tools/test.py ckpt=PATH protocol=2x3  # sharded, exact

Each model is rebuilt from the config stored in its checkpoint (validated first; ``configs/``
is not read); the other ``key=value`` arguments change keys of that config (``data.root=...``,
``eval.batch_size=...``, ``eval.softmax=true``). ``out=DIR`` sets the report directory, by
default ``<checkpoint dir>/eval_<checkpoint stem>_<protocol>/``. ``--trust-code`` allows a
stored config to name code outside rnlvideo's builders (only for checkpoints you made).
This is a thin wrapper over :func:`rnlvideo.evaluate`.
"""

import logging
import sys
from typing import Any

import rnlvideo
from rnlvideo.cli import (
    TOOL_ERRORS,
    TRUST_FLAG,
    exit_refused,
    split_tool_args,
)

logger = logging.getLogger("test")
USAGE = (
    "usage: python tools/test.py ckpt=PATH|[PATH,PATH,...] [out=DIR] [--trust-code] [key=value ...]"
)


def main(argv: list[str]) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        own, overrides = split_tool_args(argv, ("ckpt", "out"))
        if "ckpt" not in own:
            raise ValueError(USAGE)
        paths = own["ckpt"] if isinstance(own["ckpt"], list) else [own["ckpt"]]
        metrics = rnlvideo.evaluate(
            paths, overrides=overrides, out_dir=own.get("out"), trust_code=TRUST_FLAG in own
        )
    except TOOL_ERRORS as err:
        exit_refused(logger, err)
    protocol = metrics["protocol"]
    logger.info(
        "%s (%d views): top1 %.2f  top5 %.2f  mean-class %.2f  (%d videos) -> %s",
        protocol["name"],
        protocol["views"],
        metrics["top1"],
        metrics["top5"],
        metrics["mean_class_acc"],
        metrics["num_videos"],
        metrics.get("report_dir", "no report"),
    )
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
