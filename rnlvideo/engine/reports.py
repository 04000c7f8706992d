"""Evaluation outputs: metrics JSON, per-class and confusion CSVs, confusion PNG, predictions.

Files written by :func:`write_evaluation_report` into its output directory:

- ``metrics.json``: the metrics dict (top1, top5, mean_class_acc, num_videos, protocol, ...;
  with ``eval.on_error=exclude`` also ``num_excluded`` and ``excluded_videos``, the videos left
  out of the metrics: ``num_videos`` counts the scored ones);
- ``per_class_accuracy.csv``: ``class_index, class_name, num_videos, correct, accuracy``
  (accuracy in percent, empty for classes without videos), one row per class;
- ``confusion_matrix.csv``: header ``true\\predicted, 0, ..., K-1``, then one row of counts per
  true class; the counts sum to the number of videos;
- ``confusion_matrix.png``: the row-normalised confusion matrix;
- ``predictions.csv``: one row per video: ``index, video, label, label_name, correct`` and the
  top-5 ``pred_i`` (class index) / ``score_i`` columns, best first;
- ``excluded_videos.csv``: ``index, video, error`` of every video left out of the metrics
  (header only when none was);
- ``scores.pt``: ``{"indices", "labels", "scores"}`` tensors (scores ``(N, K)``), e.g. to
  ensemble offline;
- ``tb/``: TensorBoard scalars ``test_<protocol>/{top1,top5,mean_class_acc}``, the confusion
  image and the metrics as text.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from rnlvideo.engine.metrics import confusion_matrix
from rnlvideo.files import write_text_atomic
from rnlvideo.text import csv_text, printable

if TYPE_CHECKING:
    from rnlvideo.engine.evaluation import Predictions

logger = logging.getLogger(__name__)

TOP_K = 5
CONFUSION_FIGURE_INCHES = 10
CONFUSION_DPI = 100
# Tick labels are drawn only when they stay readable.
MAX_LABELLED_CLASSES = 40
MAX_NAME_CHARS = 48


def video_names(dataset: Any) -> list[str]:
    """Each video's folder (its list-file path), or its index for datasets without records."""
    records = getattr(dataset, "records", None)
    if records is None:
        return [str(i) for i in range(len(dataset))]
    return [record.path for record in records]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def write_per_class_csv(path: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> None:
    """One row per class: index, name, videos, correct, accuracy in percent (blank if none)."""
    totals = confusion.sum(dim=1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "class_name", "num_videos", "correct", "accuracy"])
        for k, name in enumerate(class_names):
            total, correct = int(totals[k]), int(confusion[k, k])
            accuracy = f"{100.0 * correct / total:.4f}" if total else ""
            writer.writerow([k, csv_text(name), total, correct, accuracy])


