"""What mixed precision does to a model: logits, one step's gradient and attention rows.

Each :class:`PrecisionSetting` runs a copy of the model in a precision (float64, float32, or
float32 weights under bf16 / fp16 autocast, with the RNL / NL blocks' ``attention_precision``);
the results are compared with the float64 run, the reference. Used by ``tools/benchmark_amp.py``
(trained checkpoints on the CPU) and ``tools/gpu_check.py`` (on the GPU).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnlvideo.analysis.attention import attention_blocks
from rnlvideo.engine.evaluation import autocast_context
from rnlvideo.models.nonlocal_blocks import NLBlock, RNLBlock, set_attention_precision

FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class PrecisionSetting:
    """A precision to run a model in: parameter dtype, ``train.amp``, ``attention_precision``."""

    name: str
    dtype: torch.dtype = torch.float32
    amp: str | None = None
    attention_precision: str = "auto"


REFERENCE = PrecisionSetting("float64", torch.float64)
SETTINGS = (
    PrecisionSetting("fp32"),
    PrecisionSetting("bf16", amp="bf16", attention_precision="amp"),
    PrecisionSetting("bf16, fp32 attention", amp="bf16", attention_precision="fp32"),
    PrecisionSetting("fp16", amp="fp16", attention_precision="amp"),
    PrecisionSetting("fp16, fp32 attention", amp="fp16", attention_precision="fp32"),
)


def model_in(model: nn.Module, setting: PrecisionSetting) -> nn.Module:
    """A copy of ``model`` with ``setting``'s parameter dtype and attention precision."""
    copied = copy.deepcopy(model).to(setting.dtype)
    return set_attention_precision(copied, setting.attention_precision)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def eval_logits(model: nn.Module, batches: Iterable[Tensor], setting: PrecisionSetting) -> Tensor:
    """Eval-mode logits ``(N, K)`` float64 (on the CPU) of every clip batch ``(B, C, T, H, W)``."""
    run = model_in(model, setting).eval()
    device = _device(run)
    logits = []
    for clips in batches:
        with autocast_context(device, setting.amp):
            logits.append(run(clips.to(device, setting.dtype)).double().cpu())
    return torch.cat(logits)


def _without_dropout(model: nn.Module) -> nn.Module:
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


def step_gradients(
    model: nn.Module, clips: Tensor, labels: Tensor, setting: PrecisionSetting
) -> tuple[float, dict[str, Tensor]]:
    """Cross-entropy loss and parameter gradients (float64, CPU) of one training-mode pass.

    Training mode (batch statistics in BatchNorm) without dropout, so that every setting
    computes the same function. No loss scaling: an fp16 gradient that underflows shows.
    """
    run = _without_dropout(model_in(model, setting))
    device = _device(run)
    with autocast_context(device, setting.amp):
        logits = run(clips.to(device, setting.dtype))
    loss = nn.functional.cross_entropy(logits.to(setting.dtype), labels.to(device))
    loss.backward()
    grads = {
        name: p.grad.detach().double().cpu()
        for name, p in run.named_parameters()
        if p.grad is not None
    }
    return loss.item(), grads


