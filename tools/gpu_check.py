"""Every GPU figure the README and docs/benchmarks.md need, in one short command.

    python tools/gpu_check.py --out gpu_check                    # CUDA, full sizes, <= 8 min
    python tools/gpu_check.py --device cpu --quick --out DIR     # the same code on a CPU
    python tools/gpu_check.py --device cpu --tiny --out DIR      # toy sizes (the test suite)

Checks, one row each (``--only ID ...`` runs some of them):

- ``environment``: torch, CUDA, cuDNN, the device, its memory, GPU count.
- ``float64_step`` (CUDA): a float64 training step of a tiny RNL model on the device equals
  the same step on the CPU (loss, logits, gradients, updated weights).
- ``blocks_fp32`` (CUDA): RNL / NL / channel-gate blocks' outputs and gradients on the device
  against the CPU, in fp32 (TF32 off), both measured against a float64 result.
- ``amp``: RNL-TSM-R50 (random weights, the blocks' output BatchNorm set to 1 so that the
  attention counts): logits, loss and one step's gradient under bf16 and fp16 autocast, with
  the attention in the autocast dtype or in fp32, against fp32 and float64.
- ``attention_kernels``: for every RNL / NL block of RNL-TSM-R50 / NL-TSM-R50 at each frame
  count: the scaled_dot_product_attention kernel that actually runs (recorded from the
  dispatched operators) under bf16 and with fp32 attention, which backends (flash,
  memory-efficient, cuDNN, math) accept the shape, and the block's peak memory in a forward
  + backward pass; a block whose memory grows like ``(THW)^2`` is flagged.
- ``train_throughput``: training clips/s and peak memory of RNL-TSM-R50 at each frame count,
  batch 8, bf16: as it is, with activation checkpointing, channels-last, torch.compile, fp32
  attention, and with the release's blocks (the ratio).
- ``eval_throughput``: evaluation at 2 clips x 3 full-resolution crops: videos/s and views/s.
- ``device_transform``: the device-side augmentation against the CPU pipeline (same crops):
  largest difference in grey levels, and time per clip on each side.
- ``loader_vs_step``: clips/s the data loader delivers (V1-size JPEG frames, device-side
  transform) against the training step's clips/s: does the GPU wait?
- ``ddp``: with 2 or more GPUs, NCCL DDP on 2 GPUs equals one process at the same total batch
  (tiny model and data). On ``--device cpu`` the same comparison runs with gloo, as a
  rehearsal (not with ``--tiny``).

A check that needs CUDA reports ``skipped: no CUDA`` on the CPU, after rehearsing its code
there where that is possible. Every check has a time budget (the whole run: ``--budget-s``,
480 s by default); a check that fails, raises or runs out of time is recorded as that row's
failure and the next one runs. ``DIR/gpu_check.md`` (the table and each check's details) and
``DIR/gpu_check.json`` (every figure) are rewritten after each check. Exit status: 0 when no
check failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if (
    __name__ == "__main__"
    and "cpu" in sys.argv
    and os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536"
):
    # CPU memory figures follow the live tensors when glibc hands large blocks straight back
    # (as tools/benchmark.py does); set before anything is allocated.
    os.execve(
        sys.executable,
        [sys.executable, *sys.argv],
        {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
    )

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))  # the sibling benchmark tools below

import benchmark  # noqa: E402
import benchmark_data  # noqa: E402

from rnlvideo.analysis.attention import attention_blocks  # noqa: E402
from rnlvideo.analysis.precision import (  # noqa: E402
    REFERENCE,
    SETTINGS,
    eval_logits,
    gradient_errors,
    logit_errors,
    max_attention_logit,
    step_gradients,
)
from rnlvideo.checkpoint_format import load_checkpoint  # noqa: E402
from rnlvideo.config import REPRODUCIBLE_RUN_OVERRIDES  # noqa: E402
from rnlvideo.data.device_transforms import DeferredClip  # noqa: E402
from rnlvideo.data.frames import FrameFolderDataset  # noqa: E402
from rnlvideo.data.synthetic import generate_synthetic_dataset  # noqa: E402
from rnlvideo.data.transforms import IMAGENET_STD, train_transform  # noqa: E402
from rnlvideo.engine.evaluation import autocast_context, view_scores  # noqa: E402
from rnlvideo.files import write_text_atomic  # noqa: E402
from rnlvideo.machine import machine_description  # noqa: E402
from rnlvideo.models import ChannelGate, NLBlock, RNLBlock, create_tsm_resnet  # noqa: E402
from rnlvideo.models.cost import format_table  # noqa: E402

MIB = 2**20
GIB = 2**30
NO_CUDA = "skipped: no CUDA"
FAILED = ("fail", "error", "timeout")


@dataclass(frozen=True)
class Profile:
    """The sizes of one run: ``full`` (GPU), ``quick`` (a CPU rehearsal), ``tiny`` (tests)."""

    name: str
    rnl: tuple[str, ...]  # overrides of +experiment=rnl_sthv1 for the RNL model
    nl: tuple[str, ...]  # ... and for the NL model
    size: int  # training crop
    frames: tuple[int, int]  # attention blocks and evaluation
    train_frames: tuple[int, ...]
    batch: int  # training clips per step
    repeats: int  # timed steps after one warm-up
    amp_batch: int  # clips of the mixed-precision check ...
    amp_size: int  # ... at this crop (fp16 autocast is slow on CPUs)
    eval_batch: int  # videos per evaluation forward (x 6 views)
    compile_frames: tuple[int, ...]  # frame counts at which torch.compile is measured
    data_videos_per_class: int
    loader_clips: int
    loader_workers: tuple[int, ...]
    ddp_rehearsal: bool  # run the gloo comparison on --device cpu
    budget_s: float
    check_budgets_s: dict[str, float] = field(default_factory=dict)
    default_budget_s: float | None = None  # per check; None: DEFAULT_CHECK_BUDGET_S


R50_RNL = ("placement=rnl_official",)
R50_NL = ("placement=nl_official",)
R18_RNL = ("model=tsm_r18", "placement=rnl_r18")
R18_NL = ("model=tsm_r18", "placement=nl_r18")
CPU_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 2))

PROFILES = {
    "full": Profile(
        name="full",
        rnl=R50_RNL,
        nl=R50_NL,
        size=224,
        frames=(8, 16),
        train_frames=(8, 16),
        batch=8,
        repeats=5,
        amp_batch=2,
        amp_size=224,
        eval_batch=4,
        compile_frames=(8, 16),
        data_videos_per_class=4,
        loader_clips=192,
        loader_workers=(CPU_WORKERS,),
        ddp_rehearsal=False,
        budget_s=480.0,
        check_budgets_s={"train_throughput": 240, "attention_kernels": 60, "ddp": 120},
    ),
    "quick": Profile(
        name="quick",
        rnl=R50_RNL,
        nl=R50_NL,
        size=64,
        frames=(8, 16),
        train_frames=(8,),
        batch=2,
        repeats=1,
        amp_batch=2,
        amp_size=32,
        eval_batch=1,
        compile_frames=(8,),
        data_videos_per_class=2,
        loader_clips=32,
        loader_workers=(1,),
        ddp_rehearsal=True,
        budget_s=570.0,
        # Generous: a rehearsal on a loaded 2-core CPU (torch.compile alone takes minutes).
        check_budgets_s={"amp": 150, "train_throughput": 300, "ddp": 120},
        default_budget_s=120.0,
    ),
    "tiny": Profile(
        name="tiny",
        rnl=R18_RNL,
        nl=R18_NL,
        size=32,
        frames=(4, 8),
        train_frames=(4,),
        batch=2,
        repeats=1,
        amp_batch=2,
        amp_size=32,
        eval_batch=1,
        compile_frames=(),
        data_videos_per_class=1,
        loader_clips=8,
        loader_workers=(0,),
        ddp_rehearsal=False,
        budget_s=1800.0,  # the test suite: exercise the code, however loaded the machine is
        default_budget_s=600.0,
    ),
}
DEFAULT_CHECK_BUDGET_S = 45.0


@dataclass
class Row:
    """One check's result."""

    id: str
    title: str
    status: str = "not run"
    headline: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    error: str = ""


