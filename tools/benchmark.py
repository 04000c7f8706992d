"""Speed and memory benchmarks.

    python tools/benchmark.py rnl                                   # CPU, T = 8 and 16, fp32
    python tools/benchmark.py rnl --device cuda --dtype bf16 --markdown
    python tools/benchmark.py rnl --frames 16 --forms auto grouped --repeats 2
    python tools/benchmark.py train --frames 8 16 --batch 2             # TSM-R50 vs RNL-TSM-R50
    python tools/benchmark.py train --device cuda --dtype bf16 --batch 8 --markdown
    python tools/benchmark.py train --models RNL-TSM-R50=placement=rnl_official --batch 2 \
        --frames 8 16 --checkpointing none nonlocal all --release-form --markdown

``train``: full training steps (forward, loss, backward, SGD update) of whole models built from
Hydra overrides (default: TSM-R50 and RNL-TSM-R50 of ``+experiment=rnl_sthv1``) at 224x224:
time per step and peak memory (on CPU: the process's peak resident set during the steps, model
and optimiser state included), for each ``model.activation_checkpointing`` mode given and, with
``--release-form``, for the same network with the release's RNL / NL blocks
(``rnlvideo.models.cost.release_form``). Every configuration runs in a fresh subprocess
(``train-one``), so that its peak memory is its own; with ``--rounds`` > 1 the configurations
take turns, round after round, so that a changing background load falls on all alike.
``--memory-cap`` limits each subprocess's address space (``RLIMIT_AS``): a configuration that
does not fit is reported as out of memory instead of exhausting a shared machine. The cap
counts address space, which exceeds the resident set by the libraries' mappings (about 3 GiB
for torch on CPU).

``rnl``: forward + backward of one RNL block at the res3 shape of TSM-R50 (N=2 clips, C=512,
28x28, kernel 3x7x7, training mode) for each aggregation form of ours (SDPA attention) and for the
straightforward reference that mirrors the official release (materialised THW x THW affinity,
masked grouped aggregation conv), all with the same weights and inputs.

All implementations of one T run in the same process, interleaved: after a step on a tiny
clip, a first step of each measures its peak extra memory and warms it up, then ``--repeats``
rounds time one step of each in turn, so that a changing background load affects them alike;
the median is reported. Peak extra memory is the peak during the step minus the memory held
just before it (blocks, input, upstream gradient; no gradients): on CUDA from
``torch.cuda.max_memory_allocated``; on CPU from the process's resident set (``VmHWM`` of
/proc/self/status, reset through /proc/self/clear_refs; Linux only), with glibc told to hand
every allocation above 64 KiB straight back to the system (``MALLOC_MMAP_THRESHOLD_``, set by
re-executing the tool) so that the resident set follows the
live tensors and library scratch buffers.
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rnlvideo.config import build_model, compose_config
from rnlvideo.engine.trainer import to_channels_last
from rnlvideo.machine import machine_description
from rnlvideo.models import RNLBlock
from rnlvideo.models.activation_checkpointing import CHECKPOINTING_MODES
from rnlvideo.models.cost import format_table, release_form
from rnlvideo.models.nonlocal_blocks import RegionAggregation
from rnlvideo.models.reference import ReferenceRNLBlock

REFERENCE = "reference"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIB = 2**20
MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
GIB = 2**30
OUT_OF_MEMORY_EXIT = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rnl = commands.add_parser("rnl", help="one RNL block at the res3 shape, ours vs reference")
    rnl.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    rnl.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="bf16/fp16: autocast")
    rnl.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="T values")
    rnl.add_argument(
        "--forms",
        nargs="+",
        choices=RegionAggregation.forms,
        default=list(RegionAggregation.forms),
        help="aggregation forms of ours to measure",
    )
    rnl.add_argument("--batch", type=int, default=2, help="clips N")
    rnl.add_argument("--channels", type=int, default=512, help="C (C' = C / 2)")
    rnl.add_argument("--size", type=int, default=28, help="H = W")
    rnl.add_argument("--kernel", type=int, nargs=3, default=[3, 7, 7], help="kt kh kw")
    rnl.add_argument("--repeats", type=int, help="timed rounds (default: 3 on CPU, 20 on CUDA)")
    rnl.add_argument("--markdown", action="store_true", help="print a markdown table")
    train = commands.add_parser("train", help="whole-model training steps: time, memory")
    add_step_arguments(train)
    train.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="T values")
    train.add_argument(
        "--models",
        nargs="+",
        default=["TSM-R50=placement=none", "RNL-TSM-R50=placement=rnl_official"],
        help="NAME=OVERRIDE[,OVERRIDE...] added to +experiment=rnl_sthv1",
    )
    train.add_argument(
        "--checkpointing",
        nargs="+",
        choices=CHECKPOINTING_MODES,
        default=["none"],
        help="model.activation_checkpointing modes to measure",
    )
    train.add_argument(
        "--release-form",
        action="store_true",
        help="also each model with the release's RNL / NL blocks (no checkpointing)",
    )
    train.add_argument("--rounds", type=int, default=1, help="fresh-process runs of each")
    train.add_argument("--memory-cap", type=float, help="GiB of address space per subprocess")
    train.add_argument("--markdown", action="store_true", help="print a markdown table")
    one = commands.add_parser(
        "train-one", help="one training configuration in this process (JSON on stdout)"
    )
    add_step_arguments(one)
    one.add_argument("--frames", type=int, required=True, help="T")
    one.add_argument("--overrides", nargs="*", default=[], help="added to +experiment=rnl_sthv1")
    one.add_argument("--checkpointing", choices=CHECKPOINTING_MODES, default="none")
    one.add_argument("--release-form", action="store_true", help="the release's RNL / NL blocks")
    args = parser.parse_args(argv)
    if args.repeats is None:
        cpu = args.device == "cpu"
        args.repeats = (3 if cpu else 20) if args.command == "rnl" else (1 if cpu else 20)
    return args


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``train-one``."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default="fp32", help="bf16 / fp16: autocast"
    )
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--size", type=int, default=224, help="input H = W")
    parser.add_argument(
        "--repeats", type=int, help="timed steps per run after 1 warm-up (default: 1 CPU, 20 CUDA)"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="2D convolutions channels-last (as train)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")


class MemoryProbe:
    """Peak memory above a baseline: CUDA allocator statistics, or the CPU resident set."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"/proc/self/status has no {field}")

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.baseline = self._status_kib("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def peak_extra(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        return self._status_kib("VmHWM") * 1024 - self.baseline


def build_block(impl: str, channels: int, kernel: list[int]) -> nn.Module:
    """Ours with aggregation form ``impl``, or the release-style reference; same weights."""
    torch.manual_seed(0)
    if impl == REFERENCE:
        return ReferenceRNLBlock.from_block(RNLBlock(channels, tuple(kernel)))
    return RNLBlock(channels, tuple(kernel), aggregation=impl)


def make_step(block: nn.Module, x: Tensor, upstream: Tensor, dtype: str) -> Callable[[], None]:
    """One training step of ``block`` on ``x``: forward (autocast for bf16) and backward."""
    device = x.device

    def step() -> None:
        block.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device.type, DTYPES[dtype], enabled=dtype != "fp32"):
            out = block(x)
        out.backward(upstream)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def clear_gradients(block: nn.Module, x: Tensor) -> None:
    block.zero_grad(set_to_none=True)
    x.grad = None
    gc.collect()