def write_confusion_csv(path: Path, confusion: torch.Tensor) -> None:
    """The ``(K, K)`` counts, rows = true class, columns = predicted class, with index headers."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *range(confusion.shape[1])])
        for k, row in enumerate(confusion.tolist()):
            writer.writerow([k, *row])


def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """The row-normalised confusion matrix as a ``CONFUSION_FIGURE_INCHES``-inch square figure."""
    totals = confusion.sum(dim=1, keepdim=True).clamp(min=1)
    rates = (confusion.double() / totals).numpy()
    size = CONFUSION_FIGURE_INCHES
    # The object-oriented API (no pyplot): no global figure registry, no GUI backend.
    fig = Figure(figsize=(size, size), dpi=CONFUSION_DPI)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    # Names come from files: drawn as plain text (no mathtext), control characters escaped.
    ax.set_title(printable(title), parse_math=False)
    labelled = len(class_names) <= MAX_LABELLED_CLASSES
    if labelled:
        ticks = range(len(class_names))
        ax.set_xticks(ticks, [str(k) for k in ticks])
        names = [f"{printable(name[:MAX_NAME_CHARS])} ({k})" for k, name in enumerate(class_names)]
        ax.set_yticks(ticks, names, fontsize=7, parse_math=False)
    fig.subplots_adjust(left=0.34 if labelled else 0.08, right=0.95, bottom=0.08, top=0.94)
    return fig


def write_predictions_csv(
    path: Path, preds: Predictions, videos: Sequence[str], class_names: Sequence[str]
) -> None:
    """One row per video: index, video, label, label name, top-1 correct, top-5 classes/scores."""
    k = min(TOP_K, preds.scores.shape[1])
    top = preds.scores.topk(k, dim=1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["index", "video", "label", "label_name", "correct"]
        header += [f"pred_{i + 1}" for i in range(k)] + [f"score_{i + 1}" for i in range(k)]
        writer.writerow(header)
        for row, index in enumerate(preds.indices.tolist()):
            label = int(preds.labels[row])
            classes = top.indices[row].tolist()
            scores = [f"{s:.6g}" for s in top.values[row].tolist()]
            correct = int(classes[0] == label)
            writer.writerow(
                [
                    index,
                    csv_text(videos[index]),
                    label,
                    csv_text(class_names[label]),
                    correct,
                    *classes,
                    *scores,
                ]
            )


def write_excluded_csv(path: Path, preds: Predictions, videos: Sequence[str]) -> None:
    """One row per video left out of the metrics: dataset index, video, error message."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "video", "error"])
        for index, message in sorted(preds.excluded.items()):
            writer.writerow([index, csv_text(videos[index]), csv_text(message)])


def log_tensorboard(
    tb_dir: Path, tag: str, metrics: dict[str, Any], figure: Figure, step: int
) -> None:
    """Scalars ``<tag>/{top1,top5,mean_class_acc}``, the confusion figure and the metrics text."""
    with SummaryWriter(tb_dir) as writer:
        for key in ("top1", "top5", "mean_class_acc"):
            writer.add_scalar(f"{tag}/{key}", metrics[key], step)
        writer.add_figure(f"{tag}/confusion", figure, step, close=False)
        writer.add_text(f"{tag}/metrics", f"```\n{json.dumps(metrics, indent=2)}\n```", step)


def write_evaluation_report(
    out_dir: str | Path,
    preds: Predictions,
    metrics: dict[str, Any],
    class_names: Sequence[str],
    videos: Sequence[str],
    tag: str = "test",
    step: int = 0,
) -> dict[str, Path]:
    """Write every evaluation output (see the module docstring) into ``out_dir``.

    ``preds`` holds the ``N`` videos' view-averaged scores ``(N, K)``; ``class_names`` has ``K``
    names and ``videos`` a name per dataset index. Returns the written paths by kind. Text cells
    from files (class names, videos, errors) are neutralised against spreadsheet formulas.
    """
    num_classes = preds.scores.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} scored classes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confusion = confusion_matrix(preds.scores.argmax(dim=1), preds.labels, num_classes)
    paths = {
        "metrics": out / "metrics.json",
        "per_class": out / "per_class_accuracy.csv",
        "confusion_csv": out / "confusion_matrix.csv",
        "confusion_png": out / "confusion_matrix.png",
        "predictions": out / "predictions.csv",
        "excluded": out / "excluded_videos.csv",
        "scores": out / "scores.pt",
        "tensorboard": out / "tb",
    }
    write_json(paths["metrics"], metrics)
    write_per_class_csv(paths["per_class"], confusion, class_names)
    write_confusion_csv(paths["confusion_csv"], confusion)
    write_predictions_csv(paths["predictions"], preds, videos, class_names)
    write_excluded_csv(paths["excluded"], preds, videos)
    torch.save(
        {"indices": preds.indices, "labels": preds.labels, "scores": preds.scores}, paths["scores"]
    )
    title = f"{tag}: top-1 {metrics['top1']:.2f} %, {metrics['num_videos']} videos"
    figure = confusion_figure(confusion, class_names, title)
    figure.savefig(paths["confusion_png"])
    log_tensorboard(paths["tensorboard"], tag, metrics, figure, step)
    return paths
