"""The Python API: load a trained model, evaluate it under a protocol, classify one video.

    import rnlvideo
    model = rnlvideo.load_model("outputs/demo/last.pt")            # eval mode, .class_names
    metrics = rnlvideo.evaluate("outputs/demo/last.pt", protocol="2x3")
    top5 = rnlvideo.classify("outputs/demo/last.pt", "data/synthetic/frames/12")

Checkpoints are rebuilt from the config stored in them, validated first (see
:mod:`rnlvideo.analysis.checkpoints`); ``overrides`` change keys of that config with the
command line's ``key=value`` syntax. ``tools/test.py`` and ``tools/predict.py`` are thin
wrappers over :func:`evaluate` and :func:`classify`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from rnlvideo.analysis.checkpoints import TrainedModel, load_trained_model
from rnlvideo.analysis.classify import ClassScore, classify_video
from rnlvideo.checkpoint import load_checkpoint, model_state_from
from rnlvideo.config import (
    ConfigError,
    apply_overrides,
    build_dataset,
    build_model,
    check_category_file,
    compose_config,
)
from rnlvideo.data.checks import check_class_count
from rnlvideo.engine.distributed import DistContext, cleanup_distributed, init_distributed
from rnlvideo.engine.evaluation import (
    Predictions,
    average_predictions,
    build_test_dataset,
    predict_dataset,
    prediction_metrics,
    protocol_of,
)
from rnlvideo.engine.reports import video_names, write_evaluation_report

logger = logging.getLogger(__name__)

ModelSource = str | Path | nn.Module | TrainedModel


def load_model(checkpoint: str | Path, trust_code: bool = False) -> nn.Module:
    """The trained model of ``checkpoint``, in eval mode on the CPU.

    Built from the config stored in the file (validated; ``configs/`` is not read) with the
    file's weights (nothing is downloaded). The module carries ``class_names`` (one per
    output) and ``cfg`` (its validated config). ``trust_code``: see
    :func:`rnlvideo.analysis.checkpoints.load_trained_model`.
    """
    trained = load_trained_model(checkpoint, trust_code=trust_code)
    trained.model.cfg = trained.cfg
    trained.model.class_names = trained.class_names
    return trained.model


def _as_trained(source: ModelSource, overrides: Sequence[str], trust_code: bool) -> TrainedModel:
    if isinstance(source, TrainedModel):
        cfg = apply_overrides(source.cfg, overrides, trust_code) if overrides else source.cfg
        return TrainedModel(
            source.path, cfg, source.model, source.epoch, source.class_names, trust_code
        )
    if isinstance(source, nn.Module):
        cfg = getattr(source, "cfg", None)
        if cfg is None:
            raise TypeError(
                "a bare nn.Module has no data config: pass a checkpoint path or a model from "
                "rnlvideo.load_model"
            )
        if overrides:
            cfg = apply_overrides(cfg, overrides, trust_code)
        names = list(getattr(source, "class_names", None) or range(cfg.data.num_classes))
        return TrainedModel(None, cfg, source, 0, [str(n) for n in names], trust_code)
    return load_trained_model(source, overrides, trust_code=trust_code)


def _protocol_overrides(protocol: str | None, overrides: Sequence[str]) -> list[str]:
    return ([f"protocol={protocol}"] if protocol else []) + list(overrides)


@dataclass
class MemberResult:
    """One model's evaluation: the model, its view-averaged scores and its test dataset."""

    trained: TrainedModel
    preds: Predictions
    dataset: Dataset


def evaluate_member(trained: TrainedModel, ctx: DistContext) -> MemberResult:
    """Score the test split of ``trained.cfg`` (every video once over the ranks of ``ctx``)."""
    cfg = trained.cfg
    dataset = build_test_dataset(cfg, trust_code=trained.trust_code)
    check_category_file(cfg)
    check_class_count(cfg.data.category_file, cfg.data.num_classes)
    if len(trained.class_names) != cfg.data.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.data.num_classes}: the model has "
            f"{len(trained.class_names)} class names"
        )
    preds = predict_dataset(
        trained.model.to(ctx.device),
        dataset,
        ctx,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.eval.num_workers,
        amp=cfg.train.amp,
        softmax=cfg.eval.softmax,
        max_clips=cfg.eval.max_clips_per_forward,
    )
    trained.model.to("cpu")
    return MemberResult(trained, preds, dataset)


def default_report_dir(members: Sequence[TrainedModel], protocol_name: str) -> Path | None:
    """``<dir>/eval_<stem>_<protocol>``; ensembles: ``eval_ensemble_<run-stem>+..._<protocol>``.

    None when a member was not loaded from a file (then no report is written by default).
    """
    paths = [m.path for m in members]
    if any(p is None for p in paths):
        return None
    if len(paths) == 1:
        return paths[0].parent / f"eval_{paths[0].stem}_{protocol_name}"
    names = "+".join(f"{p.resolve().parent.name}-{p.stem}" for p in paths)
    return paths[0].parent / f"eval_ensemble_{names}_{protocol_name}"


def _member_summary(result: MemberResult) -> dict[str, Any]:
    return {
        "checkpoint": str(result.trained.path) if result.trained.path else None,
        "num_segments": int(result.trained.cfg.data.num_segments),
        "epoch": result.trained.epoch,
        **prediction_metrics(result.preds, video_names(result.dataset)),
    }


