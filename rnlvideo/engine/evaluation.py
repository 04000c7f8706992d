"""Exact multi-view evaluation (every video once, whatever the world size), and testing models.

The model scores every view of a video (the views of a test protocol,
:mod:`rnlvideo.engine.protocols`) and the scores are averaged per video. :func:`test_models`
is the one way a trained model (or an ensemble) is tested: by ``tools/test.py``, the Python
API and the end of training.

Evaluation never substitutes a video. A missing or unreadable val/test video stops it with the
video's name (``eval.on_error=raise``, the default); with ``eval.on_error=exclude`` the dataset
marks such videos, they are left out of the metrics, logged by name and listed in
``Predictions.excluded`` (and ``metrics.json``: ``num_excluded``, ``excluded_videos``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from rnlvideo.config import ConfigError, check_category_file
from rnlvideo.data.checks import check_class_count
from rnlvideo.data.device_transforms import to_model_input
from rnlvideo.data.frames import VideoDataError
from rnlvideo.engine.distributed import DistContext, all_gather_objects
from rnlvideo.engine.loaders import make_eval_loader
from rnlvideo.engine.metrics import classification_metrics
from rnlvideo.engine.progress import interactive
from rnlvideo.engine.protocols import TestProtocol, build_test_dataset
from rnlvideo.engine.reports import video_names, write_evaluation_report
from rnlvideo.engine.trained_model import TrainedModel

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-video results in dataset order.

    ``scores`` (N, K) averaged over views, ``labels`` (N,), ``indices`` (N,) dataset indices of
    the N scored videos; ``excluded`` ``{dataset index: error message}`` of the videos left out
    (``eval.on_error=exclude``).
    """

    indices: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    excluded: dict[int, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ inference
def autocast_context(device: torch.device, amp: str | None):
    """``torch.autocast`` for ``amp`` in {None, 'bf16', 'fp16'}."""
    if amp is None:
        return nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"train.amp={amp!r}: expected null, 'bf16' or 'fp16'")
    return torch.autocast(device_type=device.type, dtype=dtypes[amp])


