"""Evaluate a checkpoint (or an ensemble) under a test protocol.

    python tools/test.py ckpt=outputs/demo/last.pt                    # protocol 1x1
    python tools/test.py ckpt=outputs/demo/last.pt protocol=2x3       # the paper's 6 views
    python tools/test.py ckpt=PATH protocol=10x3 protocol.clips=4     # custom clips x crops
    python tools/test.py ckpt=[a/last.pt,b/last.pt] protocol=2x3      # ensemble: mean scores
    torchrun --nproc_per_node=4 tools/test.py ckpt=PATH protocol=2x3  # sharded, exact

Each model is rebuilt with the overrides stored in its checkpoint, then the command line's
(which win, e.g. ``data.root=...``, ``eval.batch_size=...``, ``eval.softmax=true``), and scores
the test split with its own data config (an 8- and a 16-frame model each see their own frames);
an ensemble averages the scores per video. ``out=DIR`` sets the output directory, by default
``<checkpoint dir>/eval_<checkpoint stem>_<protocol>/`` (see rnlvideo/engine/reports.py for
the files written there).
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.data import Dataset  # noqa: E402

from rnlvideo.analysis.checkpoints import TrainedModel, load_trained_model  # noqa: E402
from rnlvideo.analysis.tool_args import split_tool_args  # noqa: E402
from rnlvideo.config import DatasetNotFoundError, build_dataset  # noqa: E402
from rnlvideo.data.checks import check_class_count  # noqa: E402
from rnlvideo.engine.distributed import (  # noqa: E402
    DistContext,
    cleanup_distributed,
    init_distributed,
)
from rnlvideo.engine.evaluation import (  # noqa: E402
    Predictions,
    average_predictions,
    describe_protocol,
    predict_dataset,
    prediction_metrics,
)
from rnlvideo.engine.metrics import classification_metrics  # noqa: E402
from rnlvideo.engine.reports import (  # noqa: E402
    class_names_for,
    video_names,
    write_evaluation_report,
)
from rnlvideo.engine.runtime import quiet_non_main_ranks  # noqa: E402

logger = logging.getLogger("test")
USAGE = "usage: python tools/test.py ckpt=PATH|[PATH,PATH,...] [out=DIR] [key=value ...]"


def protocol_of(trained: TrainedModel) -> dict[str, Any]:
    """The resolved protocol of a model's config (``configs/protocol/``)."""
    cfg = trained.cfg
    return describe_protocol(
        clips=cfg.protocol.clips,
        crops=cfg.protocol.crops,
        input_size=cfg.data.input_size,
        scale_size=cfg.data.scale_size,
        sampling=cfg.protocol.sampling,
        crop_size=cfg.protocol.crop_size,
        val_sampling=cfg.data.val.sampling,
    )


def default_output_dir(checkpoints: list[Path], protocol_name: str) -> Path:
    """``<dir>/eval_<stem>_<protocol>``; ensembles: ``eval_ensemble_<run-stem>+..._<protocol>``."""
    first = checkpoints[0]
    if len(checkpoints) == 1:
        return first.parent / f"eval_{first.stem}_{protocol_name}"
    members = "+".join(f"{p.resolve().parent.name}-{p.stem}" for p in checkpoints)
    return first.parent / f"eval_ensemble_{members}_{protocol_name}"


@dataclass
class MemberResult:
    """One checkpoint's evaluation: its config, view-averaged scores and test dataset."""

    trained: TrainedModel
    preds: Predictions
    dataset: Dataset


def evaluate_member(trained: TrainedModel, ctx: DistContext) -> MemberResult:
    """Score the test split of ``trained.cfg`` with ``trained.model`` (left on the CPU after)."""
    cfg = trained.cfg
    dataset = build_dataset(cfg, "test")
    check_class_count(cfg.data.get("category_file"), cfg.data.num_classes)
    preds = predict_dataset(
        trained.model.to(ctx.device),
        dataset,
        ctx,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.eval.num_workers,
        amp=cfg.train.amp,
        softmax=cfg.eval.softmax,
        max_clips=cfg.eval.get("max_clips_per_forward"),
    )
    trained.model.to("cpu")
    return MemberResult(trained, preds, dataset)


def evaluate_checkpoints(
    checkpoints: list[Path], overrides: list[str]
) -> tuple[list[MemberResult], DistContext]:
    """Evaluate each checkpoint in turn (under torchrun: sharded over the ranks).

    Returns ``(member results, DistContext)``; exits with status 2 when the dataset is missing.
    """
    results: list[MemberResult] = []
    ctx = None
    try:
        for path in checkpoints:
            trained = load_trained_model(path, overrides)
            if ctx is None:
                ctx = init_distributed(trained.cfg.train.device)
                quiet_non_main_ranks(ctx)
            logger.info(
                "%s: %d frames, %s views",
                path,
                trained.cfg.data.num_segments,
                trained.cfg.data.test_views,
            )
            results.append(evaluate_member(trained, ctx))
    except DatasetNotFoundError as err:
        logger.error("%s", err)
        sys.exit(2)
    finally:
        cleanup_distributed()
    return results, ctx


def member_summary(result: MemberResult) -> dict[str, Any]:
    """A member's own metrics, recorded in an ensemble's metrics.json."""
    return {
        "checkpoint": str(result.trained.path),
        "num_segments": int(result.trained.cfg.data.num_segments),
        "epoch": result.trained.epoch,
        **classification_metrics(result.preds.scores, result.preds.labels),
    }


def main(argv: list[str]) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    own, overrides = split_tool_args(argv, ("ckpt", "out"))
    if "ckpt" not in own:
        sys.exit(USAGE)
    paths = own["ckpt"] if isinstance(own["ckpt"], list) else [own["ckpt"]]
    checkpoints = [Path(p) for p in paths]
    results, ctx = evaluate_checkpoints(checkpoints, overrides)

    protocols = [protocol_of(r.trained) for r in results]
    if any(p != protocols[0] for p in protocols):
        raise ValueError(f"ensemble members use different protocols: {protocols}")
    protocol = protocols[0]
    first = results[0]
    cfg = first.trained.cfg
    preds = average_predictions([r.preds for r in results])
    metrics = {
        **prediction_metrics(preds, video_names(first.dataset)),
        "views": cfg.data.test_views,
        "protocol": protocol,
        "softmax": bool(cfg.eval.softmax),
        "checkpoints": [str(p) for p in checkpoints],
        "list_file": str(cfg.data.test.list_file),
    }
    if len(results) > 1:
        metrics["members"] = [member_summary(r) for r in results]
    if not ctx.is_main:
        return metrics
    out_dir = (
        Path(own["out"]) if "out" in own else default_output_dir(checkpoints, protocol["name"])
    )
    names = class_names_for(
        cfg.data.test.list_file, preds.scores.shape[1], cfg.data.get("category_file")
    )
    write_evaluation_report(
        out_dir,
        preds,
        metrics,
        names,
        video_names(first.dataset),
        tag=f"test_{protocol['name']}",
        step=first.trained.epoch,
    )
    logger.info(
        "%s (%d views): top1 %.2f  top5 %.2f  mean-class %.2f  (%d videos) -> %s",
        protocol["name"],
        protocol["views"],
        metrics["top1"],
        metrics["top5"],
        metrics["mean_class_acc"],
        metrics["num_videos"],
        out_dir,
    )
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
