"""Export a model to a file, checked against the eager model before the file is written.

The model is captured once with a dynamic batch axis (:func:`rnlvideo.deploy.formats.capture`),
converted to the format, written to a temporary file beside the target with its metadata, and
loaded back and run at batch 1 and batch 3 (onnxruntime for ONNX, ``torch.export.load`` for
``.pt2``) on the same clips as the eager model. Only when every logit is within the tolerance
(:class:`rnlvideo.deploy.checks.Comparison`) is the file renamed to its name; otherwise nothing
is written and :class:`ExportError` names the part that fails
(:func:`rnlvideo.deploy.checks.locate_failure`).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnlvideo.data.pathways import slowfast_pathways
from rnlvideo.deploy.checks import (
    CHECK_BATCHES,
    EXAMPLE_BATCH,
    FP32_MARGIN,
    TOLERANCE,
    Comparison,
    check_clips,
    compare,
    error_summary,
    locate_failure,
    part_failure,
)
from rnlvideo.deploy.formats import (
    DEPLOY_INSTALL_HINT,
    ExportError,
    Runner,
    capture,
    format_for,
    missing_modules,
)
from rnlvideo.deploy.metadata import ExportMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and measured.

    ``comparisons``: the file's logits against the eager model's, one per batch size checked;
    ``runtime``: what ran the file.
    """

    path: Path
    format: str
    runtime: str
    comparisons: list[Comparison]
    tolerance: float
    metadata: ExportMetadata
    seconds: float

    @property
    def differences(self) -> dict[int, float]:
        """The largest absolute logit difference per batch size."""
        return {c.batch: c.difference for c in self.comparisons}


class SingleClipInput(nn.Module):
    """A two-pathway (SlowFast) model fed one clip ``(N, 3, T, H, W)``: its ``[slow, fast]``
    input is made inside the graph, exactly as the data option ``data.slowfast_alpha`` makes it
    (:func:`rnlvideo.data.pathways.slowfast_pathways`). Output: the model's."""

    def __init__(self, model: nn.Module, slowfast_alpha: int) -> None:
        super().__init__()
        self.model = model
        self.slowfast_alpha = slowfast_alpha

    def forward(self, clips: Tensor) -> Tensor:
        return self.model(slowfast_pathways(clips, self.slowfast_alpha))