def measure_rnl(args: argparse.Namespace, frames: int, impls: list[str]) -> dict[str, dict]:
    """``{impl: {"time": median seconds, "peak_extra": bytes}}`` at ``T = frames``."""
    device = torch.device(args.device)
    shape = (args.batch, args.channels, frames, args.size, args.size)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    upstream = torch.randn(shape, generator=generator).to(device)
    blocks = {impl: build_block(impl, args.channels, args.kernel).to(device) for impl in impls}
    steps = {impl: make_step(blocks[impl], x, upstream, args.dtype) for impl in impls}
    for impl in impls:  # load libraries and start thread pools outside the measurements
        tiny = x[:1, :, :1, :8, :8].detach().requires_grad_(True)
        make_step(blocks[impl], tiny, torch.ones_like(tiny), args.dtype)()
    memory = MemoryProbe(device)
    peaks = {}
    for impl in impls:  # also the warm-up at this shape
        clear_gradients(blocks[impl], x)
        memory.start()
        steps[impl]()
        peaks[impl] = memory.peak_extra()
        clear_gradients(blocks[impl], x)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(args.repeats):
        for impl in impls:
            started = time.perf_counter()
            steps[impl]()
            times[impl].append(time.perf_counter() - started)
    return {
        impl: {"time": statistics.median(times[impl]), "peak_extra": peaks[impl]} for impl in impls
    }