def evaluate(
    checkpoint_or_model: ModelSource | Sequence[ModelSource],
    protocol: str | None = None,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    report: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    """top-1 / top-5 / mean-class accuracy of a model (or an ensemble) on its test split.

    Args:
        checkpoint_or_model: a checkpoint path, a model from :func:`load_model`, or a list of
            them: an ensemble, whose per-video scores are averaged (each member sees its own
            frames, e.g. 8 and 16).
        protocol: ``"1x1"``, ``"2x3"`` or ``"10x3"`` (None: the stored config's protocol).
        overrides: ``key=value`` changes of each member's config (``data.root=...``,
            ``eval.batch_size=4``, ``protocol.clips=1``).
        out_dir: where the report goes (default ``<checkpoint dir>/eval_<stem>_<protocol>``).
        report: write the report files (``rnlvideo/engine/reports.py``) on rank 0.
        trust_code: see :func:`load_model`.

    Returns:
        The metrics (as written to ``metrics.json``): top1, top5, mean_class_acc, num_videos,
        views, protocol, softmax, checkpoints, list_file, report_dir (when a report is written)
        and, for ensembles, ``members``.
        Under torchrun every rank scores its share and every rank returns the metrics.
    """
    sources = (
        list(checkpoint_or_model)
        if isinstance(checkpoint_or_model, list | tuple)
        else [checkpoint_or_model]
    )
    every_override = _protocol_overrides(protocol, overrides)
    members = [_as_trained(source, every_override, trust_code) for source in sources]
    protocols = [protocol_of(m.cfg) for m in members]
    if any(p != protocols[0] for p in protocols):
        raise ValueError(f"ensemble members use different protocols: {protocols}")
    owns_process_group = not torch.distributed.is_initialized()
    ctx = init_distributed(members[0].cfg.train.device)
    try:
        results = [evaluate_member(m, ctx) for m in members]
    finally:
        if owns_process_group:
            cleanup_distributed()
    first = results[0]
    cfg = first.trained.cfg
    preds = average_predictions([r.preds for r in results])
    metrics: dict[str, Any] = {
        **prediction_metrics(preds, video_names(first.dataset)),
        "views": f"{protocols[0]['clips']}x{protocols[0]['crops']}",
        "protocol": protocols[0],
        "softmax": bool(cfg.eval.softmax),
        "checkpoints": [str(m.path) if m.path else None for m in members],
        "list_file": str(cfg.data.val.list_file),
    }
    if len(results) > 1:
        metrics["members"] = [_member_summary(r) for r in results]
    target = Path(out_dir) if out_dir else default_report_dir(members, protocols[0]["name"])
    if report and target is not None:
        metrics["report_dir"] = str(target)
    if report and target is not None and ctx.is_main:
        write_evaluation_report(
            target,
            preds,
            metrics,
            first.trained.class_names,
            video_names(first.dataset),
            tag=f"test_{protocols[0]['name']}",
            step=first.trained.epoch,
        )
    return metrics


def classify(
    checkpoint_or_model: ModelSource,
    video: str | Path | torch.Tensor,
    topk: int = 5,
    protocol: str | None = None,
    overrides: Sequence[str] = (),
    trust_code: bool = False,
) -> list[ClassScore]:
    """The ``topk`` most probable classes of one video, best first.

    Args:
        checkpoint_or_model: a checkpoint path or a model from :func:`load_model`.
        video: a video file (decoded by ``data.video_backend``, e.g.
            ``overrides=["data.video_backend=pyav"]``), a folder of JPEG frames (sorted by
            name), a packed frame file (``.pack``) or the video's frames as a uint8 tensor
            ``(num_frames, 3, H, W)``.
        topk: how many classes to return.
        protocol: the views averaged (default: the stored protocol, ``1x1``: one clip, centre
            crop); ``"2x3"`` averages the paper's 6 views.
        overrides, trust_code: as for :func:`evaluate`.

    Returns:
        :class:`ClassScore` entries (index, name, probability).
    """
    trained = _as_trained(checkpoint_or_model, _protocol_overrides(protocol, overrides), trust_code)
    ranked, _ = classify_video(trained, video, topk=topk)
    return ranked


def build_model_from_config(
    overrides: Sequence[str] = (), checkpoint: str | Path | None = None, trust_code: bool = False
) -> nn.Module:
    """A model from command-line style overrides of ``configs/``, optionally with weights.

    With ``checkpoint`` (one of ours or a bare state dict) its weights are loaded and the
    configured ``model.weights`` initialisation is skipped (nothing is downloaded). To rebuild a
    checkpoint exactly as it was trained, use :func:`load_model`.

    >>> model = build_model_from_config(["+experiment=demo"])
    """
    cfg = compose_config(overrides, trust_code=trust_code)
    model = build_model(cfg, load_weights=checkpoint is None, trust_code=trust_code)
    if checkpoint is not None:
        model.load_state_dict(model_state_from(load_checkpoint(checkpoint)))
    return model


def build_dataset_from_config(
    overrides: Sequence[str] = (), split: str = "val", trust_code: bool = False
) -> Dataset:
    """The dataset of ``split`` (``train``, ``val`` or ``test``) that training would build."""
    cfg = compose_config(overrides, trust_code=trust_code)
    if split == "test":
        return build_test_dataset(cfg, trust_code=trust_code)
    return build_dataset(cfg, split, trust_code=trust_code)