@torch.no_grad()
def block_inputs(model: nn.Module, clips: Tensor, setting: PrecisionSetting) -> dict[str, Tensor]:
    """The input of every RNL / NL block (by ``nonlocal_blocks`` key) in an eval forward pass."""
    run = model_in(model, setting).eval()
    device = _device(run)
    captured: dict[str, Tensor] = {}
    handles = [
        block.register_forward_pre_hook(
            lambda _m, args, key=key: captured.__setitem__(key, args[0].detach())
        )
        for key, block in attention_blocks(run).items()
    ]
    try:
        with autocast_context(device, setting.amp):
            run(clips.to(device, setting.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return captured


@torch.no_grad()
def attention_rows(
    model: nn.Module, clips: Tensor, setting: PrecisionSetting, chunk: int = 512
) -> dict[str, Tensor]:
    """Every query's attention row in every RNL / NL block: ``{key: (N, L, L_keys)}`` float64.

    The rows come from each block's ``affinity`` on its input as ``setting`` computed it, in
    ``setting``'s precision (errors of the layers below included).
    """
    run = model_in(model, setting).eval()
    device = _device(run)
    inputs = block_inputs(model, clips, setting)
    rows = {}
    for key, block in attention_blocks(run).items():
        x = inputs[key]
        positions = x.shape[2:].numel()
        parts = []
        for start in range(0, positions, chunk):
            index = torch.arange(start, min(start + chunk, positions), device=device)
            with autocast_context(device, setting.amp):
                parts.append(block.affinity(x, index).double().cpu())
        rows[key] = torch.cat(parts, dim=1)
    return rows


@torch.no_grad()
def max_attention_logit(model: nn.Module, clips: Tensor) -> dict[str, float]:
    """Largest ``|q . k|`` (the unscaled softmax input) of each block, in float64."""
    run = model_in(model, REFERENCE).eval()
    inputs = block_inputs(model, clips, REFERENCE)
    largest = {}
    for key, block in attention_blocks(run).items():
        x = inputs[key]
        if isinstance(block, RNLBlock):
            queries = block.regions(block.theta(x))
            keys = block.pool(queries)
        elif isinstance(block, NLBlock):
            queries, keys = block.theta(x), block.pool(block.phi(x))
        else:
            continue
        q, k = queries.flatten(2), keys.flatten(2)  # (N, C', L), (N, C', L_keys)
        scale = getattr(block, "scale", 1.0)
        largest[key] = max(
            float((q[i].T @ k[i]).abs().max()) * abs(scale) for i in range(q.shape[0])
        )
    return largest


def logit_errors(logits: Tensor, reference: Tensor, labels: Tensor) -> dict[str, float]:
    """Against the reference logits: max |difference|, relative L2 error, top-1, flips."""
    finite = bool(torch.isfinite(logits).all())
    predicted = logits.argmax(1)
    return {
        "finite": finite,
        "max_abs": float((logits - reference).abs().max()) if finite else float("inf"),
        "rel_l2": float((logits - reference).norm() / reference.norm()) if finite else float("inf"),
        "top1": 100.0 * float((predicted == labels).double().mean()),
        "flips": int((predicted != reference.argmax(1)).sum()),
    }


def gradient_errors(
    grads: dict[str, Tensor], reference: dict[str, Tensor], prefix: str = ""
) -> dict[str, float]:
    """Relative L2 error of the gradient (the parameters starting with ``prefix``) and cosine."""
    names = [n for n in reference if n.startswith(prefix) and n in grads]
    got = torch.cat([grads[n].flatten() for n in names])
    want = torch.cat([reference[n].flatten() for n in names])
    finite = bool(torch.isfinite(got).all())
    return {
        "finite": finite,
        "rel_l2": float((got - want).norm() / want.norm()) if finite else float("inf"),
        "cosine": float(torch.nn.functional.cosine_similarity(got, want, dim=0))
        if finite
        else float("nan"),
    }


def row_errors(rows: Tensor, reference: Tensor) -> dict[str, float]:
    """Attention rows ``(N, L, L_keys)`` against the reference's.

    ``tv_mean`` / ``tv_max``: total-variation distance ``0.5 * sum |p - p_ref|`` per row (0:
    identical, 1: disjoint), mean and max; ``argmax_agree``: fraction of rows whose most
    attended key is the reference's; ``peak_x_uniform``: the reference's mean peak weight
    times the number of keys (1 for uniform attention, ``L_keys`` for one-hot).
    """
    finite = bool(torch.isfinite(rows).all())
    tv = 0.5 * (rows - reference).abs().sum(-1)
    return {
        "finite": finite,
        "tv_mean": float(tv.mean()) if finite else float("inf"),
        "tv_max": float(tv.max()) if finite else float("inf"),
        "argmax_agree": float((rows.argmax(-1) == reference.argmax(-1)).double().mean()),
        "peak_x_uniform": float(reference.max(-1).values.mean() * reference.shape[-1]),
    }
