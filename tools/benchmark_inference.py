"""Inference: how exact the exports are, and how fast eager, torch.compile and onnxruntime run.

    python tools/benchmark_inference.py exactness                   # RNL-TSM-R50, 8 frames, 224
    python tools/benchmark_inference.py exactness --more-clips 16
    python tools/benchmark_inference.py exactness --ckpt outputs/rnl_sthv1/best.pt
    python tools/benchmark_inference.py speed --batch 1 8 --repeats 3 --markdown
    python tools/benchmark_inference.py speed --overrides +experiment=rnl_sthv1 data.num_segments=16

``exactness`` exports a checkpoint with :func:`rnlvideo.export` to ONNX and to torch.export
(``.pt2``) and prints, for batch 1 and 3 (fp32), the largest logit difference from the eager
model that each export's check measured, whether it is within 1e-4 absolute, how the check
decided, the export time, and how far the export and the eager fp32 model each are from the
model's fp64 logits on the same clips (how exact fp32 itself is). ``--more-clips N`` also runs
each written file and eager on N other clips, one at a time, and prints the distribution of
the per-clip largest difference. ``speed`` times the
forward pass of the same model (fp32, CPU, no gradients) in eager mode, under
``torch.compile`` (inductor, one compilation per batch size, its time reported apart) and as the
exported ONNX file in onnxruntime (CPU provider), for each ``--batch``: clips per second and
time per clip, the median of ``--repeats`` rounds in which the runtimes take turns (a changing
background load falls on all alike), after one warm-up call each.

Without ``--ckpt`` the model is RNL-TSM-R50 of ``+experiment=rnl_sthv1`` (``--overrides``
changes it) with random weights that exercise every part (:func:`make_nondegenerate`: the
zero-initialised non-local outputs and channel gate switched on, BatchNorm statistics of the
random input, a classifier with logits of a few units), saved as a checkpoint in a temporary
directory the way the trainer saves one. Nothing is downloaded.
"""

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import rnlvideo
from rnlvideo.checkpoint_format import checkpoint_metadata
from rnlvideo.config import build_model, compose_config, portable_config
from rnlvideo.data.pathways import with_pathways
from rnlvideo.deploy import FORMATS, ExportedClassifier, ExportError, metadata_for
from rnlvideo.deploy.checks import CHECK_BATCHES, TOLERANCE, Comparison, check_clips
from rnlvideo.deploy.exporting import deployable
from rnlvideo.files import save_atomic
from rnlvideo.models import ChannelGate

DEFAULT_OVERRIDES = ["+experiment=rnl_sthv1"]
RUNTIMES = ("eager", "compile", "onnxruntime")
LOGIT_STD = 3.0
CALIBRATION_SEED = 1000  # the clips of make_nondegenerate; check_clips draws with seeds 0, 1, ...


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("exactness", "export to ONNX and .pt2; the measured logit differences"),
        ("speed", "clips/s of eager, torch.compile and onnxruntime"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--ckpt", type=Path, help="a checkpoint (default: random weights)")
        command.add_argument(
            "--overrides", nargs="*", default=DEFAULT_OVERRIDES, help="the model without --ckpt"
        )
        command.add_argument("--out", type=Path, help="directory of the exported files")
        command.add_argument("--seed", type=int, default=0)
    commands.choices["exactness"].add_argument(
        "--more-clips", type=int, default=0, help="also compare the files on this many clips"
    )
    speed = commands.choices["speed"]
    speed.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="clips per call")
    speed.add_argument("--repeats", type=int, default=3, help="timed rounds")
    speed.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    speed.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args(argv)


