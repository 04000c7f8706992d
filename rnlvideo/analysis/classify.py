"""Classify one video with a trained model: the top-k classes with their probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rnlvideo.analysis.single_video import config_views
from rnlvideo.data.pathways import with_pathways
from rnlvideo.engine.distributed import resolve_device
from rnlvideo.engine.evaluation import view_scores
from rnlvideo.engine.trained_model import TrainedModel


@dataclass(frozen=True)
class ClassScore:
    """A class of the model (index, name) and its probability."""

    index: int
    name: str
    probability: float


@torch.no_grad()
def classify_video(
    trained: TrainedModel, video: str | Path | torch.Tensor, topk: int = 5
) -> tuple[list[ClassScore], int]:
    """The ``topk`` most probable classes of ``video`` and the number of views.

    ``video``: a frame folder, a packed frame file, a video file (decoded by the config's
    ``data.video_backend``) or uint8 frames ``(num_frames, 3, H, W)``.

    The video is sampled and cropped by the config's test protocol (``protocol=1x1`` by
    default: one clip, centre crop). Probabilities are the softmax of the view-averaged logits,
    or the averaged softmax with ``eval.softmax=true``.
    """
    cfg, model = trained.cfg, trained.model
    device = resolve_device(cfg.train.device)
    views = config_views(video, cfg)  # (V, C, T, H, W)
    clips = with_pathways(views.unsqueeze(0), cfg.data.get("slowfast_alpha"))
    clips = [c.to(device) for c in clips] if isinstance(clips, list) else clips.to(device)
    model.eval().to(device)
    ranked = rank_classes(model, clips, trained.class_names, topk, cfg.eval.softmax)
    return ranked, views.shape[0]


@torch.no_grad()
def rank_classes(
    model: Callable[..., torch.Tensor],
    clips: torch.Tensor | list[torch.Tensor],
    names: Sequence[str],
    topk: int,
    softmax: bool,
) -> list[ClassScore]:
    """The ``topk`` most probable classes of one video's views, best first.

    ``clips``: ``(1, V, C, T, H, W)`` (or SlowFast's pair of them); ``model``: any callable from
    clips to logits. ``softmax``: average the views' probabilities instead of their logits.
    """
    scores = view_scores(model, clips, softmax)[0].cpu()
    probabilities = scores if softmax else scores.softmax(dim=0)
    top = probabilities.topk(min(topk, scores.numel()))
    return [
        ClassScore(index, names[index], probability)
        for index, probability in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]
