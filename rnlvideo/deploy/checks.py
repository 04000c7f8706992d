"""Checking an export against the eager model, and finding the part of a model that fails.

An exported model is run on the same clips as the eager model (fp32, CPU, eval mode) and its
outputs compared: no output may differ by more than ``TOLERANCE * max(1, largest |eager
output|)`` (:class:`Comparison`): 1e-4 absolute for logits within +-1, 1e-4 relative to the
largest logit beyond. The bound scales with the logits because fp32 itself does: an eager fp32
model is off from its exact (fp64) logits by about 1e-5 of their size, and two correct fp32
implementations (PyTorch's kernels and onnxruntime's) differ from each other by as much.

Some models are less exact than that in fp32 (an unscaled non-local attention whose softmax
is nearly one-hot magnifies rounding: NL-TSM-R50's fp32 logits can be 1e-3 of their size away
from the fp64 ones). An export that misses the bound is then measured against the model run in
fp64 too, and accepted when it is no further from those exact logits than
:data:`FP32_MARGIN` times the eager fp32 model is: as exact as the model itself can be in fp32.

When a model does not export or does not match, the model's parts are exported and checked on
their own, outermost first and in the order the forward pass calls them, descending into the
first part that fails, to name the innermost part that fails by itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim
from torch.utils._pytree import tree_map

from rnlvideo.deploy.formats import OnnxFormat, Runner, TorchExportFormat, capture, flat_tensors

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest |logit difference| between an export and eager, per max(1, |logit|)
EXAMPLE_BATCH = 2  # the batch size the graph is captured at (not 1, which torch would specialise)
CHECK_BATCHES = (1, 3)  # the batch sizes an export is run at; neither is the captured one
FP32_MARGIN = 2.0  # an export may be this many times eager fp32's distance from the fp64 logits
_MAX_SUMMARY = 500


def check_clips(shape: Callable[[int], tuple[int, ...]], batch: int, seed: int = 0) -> Tensor:
    """``batch`` reproducible clips of ``shape(batch)``: normal noise, the scale of normalised
    frames. Clip ``i`` is the same whatever ``batch``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape(batch), generator=generator)