@torch.no_grad()
def make_nondegenerate(model: nn.Module, batches: Sequence[Any], seed: int = 0) -> nn.Module:
    """Give a freshly built model random weights in which every part matters.

    A new model's non-local blocks and channel gates are the identity (their output BatchNorm /
    last Linear start at zero) and its classifier gives logits near zero, so an export that
    got them wrong would still match. Here every BatchNorm gets a random affine transform
    (weight in [0.5, 1.5], bias N(0, 0.1)), and the 2-D / 3-D ones the statistics of their
    input over ``batches`` (model inputs, e.g. 4 batches of 2 clips ``(2, 3, T, H, W)``;
    averaged over the batches, measured in train mode), so that activations keep the scale of
    a trained network. Some channels are nearly constant within a clip (a random non-local
    block attends almost uniformly), so their statistics need several clips. A BatchNorm1d
    (one value per clip) keeps mean 0 and variance 1. The channel gates' last Linear is
    initialised like any Linear, and the classifier (the last Linear) gets normal weights
    scaled to give logits of standard deviation 3 over ``batches``, as a trained classifier's.
    Returns ``model`` in eval mode.
    """
    torch.manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    measured = [m for m in norms if not isinstance(m, nn.BatchNorm1d)]
    for module in model.modules():
        if isinstance(module, ChannelGate):
            module.W_v2.reset_parameters()
    for norm in norms:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.normal_(norm.bias, std=0.1)
        norm.reset_running_stats()
    for norm in measured:
        norm.momentum = None  # a cumulative average over the batches
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    model.train()
    for norm in set(norms) - set(measured):
        norm.eval()
    for batch in batches:
        model(batch)
    for norm in measured:
        norm.momentum = 0.1
    model.eval()
    classifier.weight *= LOGIT_STD / torch.cat([model(batch) for batch in batches]).std()
    return model


def random_checkpoint(overrides: list[str], directory: Path, seed: int) -> Path:
    """A checkpoint of the model of ``overrides`` with :func:`make_nondegenerate` weights
    (BatchNorm statistics from 4 batches of 2 random clips, drawn with the seed
    ``CALIBRATION_SEED + seed``: other clips than an export is checked on, so that the check
    sees the model as it is on clips it was not fitted to)."""
    cfg = compose_config([*overrides, "model.weights=null"])
    torch.manual_seed(seed)
    model = build_model(cfg, load_weights=False)
    shape = (2, 3, cfg.data.num_segments, cfg.data.input_size, cfg.data.input_size)
    generator = torch.Generator().manual_seed(CALIBRATION_SEED + seed)
    batches = [torch.randn(shape, generator=generator) for _ in range(4)]
    alpha = cfg.data.get("slowfast_alpha")
    make_nondegenerate(model, [with_pathways(b, alpha) for b in batches], seed)
    names = [f"class {i}" for i in range(cfg.data.num_classes)]
    path = directory / "random.pt"
    state = {"model": model.state_dict(), **checkpoint_metadata(portable_config(cfg), names)}
    save_atomic(state, path)
    return path


