"""Exact (every video once, whatever the world size) multi-view evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from rnlvideo.engine.distributed import DistContext, all_gather_objects
from rnlvideo.engine.loaders import make_eval_loader
from rnlvideo.engine.metrics import classification_metrics


@dataclass
class Predictions:
    """Per-video results in dataset order.

    ``scores`` (N, K) averaged over views, ``labels`` (N,), ``indices`` (N,) dataset indices.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def autocast_context(device: torch.device, amp: str | None):
    """``torch.autocast`` for ``amp`` in {None, 'bf16', 'fp16'}."""
    if amp is None:
        return nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"train.amp={amp!r}: expected null, 'bf16' or 'fp16'")
    return torch.autocast(device_type=device.type, dtype=dtypes[amp])


def view_scores(model: nn.Module, clips: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Scores of a batch, averaged over views.

    ``clips`` is (B, C, T, H, W) for one view or (B, V, C, T, H, W) for V views; returns (B, K).
    """
    if clips.dim() == 5:
        clips = clips.unsqueeze(1)
    batch, views = clips.shape[:2]
    logits = model(clips.flatten(0, 1)).float()
    if softmax:
        logits = logits.softmax(dim=1)
    return logits.view(batch, views, -1).mean(dim=1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    indices: list[int],
    device: torch.device,
    amp: str | None = None,
    softmax: bool = False,
    show_progress: bool = False,
) -> Predictions:
    """Scores of every video of ``loader``'s dataset, gathered from all ranks.

    ``indices`` are the dataset indices this rank's ``loader`` yields, in order (its sampler's
    list). Each rank scores its own shard; the shards are gathered and sorted by index, so the
    result is identical to a single-process run.
    """
    model.eval()
    scores, labels = [], []
    for clips, batch_labels in tqdm(loader, desc="eval", disable=not show_progress, leave=False):
        with autocast_context(device, amp):
            scores.append(view_scores(model, clips.to(device, non_blocking=True), softmax).cpu())
        labels.append(batch_labels)
    local = (
        torch.tensor(indices, dtype=torch.long),
        torch.cat(scores) if scores else torch.empty(0),
        torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
    )
    gathered = [part for part in all_gather_objects(local) if part[0].numel()]
    all_indices = torch.cat([g[0] for g in gathered])
    order = all_indices.argsort()
    return Predictions(
        indices=all_indices[order],
        scores=torch.cat([g[1] for g in gathered])[order],
        labels=torch.cat([g[2] for g in gathered])[order],
    )


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    ctx: DistContext,
    batch_size: int,
    num_workers: int,
    amp: str | None = None,
    softmax: bool = False,
) -> dict[str, float]:
    """top-1 / top-5 / mean class accuracy of ``model`` over every video of ``dataset``."""
    loader, indices = make_eval_loader(dataset, ctx.rank, ctx.world_size, batch_size, num_workers)
    preds = predict(
        model, loader, indices, ctx.device, amp=amp, softmax=softmax, show_progress=ctx.is_main
    )
    return classification_metrics(preds.scores, preds.labels)