def error_summary(error: BaseException) -> str:
    """The exception's type and first line, and the user code that raised it, when torch says."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    summary = f"{type(error).__name__}: {lines[0] if lines else ''}"[:_MAX_SUMMARY]
    marker = "The following call raised this error:"
    if marker in lines and lines.index(marker) + 2 < len(lines):
        at = lines.index(marker)
        summary += f" (at {lines[at + 1]}: {lines[at + 2]})"
    return summary


@dataclass(frozen=True)
class Comparison:
    """An export's outputs against the eager model's for one batch.

    ``difference``: the largest absolute difference (``inf`` for another shape or a non-finite
    value); ``scale``: the largest absolute eager output. When the model was also run in fp64:
    ``exact_difference``, the export's largest absolute difference from those outputs, and
    ``eager_error``, the eager fp32 model's.
    """

    batch: int
    difference: float
    scale: float
    exact_difference: float | None = None
    eager_error: float | None = None

    def allowed(self, tolerance: float) -> float:
        """The largest difference accepted: ``tolerance * max(1, scale)``."""
        return tolerance * max(1.0, self.scale)

    def within(self, tolerance: float) -> bool:
        """Within :meth:`allowed` of eager, or (measured in fp64) as exact as eager fp32."""
        if self.difference <= self.allowed(tolerance):
            return True
        if self.exact_difference is None or self.eager_error is None:
            return False
        return self.exact_difference <= FP32_MARGIN * self.eager_error

    def describe(self, tolerance: float) -> str:
        text = (
            f"batch {self.batch}: largest |logit difference| {self.difference:.3g} (largest "
            f"|logit| {self.scale:.3g}, allowed {self.allowed(tolerance):.3g})"
        )
        if self.exact_difference is not None:
            text += (
                f"; from the fp64 logits: export {self.exact_difference:.3g}, eager fp32 "
                f"{self.eager_error:.3g} (allowed {FP32_MARGIN:g}x)"
            )
        return text


def _largest_difference(got: list[Tensor], expected: list[Tensor]) -> float:
    if [g.shape for g in got] != [e.shape for e in expected]:
        return math.inf
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if g.numel():
            difference = (g.double() - e.double()).abs().max().item()
            worst = max(worst, difference if math.isfinite(difference) else math.inf)
    return worst


def compare(
    runner: Runner, module: nn.Module, args: tuple[Any, ...], exact: nn.Module | None = None
) -> Comparison:
    """``runner(args)`` against ``module(*args)`` over every output; with ``exact`` (the same
    model in fp64) also both against ``exact`` run on ``args`` in fp64."""
    with torch.no_grad():
        expected = flat_tensors(module(*args))
    got = runner(flat_tensors(args))
    batch = flat_tensors(args)[0].shape[0]
    scale = max((e.abs().max().item() for e in expected if e.numel()), default=0.0)
    difference = _largest_difference(got, expected)
    if exact is None:
        return Comparison(batch, difference, scale)
    as_double = tree_map(lambda x: x.double() if isinstance(x, Tensor) else x, args)
    with torch.no_grad():
        reference = flat_tensors(exact(*as_double))
    return Comparison(
        batch,
        difference,
        scale,
        exact_difference=_largest_difference(got, reference),
        eager_error=_largest_difference(expected, reference),
    )


def outermost_calls(
    model: nn.Module, scope: nn.Module, runs: Sequence[tuple[Any, ...]]
) -> dict[str, list[tuple[Any, ...]]]:
    """The modules under ``scope`` that ``model`` calls while no other module under ``scope``
    runs (``scope``'s outermost parts, not always its children: a model may call its
    backbone's layers one by one), in call order, with the positional arguments of each one's
    first call in each of ``runs`` (``model(*run)``). Parts called with keyword arguments, or
    not in every run, are left out.
    """
    names = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    calls: dict[str, list[tuple[Any, ...]]] = {}
    skipped: set[str] = set()
    depth = 0
    recorded: set[str] = set()

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        nonlocal depth
        name = names[id(module)]
        if depth == 0 and name not in recorded:
            recorded.add(name)
            if kwargs:
                skipped.add(name)
            else:
                copy = tree_map(lambda x: x.detach().clone() if isinstance(x, Tensor) else x, args)
                calls.setdefault(name, []).append(copy)
        depth += 1

    def after(*_: Any) -> None:
        nonlocal depth
        depth -= 1

    handles = []
    for module in scope.modules():
        if module is not scope and id(module) in names:
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after))
    try:
        with torch.no_grad():
            for run in runs:
                recorded.clear()
                depth = 0
                model(*run)
    finally:
        for handle in handles:
            handle.remove()
    return {n: a for n, a in calls.items() if n not in skipped and len(a) == len(runs)}


def part_failure(
    export_format: OnnxFormat | TorchExportFormat,
    module: nn.Module,
    runs: Sequence[tuple[Any, ...]],
    tolerance: float = TOLERANCE,
) -> str | None:
    """Why ``module`` alone does not export exactly, or None when it does.

    ``runs[0]`` are its arguments to capture it at (batch axes dynamic, ``Dim.AUTO``); the
    export is run on every other run's arguments and compared with ``module``
    (:meth:`Comparison.within`).
    """
    try:
        program = capture(module, runs[0], batch=Dim.AUTO)
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        return f"torch.export could not capture it ({error_summary(error)})"
    try:
        runner = export_format.runner(export_format.convert(program, runs[0]))
    except Exception as error:  # noqa: BLE001
        return f"the {export_format.name} conversion failed ({error_summary(error)})"
    for args in runs[1:]:
        try:
            comparison = compare(runner, module, args)
        except Exception as error:  # noqa: BLE001
            return f"running the export failed ({error_summary(error)})"
        if not comparison.within(tolerance):
            return (
                f"its export differs from eager by {comparison.difference:.3g} (largest |output| "
                f"{comparison.scale:.3g}) for an input of batch axis {comparison.batch}"
            )
    return None


def locate_failure(
    model: nn.Module,
    runs: Sequence[tuple[Any, ...]],
    fails: Callable[[nn.Module, Sequence[tuple[Any, ...]]], str | None],
) -> tuple[str, str] | None:
    """``(qualified name, reason)`` of the innermost part of ``model`` that fails by itself.

    Walks down from the model: among the outermost parts of the current module
    (:func:`outermost_calls`, in call order), the first one for which ``fails(part, runs of
    that part)`` gives a reason becomes the current module. None when no part fails alone.
    """
    found: tuple[str, str] | None = None
    scope = model
    while True:
        for name, part_runs in outermost_calls(model, scope, runs).items():
            part = model.get_submodule(name)
            logger.info("checking part %s (%s) on its own", name, type(part).__name__)
            reason = fails(part, part_runs)
            if reason is not None:
                found, scope = (name, reason), part
                break
        else:
            return found