def verdict(c: Comparison) -> str:
    """How the export's check decided for one batch."""
    if c.difference <= c.allowed(TOLERANCE):
        return "passed: within 1e-4 x max(1, logit)"
    if c.within(TOLERANCE):
        return "passed: as exact as eager fp32 (fp64)"
    return "refused"


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def exactness(ckpt: Path, out: Path, more_clips: int, seed: int) -> None:
    """Export ``ckpt`` to both formats; print what each export's check measured, the absolute
    1e-4 criterion, and how far the export and the eager fp32 model each are from the fp64
    logits on the same clips; with ``more_clips``, the per-clip differences on other clips."""
    trained = rnlvideo.load_model(ckpt)
    metadata = metadata_for(trained.cfg, trained.class_names)
    model = deployable(trained, trained.cfg.data.get("slowfast_alpha"))
    exact_model = copy.deepcopy(model).double()
    clips = check_clips(metadata.input_shape, max(CHECK_BATCHES))  # the exports' check clips
    print(
        f"checkpoint {ckpt}: {metadata.model_name}, {metadata.num_segments} frames at "
        f"{metadata.crop_size}, {metadata.num_classes} classes"
    )
    with torch.no_grad():  # per batch, as the check runs eager
        exact = {b: exact_model(clips[:b].double()) for b in CHECK_BATCHES}
        eager = {b: model(clips[:b]) for b in CHECK_BATCHES}
    print(
        "| format | batch | largest abs. difference from eager | within 1e-4 | largest abs. "
        "logit | export from fp64 | eager fp32 from fp64 | the check | export + check |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    runners = {}
    for name, suffix in (("onnx", "onnx"), ("torch_export", "pt2")):
        path = out / f"model.{suffix}"
        try:
            report = rnlvideo.export(ckpt, path, format=name)
            comparisons, seconds = report.comparisons, f"{report.seconds:.0f} s"
            runners[name] = FORMATS[name].load(path)
        except ExportError as error:
            comparisons, seconds = error.comparisons, ""
            print(error)
        for c in comparisons:
            if name in runners:
                (logits,) = runners[name]([clips[: c.batch]])
                from_exact = f"{largest_difference(logits, exact[c.batch]):.2e}"
            else:
                from_exact = "" if c.exact_difference is None else f"{c.exact_difference:.2e}"
            print(
                f"| {name} | {c.batch} | {c.difference:.2e} | "
                f"{'yes' if c.difference <= 1e-4 else 'no'} | {c.scale:.2f} | {from_exact} | "
                f"{largest_difference(eager[c.batch], exact[c.batch]):.2e} | {verdict(c)} | "
                f"{seconds} |"
            )
    if more_clips:
        per_clip(model, runners, metadata, more_clips, seed + 1)


def per_clip(
    model: nn.Module, runners: dict[str, Any], metadata: Any, count: int, seed: int
) -> None:
    """Each written file against eager on ``count`` other clips, one clip at a time: the
    distribution of the largest |logit difference| per clip."""
    clips = check_clips(metadata.input_shape, count, seed=seed)
    differences: dict[str, list[float]] = {name: [] for name in runners}
    scales = []
    for clip in clips.split(1):
        with torch.no_grad():
            expected = model(clip)
        scales.append(expected.abs().max().item())
        for name, runner in runners.items():
            (logits,) = runner([clip])
            differences[name].append(largest_difference(logits, expected))
    print(
        f"{count} more clips (seed {seed}), batch 1, largest |logit| median "
        f"{statistics.median(scales):.2f}, max {max(scales):.2f}:"
    )
    print("| format | per-clip largest abs. difference: median | max | clips above 1e-4 |")
    print("|---|---|---|---|")
    for name, values in differences.items():
        above = sum(v > 1e-4 for v in values)
        print(
            f"| {name} | {statistics.median(values):.2e} | {max(values):.2e} | {above} of {count} |"
        )


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def speed(args: argparse.Namespace, ckpt: Path, out: Path) -> None:
    trained = rnlvideo.load_model(ckpt)
    cfg = trained.cfg
    model = deployable(trained, cfg.data.get("slowfast_alpha"))
    shape = (3, cfg.data.num_segments, cfg.data.input_size, cfg.data.input_size)
    calls: dict[tuple[str, int], Callable[[], object]] = {}
    setup: dict[tuple[str, int], float] = {}
    onnx = None
    if "onnxruntime" in args.runtimes:
        report = rnlvideo.export(ckpt, out / "model.onnx", format="onnx")
        onnx = ExportedClassifier(report.path)
    for batch in args.batch:
        clips = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(args.seed))
        for runtime in args.runtimes:
            if runtime == "eager":
                calls[runtime, batch] = lambda c=clips: model(c)
            elif runtime == "compile":
                compiled = torch.compile(model, dynamic=False)
                calls[runtime, batch] = lambda c=clips, m=compiled: m(c)
            else:
                calls[runtime, batch] = lambda c=clips: onnx(c)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    with torch.inference_mode():
        for key, call in calls.items():
            setup[key] = timed(call)  # warm-up; torch.compile compiles here
            print(f"warm-up {key[0]} batch {key[1]}: {setup[key]:.1f} s", flush=True)
        for round_index in range(args.repeats):
            for key, call in calls.items():
                times[key].append(timed(call))
            print(f"round {round_index + 1}/{args.repeats} done", flush=True)
    rows = []
    for (runtime, batch), measured in times.items():
        median = statistics.median(measured)
        rows.append((runtime, batch, batch / median, 1000 * median / batch, setup[runtime, batch]))
    print(
        f"{cfg.name}: {cfg.data.num_segments} frames at {cfg.data.input_size}, fp32, CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    if args.markdown:
        print("| runtime | batch | clips/s | ms per clip | first call (s) |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]:.3f} | {row[3]:.0f} | {row[4]:.1f} |")
    else:
        for row in rows:
            print(
                f"{row[0]:12s} batch {row[1]:2d}: {row[2]:7.3f} clips/s, {row[3]:7.0f} ms/clip, "
                f"first call {row[4]:.1f} s"
            )


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        ckpt = args.ckpt or random_checkpoint(args.overrides, Path(scratch), args.seed)
        if args.command == "exactness":
            exactness(ckpt, out, args.more_clips, args.seed)
        else:
            speed(args, ckpt, out)


if __name__ == "__main__":
    main(sys.argv[1:])
