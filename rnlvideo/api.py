"""The Python API: load a trained model, evaluate it under a protocol, classify one video.

    import rnlvideo
    model = rnlvideo.load_model("outputs/demo/last.pt")            # eval mode, .class_names
    metrics = rnlvideo.evaluate("outputs/demo/last.pt", protocol="2x3")
    top5 = rnlvideo.classify("outputs/demo/last.pt", "data/synthetic/frames/12")
    rnlvideo.export("outputs/demo/last.pt", "demo.onnx")           # checked, with metadata
    top5 = rnlvideo.classify("demo.onnx", "data/synthetic/frames/12")   # onnxruntime

Checkpoints are rebuilt from the config stored in them, validated first (see
:mod:`rnlvideo.engine.trained_model`); ``overrides`` change keys of that config with the
command line's ``key=value`` syntax. ``tools/test.py`` and ``tools/predict.py`` are thin
wrappers over :func:`evaluate` and :func:`classify`, ``tools/export.py`` over :func:`export`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from rnlvideo.analysis.classify import ClassScore, classify_video
from rnlvideo.config import apply_overrides, build_dataset, build_model, compose_config
from rnlvideo.deploy import (
    TOLERANCE,
    ExportedClassifier,
    ExportReport,
    classify_exported,
    export_model,
    metadata_for,
)
from rnlvideo.engine.distributed import cleanup_distributed, init_distributed
from rnlvideo.engine.evaluation import test_models
from rnlvideo.engine.protocols import TestProtocol, build_test_dataset
from rnlvideo.engine.trained_model import TrainedModel, load_trained_model
from rnlvideo.models.weights import read_state_dict

logger = logging.getLogger(__name__)

ModelSource = str | Path | nn.Module | TrainedModel


def load_model(checkpoint: str | Path, trust_code: bool = False) -> nn.Module:
    """The trained model of ``checkpoint``, in eval mode on the CPU.

    Built from the config stored in the file (validated; ``configs/`` is not read) with the
    file's weights (nothing is downloaded). The module carries ``class_names`` (one per
    output) and ``cfg`` (its validated config). ``trust_code``: see
    :func:`rnlvideo.engine.trained_model.load_trained_model`.
    """
    trained = load_trained_model(checkpoint, trust_code=trust_code)
    trained.model.cfg = trained.cfg
    trained.model.class_names = trained.class_names
    return trained.model


def _as_trained(
    source: ModelSource, protocol: str | None, overrides: Sequence[str], trust_code: bool
) -> TrainedModel:
    if not isinstance(source, TrainedModel | nn.Module):
        return load_trained_model(source, overrides, trust_code, protocol)
    if isinstance(source, TrainedModel):
        cfg, names, path, epoch = source.cfg, source.class_names, source.path, source.epoch
        model = source.model
    else:
        cfg = getattr(source, "cfg", None)
        if cfg is None:
            raise TypeError(
                "a bare nn.Module has no data config: pass a checkpoint path or a model from "
                "rnlvideo.load_model"
            )
        count = cfg.data.num_classes
        names = [str(n) for n in getattr(source, "class_names", None) or range(count)]
        path, epoch, model = None, 0, source
    if overrides or protocol:
        cfg = apply_overrides(cfg, overrides, trust_code, protocol)
    return TrainedModel(path, cfg, model, epoch, names, trust_code)


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
            ``eval.batch_size=4``, ``protocol.clips=1``), applied after ``protocol``.
        out_dir: where the report goes (default ``<checkpoint dir>/eval_<stem>_<protocol>``).
        report: write the report files (``rnlvideo/engine/reports.py``) on rank 0.
        trust_code: see :func:`load_model`.

    Returns:
        The metrics of :func:`rnlvideo.engine.evaluation.test_models` (as written to
        ``metrics.json``). Under torchrun every rank scores its share and every rank returns
        the metrics.
    """
    sources = (
        list(checkpoint_or_model)
        if isinstance(checkpoint_or_model, list | tuple)
        else [checkpoint_or_model]
    )
    members = [_as_trained(source, protocol, overrides, trust_code) for source in sources]
    protocols = [TestProtocol.of(m.cfg) for m in members]
    if any(p != protocols[0] for p in protocols):
        raise ValueError(f"ensemble members use different protocols: {protocols}")
    target = Path(out_dir) if out_dir else default_report_dir(members, protocols[0].name)
    owns_process_group = not torch.distributed.is_initialized()
    ctx = init_distributed(members[0].cfg.train.device)
    try:
        return test_models(members, protocols[0], ctx, report_dir=target if report else None)
    finally:
        if owns_process_group:
            cleanup_distributed()


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
        checkpoint_or_model: a checkpoint path or a model from :func:`load_model`; or an
            exported ONNX file (``.onnx``, run with onnxruntime; sampled and transformed as the
            checkpoint it came from, from its metadata).
        video: a video file (decoded by ``data.video_backend``, e.g.
            ``overrides=["data.video_backend=pyav"]``), a folder of JPEG frames (sorted by
            name), a packed frame file (``.pack``) or the video's frames as a uint8 tensor
            ``(num_frames, 3, H, W)``.
        topk: how many classes to return.
        protocol: the views averaged (default: the stored protocol, ``1x1``: one clip, centre
            crop); ``"2x3"`` averages the paper's 6 views.
        overrides, trust_code: as for :func:`evaluate` (an ONNX file takes only
            ``protocol.*`` and ``data.video_backend`` overrides).

    Returns:
        :class:`ClassScore` entries (index, name, probability).
    """
    if isinstance(checkpoint_or_model, ExportedClassifier) or (
        isinstance(checkpoint_or_model, str | Path) and Path(checkpoint_or_model).suffix == ".onnx"
    ):
        return classify_exported(checkpoint_or_model, video, topk, protocol, overrides)[0]
    trained = _as_trained(checkpoint_or_model, protocol, overrides, trust_code)
    ranked, _ = classify_video(trained, video, topk=topk)
    return ranked


def export(
    checkpoint_or_model: ModelSource,
    path: str | Path,
    format: str | None = None,
    protocol: str | None = None,
    overrides: Sequence[str] = (),
    trust_code: bool = False,
    tolerance: float = TOLERANCE,
    locate: bool = True,
) -> ExportReport:
    """Export a trained model to ONNX or torch.export, checked against the eager model.

    The checkpoint is loaded as by :func:`load_model` (its stored config validated, nothing run
    from the file). The file takes clips ``(N, 3, T, H, W)`` of any batch size ``N`` and holds
    the metadata a runtime needs (:class:`rnlvideo.deploy.ExportMetadata`). Before it is written,
    it is loaded back and run at batch 1 and 3 (onnxruntime / ``torch.export.load``) on the same
    clips as the eager model; a logit differing by more than the bound of
    :class:`rnlvideo.deploy.checks.Comparison` refuses the file.

    Args:
        checkpoint_or_model: a checkpoint path or a model from :func:`load_model`.
        path: the file to write (``.onnx`` or ``.pt2``).
        format: ``"onnx"`` or ``"torch_export"`` (None: from ``path``'s suffix).
        protocol: the test protocol stored for the runtime (None: the checkpoint's).
        overrides, trust_code: as for :func:`evaluate`.
        tolerance: the largest logit difference accepted (see
            :class:`rnlvideo.deploy.checks.Comparison`).
        locate: when the export fails, export and check the model's parts one by one to name
            the one that fails (minutes for a ResNet-50 in ONNX).

    Returns:
        The :class:`rnlvideo.deploy.ExportReport` (the measured differences per batch size).

    Raises:
        ExportError: the model does not export exactly; nothing is written, the message names
            the part that fails.
    """
    trained = _as_trained(checkpoint_or_model, protocol, overrides, trust_code)
    return export_model(
        trained.model,
        path,
        format,
        metadata_for(trained.cfg, trained.class_names),
        slowfast_alpha=trained.cfg.data.get("slowfast_alpha"),
        tolerance=tolerance,
        locate=locate,
    )


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
        model.load_state_dict(read_state_dict(checkpoint, "checkpoint"))
    return model


def build_dataset_from_config(
    overrides: Sequence[str] = (), split: str = "val", trust_code: bool = False
) -> Dataset:
    """The dataset of ``split`` (``train``, ``val`` or ``test``) that training would build."""
    cfg = compose_config(overrides, trust_code=trust_code)
    if split == "test":
        return build_test_dataset(cfg, trust_code=trust_code)
    return build_dataset(cfg, split, trust_code=trust_code)
