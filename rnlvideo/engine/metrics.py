"""Classification metrics over whole evaluation sets."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k.

    ``logits`` (N, K), ``labels`` (N,). A k above the number of classes counts every sample.
    """
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(labels[:, None])
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Recall of each class (NaN for classes absent from the set)."""
    totals = confusion.sum(dim=1).double()
    return confusion.diag().double() / totals


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1 / top-5 / mean class accuracy in percent, over every sample once.

    ``logits`` (N, K) already averaged over views; ``labels`` (N,).
    """
    num_classes = logits.shape[1]
    top1, top5 = topk_correct(logits, labels, (1, 5))
    confusion = confusion_matrix(logits.argmax(dim=1), labels, num_classes)
    class_acc = per_class_accuracy(confusion)
    present = ~class_acc.isnan()
    n = max(1, labels.numel())
    return {
        "top1": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n,
        "mean_class_acc": 100.0 * float(class_acc[present].mean()) if present.any() else 0.0,
        "num_videos": int(labels.numel()),
    }