class CheckTimeout(Exception):
    """A check ran past its time budget."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in this (main) thread after ``seconds``."""

    def expire(_signum: int, _frame: object) -> None:
        raise CheckTimeout(f"over its time budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Context:
    """What every check gets: the device, the sizes, a scratch folder, earlier results."""

    device: torch.device
    profile: Profile
    scratch: Path
    results: dict[str, Row] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------- helpers
def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """``||a - b|| / max(||b||, floor)`` in float64 (``||a - b||`` when that is 0)."""
    a, b = a.double().cpu(), b.double().cpu()
    norm = max(float(b.norm()), floor)
    return float((a - b).norm()) / norm if norm else float((a - b).norm())


def model_args(ctx: Context, frames: int, overrides: tuple[str, ...], **kwargs: Any):
    """The ``benchmark.py train-one`` arguments of one training configuration."""
    settings = {
        "device": str(ctx.device),
        "dtype": "bf16",
        "batch": ctx.profile.batch,
        "size": ctx.profile.size,
        "repeats": ctx.profile.repeats,
        "frames": frames,
        "overrides": list(overrides),
        "checkpointing": "none",
        "release_form": False,
        "channels_last": False,
        "compile": False,
    }
    settings.update(kwargs)
    return argparse.Namespace(**settings)


def build(ctx: Context, frames: int, overrides: tuple[str, ...]) -> nn.Module:
    """The configured model (random weights) on the device, training mode."""
    torch.manual_seed(0)
    return benchmark.build_training_model(model_args(ctx, frames, overrides), ctx.device)


def activate_attention(model: nn.Module) -> nn.Module:
    """Set every RNL / NL block's output BatchNorm weight to 1 (it starts at 0): with random
    weights the attention then reaches the logits."""
    for block in model.modules():
        if isinstance(block, (RNLBlock, NLBlock)):
            nn.init.ones_(block.W[1].weight)
    return model


def tiny_model(num_segments: int = 4) -> nn.Module:
    """RNL-TSM-R18 (channel gate + 3x7x7 RNL in res3, 3x3x3 RNL in res4), 12 classes."""
    torch.manual_seed(0)
    blocks = [
        {"stage": "layer2", "block": 0, "kind": "cg+rnl", "kernel_size": [3, 7, 7]},
        {"stage": "layer3", "block": 0, "kind": "rnl", "kernel_size": [3, 3, 3]},
    ]
    model = create_tsm_resnet(
        depth=18, num_classes=12, num_segments=num_segments, nonlocal_blocks=blocks, dropout=0.0
    )
    return activate_attention(model)


@contextmanager
def no_tf32() -> Iterator[None]:
    """Plain fp32 matrix products and convolutions on CUDA within the context."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def fmt(value: float) -> str:
    return f"{value:.2e}"


# ------------------------------------------------------------------------------------ checks
def check_environment(ctx: Context, row: Row) -> None:
    figures = row.figures
    figures.update(
        torch=torch.__version__,
        python=platform.python_version(),
        device=str(ctx.device),
        cpu=machine_description("cpu"),
        cuda_available=torch.cuda.is_available(),
        gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
    )
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        figures.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / GIB, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
        row.headline = (
            f"{props.name}, {figures['gpu_memory_gib']} GiB, {figures['gpus']} GPU(s); "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {figures['cudnn']}"
        )
    else:
        row.headline = f"CPU only: {figures['cpu']}; torch {torch.__version__}"
    row.status = "pass"


def float64_step(model: nn.Module, clips, labels, device: torch.device) -> dict[str, Any]:
    """One SGD step of a float64 copy of ``model`` on ``device``: loss, logits, grads, weights."""
    run = copy.deepcopy(model).double().to(device).train()
    optimizer = torch.optim.SGD(run.parameters(), lr=0.1, momentum=0.9)
    logits = run(clips.double().to(device))
    loss = nn.functional.cross_entropy(logits, labels.to(device))
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in run.named_parameters() if p.grad is not None}
    optimizer.step()
    weights = {n: p.detach().cpu() for n, p in run.named_parameters()}
    return {
        "loss": loss.detach().cpu(),
        "logits": logits.detach().cpu(),
        "grads": grads,
        "weights": weights,
    }


def check_float64_step(ctx: Context, row: Row) -> None:
    model = tiny_model(num_segments=2)
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, 2, 32, 32, generator=generator)
    labels = torch.tensor([3, 11])
    on_cpu = float64_step(model, clips, labels, torch.device("cpu"))
    on_device = float64_step(model, clips, labels, ctx.device)
    figures = {
        "loss_rel": rel(on_device["loss"], on_cpu["loss"]),
        "logits_rel": rel(on_device["logits"], on_cpu["logits"]),
        "grad_rel_max": max(rel(on_device["grads"][n], g) for n, g in on_cpu["grads"].items()),
        "weights_max_abs": max(
            float((on_device["weights"][n] - w).abs().max()) for n, w in on_cpu["weights"].items()
        ),
    }
    row.figures.update(figures)
    worst = max(figures["loss_rel"], figures["logits_rel"], figures["grad_rel_max"])
    ok = worst <= 1e-9 and figures["weights_max_abs"] <= 1e-9
    summary = (
        f"float64 step, device vs CPU: worst relative difference {worst:.1e} (loss, logits, "
        f"each gradient), weights {figures['weights_max_abs']:.1e} (tolerance 1e-9)"
    )
    if not ctx.cuda:
        row.status, row.headline = NO_CUDA, f"rehearsed CPU vs CPU: {summary}"
        return
    row.status, row.headline = ("pass" if ok else "fail"), summary


def block_cases() -> list[tuple[str, Callable[[], nn.Module]]]:
    def rnl(kernel, sub_sample=False):
        return lambda: activate_attention(RNLBlock(64, kernel, sub_sample=sub_sample))

    return [
        ("RNL 3x7x7", rnl((3, 7, 7))),
        ("RNL 3x3x3, sub-sampled keys", rnl((3, 3, 3), True)),
        ("RNL 1x1x1", rnl((1, 1, 1))),
        ("NL", lambda: activate_attention(NLBlock(64))),
        ("channel gate", lambda: ChannelGate(64)),
    ]


def block_pass(block: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    """Output, input gradient and parameter gradients of one training-mode pass (CPU copies)."""
    x = x.clone().requires_grad_(True)
    out = block(x)
    (out * upstream).sum().backward()
    grads = [p.grad.detach().cpu() for p in block.parameters()]
    return [out.detach().cpu(), x.grad.detach().cpu(), *grads]


def check_blocks_fp32(ctx: Context, row: Row) -> None:
    lines, worst_ratio = [], 0.0
    generator = torch.Generator().manual_seed(0)
    for name, make in block_cases():
        torch.manual_seed(0)
        block = make()
        x = torch.randn(2, 64, 4, 8, 8, generator=generator)
        upstream = torch.randn(2, 64, 4, 8, 8, generator=generator)
        exact = block_pass(copy.deepcopy(block).double(), x.double(), upstream.double())
        cpu = block_pass(copy.deepcopy(block), x, upstream)
        with no_tf32():
            dev = block_pass(
                copy.deepcopy(block).to(ctx.device), x.to(ctx.device), upstream.to(ctx.device)
            )
        # Some gradients are analytically zero (a bias before training-mode BatchNorm, the key
        # bias under the softmax's shift invariance): a floor of 1 (unit-scale data) compares
        # those absolutely.
        cpu_err = max(rel(c, e, 1.0) for c, e in zip(cpu, exact, strict=True))
        dev_err = max(rel(d, e, 1.0) for d, e in zip(dev, exact, strict=True))
        vs_cpu = max(rel(d, c, 1.0) for d, c in zip(dev, cpu, strict=True))
        # fp32 rounding of the unscaled softmax: the device may be as far from float64 as the
        # CPU is, up to a factor of 4, and never needs to be closer than 1e-5.
        ratio = dev_err / max(cpu_err, 1e-5)
        worst_ratio = max(worst_ratio, ratio)
        row.figures[name] = {
            "device_vs_cpu": vs_cpu,
            "device_vs_fp64": dev_err,
            "cpu_vs_fp64": cpu_err,
        }
        lines.append([name, fmt(vs_cpu), fmt(dev_err), fmt(cpu_err)])
    row.tables.append(
        (
            "Largest relative difference over output, input gradient and parameter gradients "
            "(fp32, TF32 off):",
            ["block", "device vs CPU", "device vs float64", "CPU vs float64"],
            lines,
        )
    )
    ok = worst_ratio <= 4.0
    summary = (
        f"{len(lines)} blocks: device error vs float64 at most {worst_ratio:.2f}x the CPU's "
        "(or 1e-5)"
    )
    if not ctx.cuda:
        row.status, row.headline = NO_CUDA, f"rehearsed CPU vs CPU: {summary}"
        return
    row.status, row.headline = ("pass" if ok else "fail"), summary


def check_amp(ctx: Context, row: Row) -> None:
    profile = ctx.profile
    frames = profile.frames[0]
    model = activate_attention(build(ctx, frames, profile.rnl))
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(
        profile.amp_batch, 3, frames, profile.amp_size, profile.amp_size, generator=generator
    )
    labels = torch.arange(profile.amp_batch) % 7
    largest = max_attention_logit(model, clips)
    row.figures["max_attention_logit"] = largest
    reference_logits = eval_logits(model, [clips], REFERENCE)
    reference_loss, reference_grads = step_gradients(model, clips, labels, REFERENCE)
    ctx.free()
    lines, nonfinite = [], []
    for setting in SETTINGS:
        started = time.perf_counter()
        logits = logit_errors(eval_logits(model, [clips], setting), reference_logits, labels)
        loss, grads = step_gradients(model, clips, labels, setting)
        grad = gradient_errors(grads, reference_grads)
        blocks = gradient_errors(grads, reference_grads, "nonlocal_blocks.")
        del grads
        ctx.free()
        finite = logits["finite"] and grad["finite"] and torch.isfinite(torch.tensor(loss))
        if not finite:
            nonfinite.append(setting.name)
        row.figures[setting.name] = {
            "logits": logits,
            "loss": loss,
            "gradient": grad,
            "gradient_nonlocal": blocks,
            "seconds": time.perf_counter() - started,
        }
        lines.append(
            [
                setting.name,
                fmt(logits["max_abs"]),
                fmt(logits["rel_l2"]),
                fmt(abs(loss - reference_loss)),
                fmt(grad["rel_l2"]),
                fmt(blocks["rel_l2"]),
                "yes" if finite else "NO",
            ]
        )
    row.tables.append(
        (
            f"RNL-TSM-R50 ({' '.join(profile.rnl)}), {profile.amp_batch} clips of {frames} x "
            f"{profile.amp_size}px, random weights (blocks' output BN = 1), against float64 on "
            "the device:",
            [
                "precision",
                "max |dlogit|",
                "logits rel. L2",
                "|dloss|",
                "grad rel. L2",
                "RNL grad rel. L2",
                "finite",
            ],
            lines,
        )
    )
    bf16 = row.figures["bf16"]["gradient"]["rel_l2"]
    bf16_fp32 = row.figures["bf16, fp32 attention"]["gradient"]["rel_l2"]
    row.headline = (
        f"gradient rel. error vs float64: bf16 {bf16:.1e}, bf16 + fp32 attention "
        f"{bf16_fp32:.1e}; largest |q.k| {max(largest.values()):.0f} (fp16 max 65504)"
        + (f"; NON-FINITE: {', '.join(nonfinite)}" if nonfinite else "")
    )
    # fp16 with the attention in fp16 ("amp") may overflow: that is what the default guards.
    guarded = [name for name in nonfinite if name != "fp16"]
    row.status = "fail" if guarded else "measured"


SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_fused_attention_overrideable": "fused (other)",
}
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


class OperatorLog(TorchDispatchMode):
    """Records the name of every ATen operator dispatched (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def sdpa_kernels_run(names: set[str]) -> str:
    fused = sorted({SDPA_KERNELS[n] for n in names if n in SDPA_KERNELS})
    if fused:
        return " + ".join(fused)
    return "math (THW x THW materialised)" if {"bmm", "_softmax"} & names else "none"


def block_step(block: nn.Module, x: torch.Tensor, ctx: Context) -> None:
    with torch.autocast(ctx.device.type, torch.bfloat16):
        out = block(x)
    out.float().sum().backward()
    ctx.sync()


def measure_block(block: nn.Module, x: torch.Tensor, precision: str, ctx: Context) -> dict:
    """Kernel that runs, peak extra memory, and which backends accept the shape."""
    block.attention_precision = precision
    x = x.detach().requires_grad_(True)
    block_step(block, x, ctx)  # warm-up
    block.zero_grad(set_to_none=True)
    x.grad = None
    ctx.free()
    memory = benchmark.MemoryProbe(ctx.device)
    memory.start()
    log = OperatorLog()
    with log:
        block_step(block, x, ctx)
    peak = memory.peak_extra()
    backends = {}
    for name, backend in BACKENDS.items():
        with warnings.catch_warnings(record=True) as caught, sdpa_kernel([backend]):
            warnings.simplefilter("always")
            try:
                block_step(block, x, ctx)
                backends[name] = "ok"
            except RuntimeError as error:
                reasons = [str(w.message) for w in caught if name[:5] in str(w.message).lower()]
                backends[name] = "no: " + (reasons[0] if reasons else str(error))[:160]
    block.zero_grad(set_to_none=True)
    return {"kernel": sdpa_kernels_run(log.names), "peak_extra": peak, "backends": backends}


def attention_inputs(model: nn.Module, ctx: Context, frames: int) -> dict[str, torch.Tensor]:
    """A random input of the right shape for every attention block of ``model``."""
    scale = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    size = ctx.profile.size
    inputs = {}
    for key, block in attention_blocks(model).items():
        channels = block.theta.in_channels
        side = size // scale[key.split("_")[0]]
        shape = (ctx.profile.batch, channels, frames, side, side)
        inputs[key] = torch.randn(shape, device=ctx.device)
    return inputs


def check_attention_kernels(ctx: Context, row: Row) -> None:
    profile = ctx.profile
    results: dict[tuple[str, str, str], dict[int, dict]] = {}
    for name, overrides in (("RNL", profile.rnl), ("NL", profile.nl)):
        for frames in profile.frames:
            model = build(ctx, frames, overrides)
            for key, x in attention_inputs(model, ctx, frames).items():
                block = activate_attention(attention_blocks(model)[key])
                for precision in ("amp", "fp32"):
                    result = measure_block(block, x, precision, ctx)
                    shape = tuple(x.shape)
                    result["shape"] = shape
                    lq = shape[2] * shape[3] * shape[4]
                    lk = lq // 4 if isinstance(block.pool, nn.MaxPool3d) else lq
                    result["affinity_bytes"] = shape[0] * lq * lk * (2 if precision == "amp" else 4)
                    result["head_dim"] = block.theta.out_channels
                    results.setdefault((name, key, precision), {})[frames] = result
                    row.figures.setdefault(f"{name} {key} {precision}", {})[frames] = result
            del model
            ctx.free()
    low, high = profile.frames
    lines, flagged, kernels = [], [], set()
    for (name, key, precision), by_frames in results.items():
        for frames, result in by_frames.items():
            growth = ""
            if frames == high and low in by_frames and by_frames[low]["peak_extra"] > 0:
                ratio = result["peak_extra"] / by_frames[low]["peak_extra"]
                growth = f"{ratio:.2f}"
                materialised = result["peak_extra"] >= result["affinity_bytes"]
                if ratio > 3.0 and materialised:
                    flagged.append(f"{name} {key} ({precision})")
                    growth += " (THW)^2"
            kernels.add(result["kernel"])
            lines.append(
                [
                    f"{name} {key}",
                    "bf16" if precision == "amp" else "fp32 attention",
                    str(frames),
                    f"{result['head_dim']}",
                    result["kernel"],
                    f"{result['peak_extra'] / MIB:.0f}",
                    f"{result['affinity_bytes'] / MIB:.0f}",
                    growth,
                    # ok / no here; why a backend refused is in gpu_check.json
                    ", ".join(f"{b}: {v.split(':')[0]}" for b, v in result["backends"].items()),
                ]
            )
    row.tables.append(
        (
            f"Each block alone, forward + backward under bf16 autocast, {profile.batch} clips "
            f"at {profile.size}px input; memory growth from {low} to {high} frames (linear: 2, "
            "quadratic: 4):",
            [
                "block",
                "attention",
                "T",
                "head dim",
                "kernel that runs",
                "peak extra (MiB)",
                "THW x THW (MiB)",
                f"memory {high}f / {low}f",
                "backends accepting the shape",
            ],
            lines,
        )
    )
    row.figures["flagged"] = flagged
    row.headline = f"kernels: {', '.join(sorted(kernels))}; " + (
        f"(THW)^2 memory: {', '.join(flagged)}" if flagged else "no block grows like (THW)^2"
    )
    # On the CPU the fused kernel always runs and tiny blocks' memory is noise: figures only.
    row.status = ("fail" if flagged else "pass") if ctx.cuda else "measured"


TRAIN_VARIANTS = (
    ("bf16", {}),
    ("bf16, checkpointing all", {"checkpointing": "all"}),
    ("bf16, channels-last", {"channels_last": True}),
    ("bf16, fp32 attention", {"extra": ("model.attention_precision=fp32",)}),
    ("bf16, release form", {"release_form": True}),
    ("bf16, torch.compile", {"compile": True}),
)


def check_train_throughput(ctx: Context, row: Row) -> None:
    profile = ctx.profile
    lines = []
    row.tables.append(
        (
            f"RNL-TSM-R50 ({' '.join(profile.rnl)}) training steps (forward, loss, backward, SGD), "
            f"batch {profile.batch}, {profile.size}px, random clips; median of {profile.repeats} "
            "step(s) after one warm-up; peak memory: the whole footprint (weights, optimiser, "
            "activations; CPU: the process's resident set):",
            [
                "variant",
                "T",
                "clips/s",
                "s / step",
                "peak memory (GiB)",
                "time / bf16",
                "memory / bf16",
            ],
            lines,
        )
    )
    for name, variant in TRAIN_VARIANTS:
        for frames in profile.train_frames:
            if variant.get("compile") and frames not in profile.compile_frames:
                lines.append(
                    [name, str(frames), f"not run in the {profile.name} profile", "", "", "", ""]
                )
                continue
            options = {k: v for k, v in variant.items() if k != "extra"}
            overrides = profile.rnl + variant.get("extra", ())
            args = model_args(ctx, frames, overrides, **options)
            ctx.free()
            try:
                result = benchmark.measure_training(args)
            except torch.OutOfMemoryError as error:
                result = {"error": f"out of memory: {str(error)[:200]}"}
            finally:
                if options.get("compile"):
                    torch._dynamo.reset()
                ctx.free()
            key = f"{name}, {frames}f"
            if "error" in result:
                row.figures[key] = result
                lines.append([name, str(frames), result["error"], "", "", "", ""])
                continue
            seconds = statistics.median(result["times"])
            figures = {
                "clips_per_s": profile.batch / seconds,
                "seconds": seconds,
                "peak_gib": result["peak"] / GIB,
            }
            row.figures[key] = figures
            base = row.figures.get(f"bf16, {frames}f")
            lines.append(
                [
                    name,
                    str(frames),
                    f"{figures['clips_per_s']:.2f}",
                    f"{seconds:.3f}",
                    f"{figures['peak_gib']:.2f}",
                    f"{seconds / base['seconds']:.2f}" if base else "",
                    f"{figures['peak_gib'] / base['peak_gib']:.2f}" if base else "",
                ]
            )
    low = row.figures.get(f"bf16, {profile.train_frames[0]}f")
    row.headline = (
        f"bf16 {profile.train_frames[0]}f: {low['clips_per_s']:.1f} clips/s, "
        f"{low['peak_gib']:.2f} GiB"
        if low
        else "no bf16 figure"
    )
    row.status = "measured"


def check_eval_throughput(ctx: Context, row: Row) -> None:
    profile = ctx.profile
    crop = round(profile.size * 256 / 224)  # full-resolution crops of the 2x3 protocol
    lines = []
    for frames in profile.frames:
        model = build(ctx, frames, profile.rnl).eval()
        clips = torch.randn(profile.eval_batch, 6, 3, frames, crop, crop, device=ctx.device)
        with torch.no_grad(), autocast_context(ctx.device, "bf16"):
            view_scores(model, clips, softmax=False)  # warm-up
            ctx.sync()
            times = []
            for _ in range(profile.repeats):
                started = time.perf_counter()
                view_scores(model, clips, softmax=False)
                ctx.sync()
                times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        videos = profile.eval_batch / seconds
        row.figures[f"{frames}f"] = {"videos_per_s": videos, "views_per_s": 6 * videos}
        lines.append(
            [
                str(frames),
                f"{crop}x{crop}",
                str(profile.eval_batch),
                f"{videos:.2f}",
                f"{6 * videos:.1f}",
            ]
        )
        del model, clips
        ctx.free()
    row.tables.append(
        (
            "RNL-TSM-R50 evaluation, 2 clips x 3 crops per video, bf16, no gradients:",
            ["T", "crop", "videos per forward", "videos/s", "views/s"],
            lines,
        )
    )
    first = row.figures[f"{profile.frames[0]}f"]
    row.headline = f"{profile.frames[0]}f at 2x3: {first['videos_per_s']:.1f} videos/s"
    row.status = "measured"


def synthetic_frames(ctx: Context) -> Path:
    """A small V1-size synthetic dataset (100 px tall JPEGs) in the scratch folder."""
    root = ctx.scratch / "frames_data"
    if not (root / "train.txt").exists():
        generate_synthetic_dataset(
            root,
            videos_per_class_train=ctx.profile.data_videos_per_class,
            videos_per_class_val=0,
            num_workers=1,
        )
    return root


def frames_dataset(root: Path, size: int, device_transform: bool) -> FrameFolderDataset:
    return FrameFolderDataset(
        root / "frames",
        root / "train.txt",
        train_transform(size),
        num_segments=8,
        device_transform=device_transform,
    )


def check_device_transform(ctx: Context, row: Row) -> None:
    root = synthetic_frames(ctx)
    size = ctx.profile.size
    cpu_side, device_side = frames_dataset(root, size, False), frames_dataset(root, size, True)
    std = torch.tensor(IMAGENET_STD).view(-1, 1, 1, 1) * 255
    worst, means = 0.0, []
    transform = device_side.device_transform.to(ctx.device)
    for index in range(min(8, len(cpu_side))):
        expected = cpu_side[index][0]
        deferred = device_side[index][0]
        batch = DeferredClip(*(part.unsqueeze(0).to(ctx.device) for part in deferred))
        got = transform(batch)[0].cpu()
        grey = ((got - expected) * std).abs()  # grey levels
        worst = max(worst, float(grey.max()))
        means.append(float(grey.mean()))
    indices = list(range(min(ctx.profile.loader_clips, len(cpu_side))))
    cpu_ms = benchmark_data.stage_times(cpu_side, indices, 8)
    deferred_ms = benchmark_data.stage_times(device_side, indices, 8)
    device_ms = benchmark_data.device_part_ms(device_side, 8, ctx.device)
    row.figures.update(
        max_grey_levels=worst,
        mean_grey_levels=statistics.mean(means),
        cpu_pipeline_ms_per_clip=cpu_ms,
        device_side_cpu_half_ms_per_clip=deferred_ms,
        device_half_ms_per_clip=device_ms,
    )
    row.tables.append(
        (
            f"Training transform (MultiScaleCrop to {size}px, 8 frames), ms per clip on one CPU "
            "thread, and the device half on the device:",
            ["path", "decode", "transform", "collate", "device part"],
            [
                [
                    "CPU pipeline",
                    *(f"{cpu_ms[k]:.2f}" for k in ("decode", "transform", "collate")),
                    "-",
                ],
                [
                    "device-side",
                    *(f"{deferred_ms[k]:.2f}" for k in ("decode", "transform", "collate")),
                    f"{device_ms:.3f}",
                ],
            ],
        )
    )
    ok = worst <= 2.0
    row.headline = (
        f"device vs CPU path: at most {worst:.2f} grey levels (mean {statistics.mean(means):.2f}); "
        f"CPU transform {cpu_ms['transform']:.2f} ms/clip, device part {device_ms:.3f} ms/clip"
    )
    row.status = "pass" if ok else "fail"


def check_loader_vs_step(ctx: Context, row: Row) -> None:
    root = synthetic_frames(ctx)
    dataset = frames_dataset(root, ctx.profile.size, True)
    lines = []
    for workers in ctx.profile.loader_workers:
        rate = benchmark_data.loader_rate(dataset, ctx.profile.loader_clips, 8, workers)
        row.figures[f"loader_clips_per_s_{workers}_workers"] = rate
        lines.append([str(workers), f"{rate:.1f}"])
    best = max(v for k, v in row.figures.items() if k.startswith("loader_"))
    train = ctx.results.get("train_throughput")
    step = None
    if train is not None:
        step = train.figures.get(f"bf16, {ctx.profile.train_frames[0]}f", {}).get("clips_per_s")
    row.tables.append(
        (
            f"Data loader, device-side transform, {ctx.profile.size}px, 8 frames, batch 8 (V1-size "
            f"synthetic JPEGs; {os.cpu_count()} CPU cores here):",
            ["workers", "clips/s"],
            lines,
        )
    )
    if step is None:
        row.headline = f"loader {best:.1f} clips/s (no training figure to compare)"
    else:
        verdict = "the GPU waits for data" if best < step else "the loader keeps up"
        row.figures["step_clips_per_s"] = step
        row.headline = f"loader {best:.1f} clips/s vs training {step:.1f} clips/s: {verdict}"
    row.status = "measured"


def ddp_overrides(root: Path, run_dir: Path, device: str, world: int) -> list[str]:
    return [
        "+experiment=demo",
        f"data.root={root}",
        f"output_dir={run_dir}",
        "data.num_segments=4",
        "data.input_size=32",
        "data.scale_size=37",
        "train.epochs=1",
        "train.batch_size=1",
        f"train.total_batch_size={world}",
        "train.num_workers=0",
        f"train.device={device}",
        *REPRODUCIBLE_RUN_OVERRIDES,
        "eval.batch_size=8",
        "eval.num_workers=0",
        "train.dist_timeout_s=120",
    ]


def ddp_equivalence(ctx: Context, device: str, world: int, timeout_s: float) -> dict[str, Any]:
    """Max |weight difference| between ``world`` DDP processes and one process (same total)."""
    root = ctx.scratch / "ddp_data"
    if not (root / "train.txt").exists():
        generate_synthetic_dataset(
            root,
            videos_per_class_train=2,
            videos_per_class_val=1,
            min_frames=16,
            max_frames=20,
            num_workers=1,
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    train = str(TOOLS / "train.py")
    runs = {
        "one": [sys.executable, train],
        "ddp": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={world}",
            train,
        ],
    }
    for name, command in runs.items():
        run_dir = ctx.scratch / f"ddp_{name}"
        done = subprocess.run(
            [*command, *ddp_overrides(root, run_dir, device, world)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} run failed ({done.returncode}): {done.stderr[-1500:]}")
    one = load_checkpoint(ctx.scratch / "ddp_one" / "last.pt")
    ddp = load_checkpoint(ctx.scratch / "ddp_ddp" / "last.pt")
    diff = max(
        float((ddp["model"][k].double() - v.double()).abs().max())
        for k, v in one["model"].items()
        if v.is_floating_point()
    )
    return {
        "max_abs_diff": diff,
        "steps": one["progress"]["global_step"],
        "world_size": ddp["world_size"],
    }


def check_ddp(ctx: Context, row: Row) -> None:
    budget = ctx.profile.check_budgets_s.get(
        "ddp", ctx.profile.default_budget_s or DEFAULT_CHECK_BUDGET_S
    )
    if not ctx.cuda:
        if ctx.profile.ddp_rehearsal:
            result = ddp_equivalence(ctx, "cpu", 2, budget / 2)
            row.figures["gloo_rehearsal"] = result
            row.headline = (
                f"rehearsed with gloo on the CPU: 2 processes vs 1, {result['steps']} steps, "
                f"max |weight difference| {result['max_abs_diff']:.1e}"
            )
        row.status = NO_CUDA
        return
    gpus = torch.cuda.device_count()
    if gpus < 2:
        row.status = f"skipped: needs 2 GPUs (found {gpus})"
        return
    result = ddp_equivalence(ctx, "cuda", 2, budget / 2)
    row.figures["nccl"] = result
    ok = result["max_abs_diff"] <= 1e-6
    row.headline = (
        f"NCCL, 2 GPUs vs 1 at the same total batch: {result['steps']} steps, max |weight "
        f"difference| {result['max_abs_diff']:.1e} (tolerance 1e-6)"
    )
    row.status = "pass" if ok else "fail"


CHECKS: list[tuple[str, str, Callable[[Context, Row], None]]] = [
    ("environment", "Environment", check_environment),
    ("float64_step", "float64 training step: device = CPU", check_float64_step),
    ("blocks_fp32", "RNL / NL blocks in fp32: device = CPU", check_blocks_fp32),
    ("attention_kernels", "Attention kernels and block memory", check_attention_kernels),
    ("amp", "Mixed precision (RNL-TSM-R50)", check_amp),
    ("train_throughput", "Training throughput and memory", check_train_throughput),
    ("eval_throughput", "Evaluation throughput (2x3)", check_eval_throughput),
    ("device_transform", "Device-side transform vs CPU path", check_device_transform),
    ("loader_vs_step", "Data loader vs training step", check_loader_vs_step),
    ("ddp", "DDP (NCCL) = one process", check_ddp),
]


# ------------------------------------------------------------------------------------ report
def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        "# gpu_check",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; profile `{meta['profile']}`, device `{meta['device']}`; "
        f"{meta['machine']}; torch {meta['torch']}; {meta['elapsed_s']:.0f} s in all.",
        "",
        format_table(
            ["check", "status", "result", "seconds"],
            [[r.title, r.status, r.headline.replace("|", "/"), f"{r.seconds:.0f}"] for r in rows],
            markdown=True,
        ),
    ]
    for row in rows:
        if not (row.tables or row.error):
            continue
        lines += ["", f"## {row.title}", ""]
        for caption, header, table in row.tables:
            lines += [caption, "", format_table(header, table, markdown=True), ""]
        if row.error:
            lines += ["```", row.error.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "gpu_check.md", markdown(rows, meta))
    payload = {
        "meta": meta,
        "checks": [
            {
                "id": r.id,
                "title": r.title,
                "status": r.status,
                "headline": r.headline,
                "seconds": round(r.seconds, 2),
                "figures": r.figures,
                "error": r.error,
            }
            for r in rows
        ],
    }
    write_text_atomic(out / "gpu_check.json", json.dumps(payload, indent=1, default=str))


def timeout_in(error: BaseException) -> CheckTimeout | None:
    """The :class:`CheckTimeout` that ``error`` is or was raised from (torch.compile wraps
    exceptions raised inside it), or None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, CheckTimeout):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run_check(ctx: Context, row: Row, check: Callable[[Context, Row], None], budget: float):
    started = time.perf_counter()
    try:
        with time_limit(budget):
            check(ctx, row)
    except Exception as error:  # noqa: BLE001 - recorded as this row's failure
        timeout = timeout_in(error)
        if timeout is not None:
            row.status, row.error = "timeout", f"{timeout} (figures so far are kept)"
        else:
            row.status = "error"
            row.error = traceback.format_exc()[-4000:]
            row.headline = row.headline or f"{type(error).__name__}: {str(error)[:200]}"
    finally:
        row.seconds = time.perf_counter() - started
        ctx.free()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes (a CPU rehearsal)")
    sizes.add_argument("--tiny", action="store_true", help="toy sizes (the test suite)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--only", nargs="+", choices=[c[0] for c in CHECKS], help="these checks")
    parser.add_argument("--budget-s", type=float, help="time for the whole run (default: profile)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    profile = PROFILES["tiny" if args.tiny else "quick" if args.quick else "full"]
    budget = args.budget_s or profile.budget_s
    started = time.perf_counter()
    rows = [Row(check_id, title) for check_id, title, _ in CHECKS]
    meta = {
        "command": "python tools/gpu_check.py " + " ".join(argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile.name,
        "device": args.device,
        "machine": machine_description(
            "cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu"
        ),
        "torch": torch.__version__,
        "elapsed_s": 0.0,
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        cuda_missing = args.device == "cuda" and not torch.cuda.is_available()
        device = torch.device("cuda" if args.device == "cuda" and not cuda_missing else "cpu")
        ctx = Context(device, profile, Path(scratch))
        for row, (check_id, _, check) in zip(rows, CHECKS, strict=True):
            if args.only and check_id not in args.only:
                row.status = "not selected"
            elif cuda_missing:
                row.status = "fail" if check_id == "environment" else NO_CUDA
                row.headline = "--device cuda, but torch.cuda.is_available() is False"
            else:
                left = budget - (time.perf_counter() - started)
                if left < 5:
                    row.status = "skipped: out of time budget"
                else:
                    own = profile.check_budgets_s.get(
                        check_id, profile.default_budget_s or DEFAULT_CHECK_BUDGET_S
                    )
                    run_check(ctx, row, check, min(own, left))
                ctx.results[check_id] = row
            meta["elapsed_s"] = time.perf_counter() - started
            write_report(args.out, rows, meta)
            print(f"[gpu_check] {row.title}: {row.status} {row.headline}", flush=True)
    print(f"[gpu_check] wrote {args.out / 'gpu_check.md'} and {args.out / 'gpu_check.json'}")
    return 1 if any(row.status in FAILED for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