def deployable(model: nn.Module, slowfast_alpha: int | None = None) -> nn.Module:
    """A copy of ``model`` on the CPU in eval mode, taking one clip ``(N, 3, T, H, W)``."""
    module = copy.deepcopy(model).cpu().eval()
    return SingleClipInput(module, slowfast_alpha).eval() if slowfast_alpha else module


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str | None,
    metadata: ExportMetadata,
    slowfast_alpha: int | None = None,
    tolerance: float = TOLERANCE,
    locate: bool = True,
) -> ExportReport:
    """Export ``model`` to ``path``, check it against the eager model, then write the file.

    Args:
        model: takes ``(N, 3, T, H, W)`` clips (``[slow, fast]`` with ``slowfast_alpha``) and
            returns ``(N, len(metadata.class_names))`` logits; it is copied, not changed.
        path: the file to write; an existing file is replaced only by a checked export.
        format: ``"onnx"`` or ``"torch_export"``; None: from ``path``'s suffix.
        metadata: what the file says about itself (:func:`rnlvideo.deploy.metadata.metadata_for`).
        slowfast_alpha: the model takes SlowFast's ``[slow, fast]`` pair; the file takes one clip.
        tolerance: a logit may differ by ``tolerance * max(1, largest |eager logit|)``.
        locate: when the export fails, check the model's parts one by one to name the one that
            fails (slow for big models).

    Raises:
        ExportError: the model cannot be exported or its export does not match; the file is
            not written.
        ImportError: the format's packages are not installed (the message says how).
    """
    started = time.perf_counter()
    path = Path(path)
    export_format = format_for(format, path)
    missing = missing_modules(export_format.requires)
    if missing:
        raise ImportError(
            f"format={export_format.name} needs {', '.join(missing)}: {DEPLOY_INSTALL_HINT}"
        )
    module = deployable(model, slowfast_alpha)
    clips = check_clips(metadata.input_shape, max(EXAMPLE_BATCH, *CHECK_BATCHES))
    runs = {batch: (clips[:batch],) for batch in (EXAMPLE_BATCH, *CHECK_BATCHES)}
    # A part is checked at a batch above the captured one only: its batch axis may be a multiple
    # of the clips' (N*T frames), which torch.export, left to infer it, keeps above N = 1.
    part_runs = [runs[EXAMPLE_BATCH], runs[max(CHECK_BATCHES)]]
    what = f"{export_format.name} export of {metadata.model_name}"

    def failure(message: str) -> ExportError:
        if not locate:
            return ExportError(f"{what}: {message}", part=None)
        logger.info("%s: %s; locating the part that fails", what, message)
        found = locate_failure(
            module, part_runs, lambda part, r: part_failure(export_format, part, r, tolerance)
        )
        if found is None:
            return ExportError(
                f"{what}: {message}. No part of the model fails on its own: the difference "
                f"builds up across the parts",
                part="",
            )
        name, reason = found
        kind = type(module.get_submodule(name)).__name__
        return ExportError(
            f"{what}: {message}. The part that fails: {name} ({kind}): {reason}", part=name
        )

    _check_output_shape(module, runs[1][0], metadata)
    try:
        program = capture(module, runs[EXAMPLE_BATCH])
    except Exception as error:  # noqa: BLE001 - reported with the part that fails
        reason = f"torch.export could not capture the model ({error_summary(error)})"
        raise failure(reason) from error
    try:
        converted = export_format.convert(
            program, runs[EXAMPLE_BATCH], [metadata.input_name], [metadata.output_name]
        )
    except Exception as error:  # noqa: BLE001
        raise failure(
            f"the {export_format.name} conversion failed ({error_summary(error)})"
        ) from error

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        export_format.save(converted, partial, metadata)
        try:
            runner = export_format.load(partial)
            comparisons = [compare(runner, module, runs[b]) for b in CHECK_BATCHES]
        except Exception as error:  # noqa: BLE001
            reason = f"{export_format.runtime} could not run the file ({error_summary(error)})"
            raise failure(reason) from error
        if not all(c.within(tolerance) for c in comparisons):
            comparisons = _against_fp64(runner, module, runs, comparisons)
        measured = "; ".join(c.describe(tolerance) for c in comparisons)
        if not all(c.within(tolerance) for c in comparisons):
            error = failure(
                f"the exported model's logits differ from the eager model's: {measured} "
                f"(tolerance {tolerance:g} x max(1, |logit|), or at most {FP32_MARGIN:g}x eager "
                f"fp32's distance from the fp64 logits); the file was not written"
            )
            error.comparisons = comparisons
            raise error
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("%s: %s; wrote %s", what, measured, path)
    return ExportReport(
        path=path,
        format=export_format.name,
        runtime=export_format.runtime,
        comparisons=comparisons,
        tolerance=tolerance,
        metadata=metadata,
        seconds=time.perf_counter() - started,
    )


def _against_fp64(
    runner: Runner, module: nn.Module, runs: dict[int, tuple[Tensor]], plain: list[Comparison]
) -> list[Comparison]:
    """The comparisons again, with the model also run in fp64: how exact fp32 can be for it.

    ``plain`` when the model does not run in fp64 (the export is then held to the bound alone).
    """
    try:
        exact = copy.deepcopy(module).double()
        return [compare(runner, module, runs[b], exact) for b in CHECK_BATCHES]
    except (RuntimeError, TypeError) as error:
        logger.info("the model does not run in fp64 (%s): no fp64 comparison", error)
        return plain


def _check_output_shape(module: nn.Module, clips: Tensor, metadata: ExportMetadata) -> None:
    with torch.no_grad():
        output: Any = module(clips)
    expected = (clips.shape[0], metadata.num_classes)
    if not isinstance(output, Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ExportError(
            f"the model's output for clips {tuple(clips.shape)} is {shape}, expected logits "
            f"{expected} (one per class name)",
            part="",
        )
