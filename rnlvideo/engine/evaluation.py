"""Exact multi-view evaluation (every video once, whatever the world size) and test protocols.

A test protocol is ``clips x crops`` views per video: ``clips`` temporal clips ("tsn_test" =
TSN segment centres; "twice" = centres then starts, both with TSM's test-mode formula for
every frame count; "dense_test" = evenly spaced 64-frame windows) times
``crops`` spatial crops (1 centre crop, or TSM's 3 "full-res" crops). The model scores every
view and the scores are averaged per video.

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
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from rnlvideo.config import ConfigError, check_dataset_on_disk, config_node, instantiate
from rnlvideo.data.device_transforms import to_model_input
from rnlvideo.data.frames import VideoDataError
from rnlvideo.data.sampling import clips_per_sample
from rnlvideo.data.transforms import Compose, three_crop_transform, val_transform
from rnlvideo.engine.distributed import DistContext, all_gather_objects
from rnlvideo.engine.loaders import make_eval_loader
from rnlvideo.engine.metrics import classification_metrics
from rnlvideo.engine.progress import interactive

logger = logging.getLogger(__name__)

TEST_SAMPLINGS = ("tsn_test", "twice", "dense_test", "tsn_val")
CROP_COUNTS = (1, 3)


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


# ------------------------------------------------------------------------------- protocols
def resolve_sampling(sampling: str, clips: int, val_sampling: str = "tsn_val") -> str:
    """The frame-sampling mode that yields ``clips`` clips per video.

    ``"auto"`` follows the data's validation sampling ``val_sampling``: dense data (Kinetics,
    ``dense_*``) keeps ``dense_test``; TSN-style data (Something-Something) gets ``tsn_test``
    for 1 clip, ``twice`` for 2 and ``dense_test`` for more. An explicit mode must give
    exactly ``clips`` clips; ``tsn_val`` (validation during training: frame 0 for every
    segment of a video with ``n <= T`` frames) reproduces the validation figures.
    """
    if sampling == "auto":
        tsn_modes = {1: "tsn_test", 2: "twice"}
        dense = val_sampling.startswith("dense")
        sampling = "dense_test" if dense else tsn_modes.get(clips, "dense_test")
    if sampling not in TEST_SAMPLINGS:
        raise ValueError(
            f"protocol.sampling={sampling!r}: expected 'auto' or one of {TEST_SAMPLINGS}"
        )
    if clips_per_sample(sampling, clips) != clips:
        raise ValueError(
            f"protocol.sampling={sampling!r} does not give protocol.clips={clips} clips"
        )
    return sampling


def protocol_crop_size(crops: int, input_size: int, scale_size: int, crop_size: int | None) -> int:
    """Side of the square test crops.

    ``crop_size`` if set, else ``input_size`` for one centre crop and ``scale_size`` for the
    three "full-res" crops.
    """
    if crops not in CROP_COUNTS:
        raise ValueError(f"protocol.crops={crops!r}: expected one of {CROP_COUNTS}")
    if crop_size is not None:
        return int(crop_size)
    return input_size if crops == 1 else scale_size


def protocol_transform(
    crops: int, input_size: int, scale_size: int, crop_size: int | None = None
) -> Compose:
    """Shorter side to ``scale_size``, then 1 centre crop or 3 full-res crops, normalised.

    ``(T, C, H, W)`` uint8 -> ``(T, C, S, S)`` (1 crop) or ``(3, T, C, S, S)`` (3 crops) float32,
    ``S = protocol_crop_size(...)``.
    """
    size = protocol_crop_size(crops, input_size, scale_size, crop_size)
    if crops == 1:
        return val_transform(input_size=size, scale_size=scale_size)
    return three_crop_transform(input_size=size, scale_size=scale_size)


def protocol_dataset(
    base: Mapping[str, Any],
    root: str,
    list_file: str,
    input_size: int,
    scale_size: int,
    clips: int = 1,
    crops: int = 1,
    sampling: str = "auto",
    crop_size: int | None = None,
    trust_code: bool = False,
) -> Dataset:
    """The test split under a ``clips x crops`` protocol (``protocol.*``).

    ``base`` is a plain dataset config node (``data.val``: ``_target_`` and keyword
    arguments); the dataset is built from it with ``root`` and ``list_file``, the protocol's
    sampling and ``num_clips``, and :func:`protocol_transform` instead of its own transform, so
    every dataset class (frame folders, video files) and option (``on_error``, ...) of the data
    config works. A test set never substitutes a video (``on_error='resample'`` is refused).
    ``dataset[i]`` is ``(C, T, S, S)`` for one view, else ``(clips * crops, C, T, S, S)``.
    """
    if base.get("on_error") == "resample":
        raise ConfigError("data.val.on_error='resample': a test set never substitutes a video")
    return instantiate(
        base,
        "data.val",
        trust_code,
        root=root,
        list_file=list_file,
        sampling=resolve_sampling(sampling, clips, base.get("sampling", "tsn_val")),
        num_clips=clips,
        transform=protocol_transform(crops, input_size, scale_size, crop_size),
    )


def describe_protocol(
    clips: int,
    crops: int,
    input_size: int,
    scale_size: int,
    sampling: str = "auto",
    crop_size: int | None = None,
    val_sampling: str = "tsn_val",
) -> dict[str, int | str]:
    """The protocol as recorded in evaluation outputs (arguments: ``protocol.*``).

    ``name`` is ``"<clips>x<crops>"``, suffixed with the sampling mode when it is not the
    automatic choice and with the crop size when it is set explicitly.
    """
    resolved = resolve_sampling(sampling, clips, val_sampling)
    name = f"{clips}x{crops}"
    if resolved != resolve_sampling("auto", clips, val_sampling):
        name += f"_{resolved}"
    if crop_size is not None:
        name += f"_{crop_size}px"
    return {
        "name": name,
        "clips": clips,
        "crops": crops,
        "views": clips * crops,
        "sampling": resolved,
        "scale_size": scale_size,
        "crop_size": protocol_crop_size(crops, input_size, scale_size, crop_size),
    }


def build_test_dataset(cfg: DictConfig, trust_code: bool = False) -> Dataset:
    """The test split of ``cfg``: ``data.val``'s videos under the protocol ``cfg.protocol``."""
    check_dataset_on_disk(cfg, "val")
    base = config_node(cfg, "data.val")
    protocol = cfg.protocol
    return protocol_dataset(
        base=base,
        root=base["root"],
        list_file=base["list_file"],
        input_size=cfg.data.input_size,
        scale_size=cfg.data.scale_size,
        clips=protocol.clips,
        crops=protocol.crops,
        sampling=protocol.sampling,
        crop_size=protocol.crop_size,
        trust_code=trust_code,
    )


def protocol_of(cfg: DictConfig) -> dict[str, int | str]:
    """:func:`describe_protocol` of ``cfg.protocol`` with ``cfg``'s data settings."""
    return describe_protocol(
        clips=cfg.protocol.clips,
        crops=cfg.protocol.crops,
        input_size=cfg.data.input_size,
        scale_size=cfg.data.scale_size,
        sampling=cfg.protocol.sampling,
        crop_size=cfg.protocol.crop_size,
        val_sampling=cfg.data.val.sampling,
    )


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
