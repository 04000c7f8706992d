"""Speed and memory benchmarks.

    python tools/benchmark.py rnl                                   # CPU, T = 8 and 16, fp32
    python tools/benchmark.py rnl --device cuda --dtype bf16 --markdown
    python tools/benchmark.py rnl --frames 16 --forms auto grouped --repeats 2
    python tools/benchmark.py train --frames 8 16 --batch 1             # TSM-R50 vs RNL-TSM-R50
    python tools/benchmark.py train --device cuda --dtype bf16 --batch 8 --markdown

``train``: full training steps (forward, loss, backward, SGD update) of whole models built from
Hydra overrides (default: TSM-R50 and RNL-TSM-R50 of ``+experiment=rnl_sthv1``) at 224x224:
clips/s and peak memory (on CPU: the process's peak resident set during the steps, model and
optimiser state included).

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
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnlvideo.config import build_model, compose_config  # noqa: E402
from rnlvideo.models import RNLBlock  # noqa: E402
from rnlvideo.models.cost import format_table  # noqa: E402
from rnlvideo.models.nonlocal_blocks import RegionAggregation  # noqa: E402
from rnlvideo.models.reference import ReferenceRNLBlock  # noqa: E402

REFERENCE = "reference"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MIB = 2**20
MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rnl = commands.add_parser("rnl", help="one RNL block at the res3 shape, ours vs reference")
    rnl.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    rnl.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="bf16: autocast")
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
    train = commands.add_parser("train", help="whole-model training steps: clips/s, memory")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="bf16: autocast")
    train.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="T values")
    train.add_argument("--batch", type=int, default=1, help="clips per step")
    train.add_argument("--size", type=int, default=224, help="input H = W")
    train.add_argument(
        "--models",
        nargs="+",
        default=["TSM-R50=placement=none", "RNL-TSM-R50=placement=rnl_official"],
        help="NAME=OVERRIDE[,OVERRIDE...] added to +experiment=rnl_sthv1",
    )
    train.add_argument("--repeats", type=int, help="timed steps (default: 2 on CPU, 20 on CUDA)")
    train.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    if args.repeats is None:
        cpu = args.device == "cpu"
        args.repeats = (3 if cpu else 20) if args.command == "rnl" else (2 if cpu else 20)
    return args


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


def machine_description(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = "CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}"


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


def build_training_model(overrides: list[str], frames: int, device: torch.device) -> nn.Module:
    """The configured model with random weights (nothing is downloaded)."""
    cfg = compose_config(
        ["+experiment=rnl_sthv1", f"data.num_segments={frames}", "model.weights=null", *overrides]
    )
    return build_model(cfg, load_weights=False).to(device).train()


def measure_training(args: argparse.Namespace, overrides: list[str], frames: int) -> dict:
    """``{"clips_per_s", "peak": bytes}`` of full SGD training steps on random clips."""
    device = torch.device(args.device)
    model = build_training_model(overrides, frames, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    clips = torch.randn(args.batch, 3, frames, args.size, args.size, device=device)
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
    return {"clips_per_s": args.batch / statistics.median(times), "peak": memory.peak_extra()}


def benchmark_training(args: argparse.Namespace) -> None:
    print(
        f"Training steps (forward, loss, backward, SGD), batch {args.batch}, "
        f"{args.size}x{args.size}, {args.dtype}, median of {args.repeats} steps after 1 warm-up\n"
        f"{machine_description(args.device)}; torch {torch.__version__}\n"
    )
    header = ["model", "T", "clips/s", "s / clip", "peak memory (GiB)"]
    lines = []
    for spec in args.models:
        name, _, overrides = spec.partition("=")
        for frames in args.frames:
            result = measure_training(args, [o for o in overrides.split(",") if o], frames)
            lines.append(
                [
                    name,
                    str(frames),
                    f"{result['clips_per_s']:.3f}",
                    f"{1 / result['clips_per_s']:.2f}",
                    f"{result['peak'] / 2**30:.2f}",
                ]
            )
            gc.collect()
    print(format_table(header, lines, args.markdown))


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
    else:
        benchmark_rnl(args)


if __name__ == "__main__":
    main(sys.argv[1:])