def view_scores(
    model: nn.Module,
    clips: torch.Tensor | list[torch.Tensor],
    softmax: bool,
    max_clips: int | None = None,
) -> torch.Tensor:
    """Scores of a batch, averaged over views.

    ``clips`` is (B, C, T, H, W) for one view or (B, V, C, T, H, W) for V views, or a list of
    such tensors with the same B and V (the pathways of a SlowFast input), which the model gets
    as a list; returns (B, K) float32. The B * V views run through the model together, in
    chunks of at most ``max_clips`` clips when it is set (bounds activation memory, same
    result).
    """
    pathways = clips if isinstance(clips, list) else [clips]
    flat = [(p.unsqueeze(1) if p.dim() == 5 else p).flatten(0, 1) for p in pathways]
    batch = pathways[0].shape[0]
    total = flat[0].shape[0]
    step = max_clips or total
    logits = []
    for start in range(0, total, step):
        chunk = [p[start : start + step] for p in flat]
        logits.append(model(chunk if isinstance(clips, list) else chunk[0]).float())
    scores = torch.cat(logits)
    if softmax:
        scores = scores.softmax(dim=1)
    return scores.view(batch, total // batch, -1).mean(dim=1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    indices: list[int],
    device: torch.device,
    amp: str | None = None,
    softmax: bool = False,
    show_progress: bool = False,
    max_clips: int | None = None,
    device_transform: nn.Module | None = None,
) -> Predictions:
    """Scores of every video of ``loader``'s dataset, gathered from all ranks.

    ``loader`` is :func:`rnlvideo.engine.loaders.make_eval_loader`'s (batches ``(clips, labels,
    scored, messages)``) and ``indices`` the dataset indices it yields, in order (its sampler's
    list). Each rank scores its own shard; the shards are gathered and sorted by index, so the
    result is identical to a single-process run. Videos the dataset excluded
    (``on_error="exclude"``) go to ``Predictions.excluded`` with their error; if every video
    was excluded, :class:`VideoDataError` is raised. ``device_transform`` finishes deferred
    clips on the device (the dataset's attribute with ``data.device_transform=true``).
    """
    model.eval()
    scores, labels, scored_indices, excluded = [], [], [], {}
    position = 0
    for clips, batch_labels, scored, messages in tqdm(
        loader, desc="eval", disable=not show_progress, leave=False
    ):
        flags = scored.tolist()
        batch_indices = indices[position : position + len(flags)]
        position += len(flags)
        scored_indices += [i for i, keep in zip(batch_indices, flags, strict=True) if keep]
        left_out = [i for i, keep in zip(batch_indices, flags, strict=True) if not keep]
        excluded.update(zip(left_out, messages, strict=True))
        if clips is None:
            continue
        clips, batch_labels = to_model_input((clips, batch_labels), device, device_transform)
        with autocast_context(device, amp):
            scores.append(view_scores(model, clips, softmax, max_clips).cpu())
        labels.append(batch_labels.cpu())
    local = (
        torch.tensor(scored_indices, dtype=torch.long),
        torch.cat(scores) if scores else torch.empty(0),
        torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        excluded,
    )
    parts = all_gather_objects(local)
    for part in parts:
        excluded.update(part[3])
    gathered = [part for part in parts if part[0].numel()]
    if not gathered:
        first = excluded[min(excluded)] if excluded else "no videos"
        raise VideoDataError(
            f"all {len(excluded)} videos were excluded (eval.on_error=exclude); first: {first}"
        )
    all_indices = torch.cat([g[0] for g in gathered])
    order = all_indices.argsort()
    return Predictions(
        indices=all_indices[order],
        scores=torch.cat([g[1] for g in gathered])[order],
        labels=torch.cat([g[2] for g in gathered])[order],
        excluded=dict(sorted(excluded.items())),
    )


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    ctx: DistContext,
    batch_size: int,
    num_workers: int,
    amp: str | None = None,
    softmax: bool = False,
    max_clips: int | None = None,
) -> Predictions:
    """Scores of every video of ``dataset`` exactly once, sharded over the ranks of ``ctx``.

    ``batch_size`` counts videos: a forward pass sees ``batch_size * views`` clips (or chunks of
    ``max_clips``). Every rank returns the full, index-ordered result. Videos excluded by the
    dataset (``eval.on_error=exclude``) are logged by name on the main rank.
    """
    loader, indices = make_eval_loader(dataset, ctx.rank, ctx.world_size, batch_size, num_workers)
    preds = predict(
        model,
        loader,
        indices,
        ctx.device,
        amp=amp,
        softmax=softmax,
        show_progress=ctx.is_main and interactive(),
        max_clips=max_clips,
        device_transform=getattr(dataset, "device_transform", None),
    )
    covered = sorted(preds.indices.tolist() + list(preds.excluded))
    if covered != list(range(len(dataset))):
        raise RuntimeError("evaluation did not score or exclude every video exactly once")
    if preds.excluded and ctx.is_main:
        for message in preds.excluded.values():
            logger.warning("excluded from the metrics (eval.on_error=exclude): %s", message)
        logger.warning(
            "%d of %d videos excluded from the metrics (eval.on_error=exclude)",
            len(preds.excluded),
            len(dataset),
        )
    return preds


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    ctx: DistContext,
    batch_size: int,
    num_workers: int,
    amp: str | None = None,
    softmax: bool = False,
) -> dict[str, float]:
    """top-1 / top-5 / mean class accuracy of ``model`` over every video of ``dataset``.

    With excluded videos (``eval.on_error=exclude``) the metrics are over the scored ones
    (``num_videos``); ``num_excluded`` counts the others.
    """
    preds = predict_dataset(model, dataset, ctx, batch_size, num_workers, amp, softmax)
    return {
        **classification_metrics(preds.scores, preds.labels),
        "num_excluded": len(preds.excluded),
    }


def prediction_metrics(preds: Predictions, videos: Sequence[str]) -> dict[str, Any]:
    """The metrics of ``preds`` as ``metrics.json`` records them.

    top1 / top5 / mean_class_acc / num_videos over the scored videos, plus ``num_excluded``
    and ``excluded_videos`` (the excluded videos' names, ``videos[index]``, in dataset order).
    """
    return {
        **classification_metrics(preds.scores, preds.labels),
        "num_excluded": len(preds.excluded),
        "excluded_videos": [videos[index] for index in sorted(preds.excluded)],
    }