def benchmark_rnl(args: argparse.Namespace) -> None:
    impls = [REFERENCE, *args.forms]
    print(
        f"RNL block forward+backward, N={args.batch} C={args.channels} "
        f"H=W={args.size} kernel={'x'.join(map(str, args.kernel))}, {args.dtype}, "
        f"median of {args.repeats} interleaved rounds after 1 warm-up\n"
        f"{machine_description(args.device)}; torch {torch.__version__}\n"
    )
    header = ["T", "implementation", "time (s)", "time / ref", "peak extra (MiB)", "memory / ref"]
    lines = []
    for frames in args.frames:
        results = measure_rnl(args, frames, impls)
        reference = results[REFERENCE]
        for impl, result in results.items():
            lines.append(
                [
                    str(frames),
                    "reference (release)" if impl == REFERENCE else f"ours, {impl}",
                    f"{result['time']:.3f}",
                    f"{result['time'] / reference['time']:.2f}",
                    f"{result['peak_extra'] / MIB:.0f}",
                    f"{result['peak_extra'] / reference['peak_extra']:.2f}",
                ]
            )
    print(format_table(header, lines, args.markdown))


def build_training_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The configured model with random weights (nothing is downloaded), in training mode."""
    cfg = compose_config(
        [
            "+experiment=rnl_sthv1",
            f"data.num_segments={args.frames}",
            "model.weights=null",
            f"model.activation_checkpointing={args.checkpointing}",
            *args.overrides,
        ]
    )
    model = build_model(cfg, load_weights=False)
    if args.release_form:
        model = release_form(model)
    model.to(device).train()
    if args.channels_last:
        to_channels_last(model)
    return torch.compile(model) if args.compile else model


def measure_training(args: argparse.Namespace) -> dict:
    """``{"times": [seconds per timed step], "peak": bytes}`` of SGD steps on random clips."""
    device = torch.device(args.device)
    model = build_training_model(args, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, DTYPES[args.dtype], enabled=args.dtype != "fp32"):
            loss = nn.functional.cross_entropy(model(clips).float(), labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    memory = MemoryProbe(device)
    memory.start()
    memory.baseline = 0  # report the whole footprint: weights, optimiser state, activations
    step()  # warm-up; creates the optimiser state
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"times": times, "peak": memory.peak_extra()}


def train_one(args: argparse.Namespace) -> None:
    """Measure one configuration and print its result as one JSON line."""
    try:
        result = measure_training(args)
    except (MemoryError, RuntimeError) as error:  # CPU allocators raise RuntimeError
        if not isinstance(error, MemoryError) and "allocate" not in str(error):
            raise
        print(json.dumps({"error": "out of memory", "detail": str(error)[:300]}))
        sys.exit(OUT_OF_MEMORY_EXIT)
    print(json.dumps(result))


@dataclass(frozen=True)
class TrainingConfig:
    """One row of the ``train`` table."""

    model: str
    overrides: tuple[str, ...]
    frames: int
    checkpointing: str
    release_form: bool

    def child_argv(self, args: argparse.Namespace) -> list[str]:
        argv = [
            *("--device", args.device, "--dtype", args.dtype, "--batch", str(args.batch)),
            *("--size", str(args.size), "--repeats", str(args.repeats)),
            *("--frames", str(self.frames), "--checkpointing", self.checkpointing),
            "--overrides",
            *self.overrides,
        ]
        flags = [
            ("--release-form", self.release_form),
            ("--channels-last", args.channels_last),
            ("--compile", args.compile),
        ]
        return argv + [flag for flag, on in flags if on]


def training_configs(args: argparse.Namespace) -> list[TrainingConfig]:
    configs = []
    for frames in args.frames:
        for spec in args.models:
            name, _, overrides = spec.partition("=")
            own = tuple(o for o in overrides.split(",") if o)
            if args.release_form:
                configs.append(TrainingConfig(name, own, frames, "none", True))
            for mode in args.checkpointing:
                configs.append(TrainingConfig(name, own, frames, mode, False))
    return configs


def run_in_subprocess(config: TrainingConfig, args: argparse.Namespace) -> dict:
    """``train-one`` in a fresh process: its result, or ``{"error": ...}``."""

    def cap_memory() -> None:
        cap = int(args.memory_cap * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [sys.executable, str(Path(__file__).resolve()), "train-one", *config.child_argv(args)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        preexec_fn=cap_memory if args.memory_cap else None,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        return json.loads(lines[-1])
    reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"failed (exit status {done.returncode})", "detail": reason[:300]}


def training_row(
    config: TrainingConfig, results: list[dict], baselines: dict[tuple, dict]
) -> list[str]:
    name = f"{config.model} (release form)" if config.release_form else config.model
    mode = "-" if config.release_form else config.checkpointing
    failed = next((r["error"] for r in results if "error" in r), None)
    if failed:
        return [name, str(config.frames), mode, failed, "", "", "", ""]
    seconds = statistics.median(t for r in results for t in r["times"])
    peak = max(r["peak"] for r in results)
    own = baselines.get((config.model, config.frames, "none"))
    release = baselines.get((config.model, config.frames, "release"))

    def ratio(value: float, baseline: dict | None, key: str) -> str:
        return f"{value / baseline[key]:.2f}" if baseline else ""

    return [
        name,
        str(config.frames),
        mode,
        f"{seconds:.2f}",
        ratio(seconds, own, "seconds"),
        f"{peak / GIB:.2f}",
        ratio(peak, own, "peak"),
        ratio(peak, release, "peak"),
    ]


def benchmark_training(args: argparse.Namespace) -> None:
    print(
        f"Training steps (forward, loss, backward, SGD), batch {args.batch}, "
        f"{args.size}x{args.size}, {args.dtype}; each configuration in a fresh process, "
        f"{args.rounds} round(s) of 1 warm-up + {args.repeats} timed step(s), median time\n"
        f"{machine_description(args.device)}; torch {torch.__version__}"
        + (f"; address-space cap {args.memory_cap:g} GiB" if args.memory_cap else "")
        + "\n"
    )
    configs = training_configs(args)
    results: dict[TrainingConfig, list[dict]] = {config: [] for config in configs}
    for _ in range(args.rounds):
        for config in configs:
            results[config].append(run_in_subprocess(config, args))
    baselines: dict[tuple, dict] = {}
    for config, runs in results.items():
        if not any("error" in r for r in runs):
            key = "release" if config.release_form else config.checkpointing
            baselines[config.model, config.frames, key] = {
                "seconds": statistics.median(t for r in runs for t in r["times"]),
                "peak": max(r["peak"] for r in runs),
            }
    header = [
        "model",
        "T",
        "checkpointing",
        "s / step",
        "time / none",
        "peak memory (GiB)",
        "memory / none",
        "memory / release",
    ]
    lines = [training_row(config, runs, baselines) for config, runs in results.items()]
    print(format_table(header, lines, args.markdown))
    for config, runs in results.items():
        for run in runs:
            if "detail" in run:
                mode = "release form" if config.release_form else config.checkpointing
                where = f"{config.model}, T = {config.frames}, {mode}"
                print(f"\n{where}: {run['detail']}")
    print(f"\nload average at the end: {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())}")


def reexec_with_direct_malloc() -> None:
    """Restart this process with glibc returning allocations above 64 KiB to the system."""
    if os.environ.get(MMAP_THRESHOLD) != "65536":
        env = {**os.environ, MMAP_THRESHOLD: "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        reexec_with_direct_malloc()
    if args.command == "train":
        benchmark_training(args)
    elif args.command == "train-one":
        train_one(args)
    else:
        benchmark_rnl(args)


if __name__ == "__main__":
    main(sys.argv[1:])