def average_predictions(members: Sequence[Predictions]) -> Predictions:
    """Ensemble: the per-video mean of several models' scores on the same video list.

    A video excluded by any member (each sees its own frames) is excluded from the ensemble.
    """
    excluded: dict[int, str] = {}
    for member in members:
        excluded.update(member.excluded)
    members = [_without(member, excluded) for member in members]
    first = members[0]
    for other in members[1:]:
        if not (
            torch.equal(other.indices, first.indices) and torch.equal(other.labels, first.labels)
        ):
            raise ValueError("ensemble members were evaluated on different videos or labels")
        if other.scores.shape != first.scores.shape:
            raise ValueError(
                f"ensemble members disagree on the number of classes: "
                f"{tuple(first.scores.shape)} vs {tuple(other.scores.shape)}"
            )
    scores = torch.stack([m.scores for m in members]).mean(dim=0)
    return Predictions(first.indices, scores, first.labels, dict(sorted(excluded.items())))


def _without(preds: Predictions, excluded: Mapping[int, str]) -> Predictions:
    """``preds`` restricted to the videos not in ``excluded``."""
    keep = torch.tensor([int(i) not in excluded for i in preds.indices.tolist()], dtype=torch.bool)
    return Predictions(preds.indices[keep], preds.scores[keep], preds.labels[keep], preds.excluded)


# ---------------------------------------------------------------------------------- testing
def _score(trained: TrainedModel, protocol: TestProtocol, ctx: DistContext) -> tuple:
    """``(Predictions, test dataset)`` of one model on its config's test split."""
    cfg = trained.cfg
    dataset = build_test_dataset(cfg, protocol, trained.trust_code)
    check_category_file(cfg)
    check_class_count(cfg.data.category_file, cfg.data.num_classes)
    if len(trained.class_names) != cfg.data.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.data.num_classes}: the model has "
            f"{len(trained.class_names)} class names"
        )
    home = next(trained.model.parameters()).device
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
    trained.model.to(home)
    return preds, dataset


def test_models(
    members: Sequence[TrainedModel],
    protocol: TestProtocol,
    ctx: DistContext,
    report_dir: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Test a model (or an ensemble, whose per-video scores are averaged) under ``protocol``.

    Each member scores the test split of its own config (``data.val``'s videos, its own
    frames: 8 and 16 segments can be ensembled), every video once over the ranks of ``ctx``.
    Returns the metrics: top1, top5, mean_class_acc, num_videos, num_excluded,
    excluded_videos, views, protocol (:meth:`TestProtocol.record`), softmax, checkpoints,
    list_file, for ensembles ``members`` (each member's own metrics), ``report_dir`` when given,
    and ``extra``. With ``report_dir`` rank 0 writes the report there
    (:func:`rnlvideo.engine.reports.write_evaluation_report`).
    """
    scored = [_score(member, protocol, ctx) for member in members]
    first, (_, dataset) = members[0], scored[0]
    videos = video_names(dataset)
    preds = average_predictions([member_preds for member_preds, _ in scored])
    metrics: dict[str, Any] = {
        **prediction_metrics(preds, videos),
        "views": f"{protocol.clips}x{protocol.crops}",
        "protocol": protocol.record(),
        "softmax": bool(first.cfg.eval.softmax),
        "checkpoints": [str(m.path) if m.path else None for m in members],
        "list_file": str(first.cfg.data.val.list_file),
    }
    if len(members) > 1:
        metrics["members"] = [
            {
                "checkpoint": str(member.path) if member.path else None,
                "num_segments": int(member.cfg.data.num_segments),
                "epoch": member.epoch,
                **prediction_metrics(member_preds, video_names(member_set)),
            }
            for member, (member_preds, member_set) in zip(members, scored, strict=True)
        ]
    metrics.update(extra or {})
    if report_dir is not None:
        metrics["report_dir"] = str(report_dir)
        if ctx.is_main:
            write_evaluation_report(
                report_dir,
                preds,
                metrics,
                first.class_names,
                videos,
                tag=f"test_{protocol.name}",
                step=first.epoch,
            )
    return metrics


test_models.__test__ = False  # a library function, not a pytest test
