"""Mixed precision against float32 and a float64 reference, on trained checkpoints.

    python tools/benchmark_amp.py outputs/demo/last.pt [more checkpoints] [--markdown]
    python tools/benchmark_amp.py outputs/demo/last.pt --settings fp32 bf16 --row-clips 2

For each checkpoint (its stored config and weights; the dataset at its ``data.root``), under
every precision setting (``rnlvideo.analysis.precision.SETTINGS``: fp32; bf16 / fp16 autocast
with the attention in the autocast dtype or in fp32):

- **logits over the val set** (eval mode, 1 view per video): max |difference| and relative
  L2 error against float64, top-1, and how many predictions differ from float64's;
- **one training step's gradient** (training mode without dropout, ``--grad-clips`` training
  clips): the loss, the relative L2 error of the whole gradient and of the RNL / NL blocks'
  parameters;
- **attention rows** of every RNL / NL block for every query position of ``--row-clips`` val
  clips: total-variation distance to float64's rows (mean, max) and agreement of the most
  attended key; with the reference's sharpness (mean peak weight x number of keys) and largest
  unscaled dot product (fp16 overflows at 65504).

``--json PATH`` also writes every figure.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from rnlvideo.analysis.precision import (
    FP16_MAX,
    REFERENCE,
    SETTINGS,
    attention_rows,
    eval_logits,
    gradient_errors,
    logit_errors,
    max_attention_logit,
    row_errors,
    step_gradients,
)
from rnlvideo.config import build_dataset
from rnlvideo.engine.trained_model import load_trained_model
from rnlvideo.machine import machine_description
from rnlvideo.models.cost import format_table

SETTING_NAMES = [s.name for s in SETTINGS]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="checkpoints written by tools/train.py")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--settings", nargs="+", choices=SETTING_NAMES, default=SETTING_NAMES, help="to compare"
    )
    parser.add_argument("--val-clips", type=int, help="first N val videos (default: all)")
    parser.add_argument("--grad-clips", type=int, default=16, help="training clips of the step")
    parser.add_argument("--row-clips", type=int, default=4, help="val clips for attention rows")
    parser.add_argument("--batch-size", type=int, default=32, help="eval batch")
    parser.add_argument("--markdown", action="store_true", help="markdown tables")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def first_clips(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` samples of ``dataset`` stacked: clips ``(N, C, T, H, W)``, labels."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])


def measure(path: str, args: argparse.Namespace) -> dict:
    """Every figure of one checkpoint, by setting."""
    trained = load_trained_model(path)
    model = trained.model.to(args.device)
    val = build_dataset(trained.cfg, "val")
    count = len(val) if args.val_clips is None else min(args.val_clips, len(val))
    loader = DataLoader(torch.utils.data.Subset(val, range(count)), batch_size=args.batch_size)
    labels = torch.cat([batch[1] for batch in loader])
    grad_clips, grad_labels = first_clips(build_dataset(trained.cfg, "train"), args.grad_clips)
    row_clips, _ = first_clips(val, args.row_clips)

    settings = [REFERENCE, *(s for s in SETTINGS if s.name in args.settings)]
    reference: dict = {}
    results: dict = {
        "checkpoint": path,
        "input": f"{trained.cfg.data.num_segments} x {trained.cfg.data.input_size}px",
        "val_videos": count,
        "max_logit": max_attention_logit(model, row_clips),
        "settings": {},
    }
    for setting in settings:
        started = time.perf_counter()
        logits = eval_logits(model, (clips for clips, _ in loader), setting)
        loss, grads = step_gradients(model, grad_clips, grad_labels, setting)
        rows = attention_rows(model, row_clips, setting)
        if setting is REFERENCE:
            reference = {"logits": logits, "loss": loss, "grads": grads, "rows": rows}
        results["settings"][setting.name] = {
            "logits": logit_errors(logits, reference["logits"], labels),
            "loss": loss,
            "loss_abs_diff": abs(loss - reference["loss"]),
            "gradient": gradient_errors(grads, reference["grads"]),
            "gradient_nonlocal": gradient_errors(grads, reference["grads"], "nonlocal_blocks."),
            "rows": {key: row_errors(rows[key], reference["rows"][key]) for key in rows},
            "seconds": time.perf_counter() - started,
        }
        print(f"[{path}] {setting.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return results


def tables(results: list[dict], markdown: bool) -> str:
    logit_lines, grad_lines, row_lines = [], [], []
    for result in results:
        model = f"{result['checkpoint']} ({result['input']})"
        for name, figures in result["settings"].items():
            logits, grad, nonlocal_grad = (
                figures["logits"],
                figures["gradient"],
                figures["gradient_nonlocal"],
            )
            logit_lines.append(
                [
                    model,
                    name,
                    f"{logits['max_abs']:.2e}",
                    f"{logits['rel_l2']:.2e}",
                    f"{logits['top1']:.1f}",
                    f"{logits['flips']} / {result['val_videos']}",
                ]
            )
            grad_lines.append(
                [
                    model,
                    name,
                    f"{figures['loss_abs_diff']:.2e}",
                    f"{grad['rel_l2']:.2e}",
                    f"{nonlocal_grad['rel_l2']:.2e}",
                    f"{grad['cosine']:.6f}",
                ]
            )
            for block, rows in figures["rows"].items():
                largest = result["max_logit"].get(block, float("nan"))
                row_lines.append(
                    [
                        model,
                        block,
                        name,
                        f"{rows['peak_x_uniform']:.1f}",
                        f"{largest:.0f} ({largest / FP16_MAX:.2f} of fp16 max)",
                        f"{rows['tv_mean']:.2e}",
                        f"{rows['tv_max']:.2e}",
                        f"{100 * rows['argmax_agree']:.1f}",
                    ]
                )
    parts = [
        "Val logits against float64 (eval mode):",
        format_table(
            ["model", "precision", "max |dlogit|", "rel. L2", "top-1 %", "top-1 flips"],
            logit_lines,
            markdown,
        ),
        "\nOne training step's gradient against float64:",
        format_table(
            ["model", "precision", "|dloss|", "grad rel. L2", "RNL/NL grad rel. L2", "cosine"],
            grad_lines,
            markdown,
        ),
        "\nAttention rows (every query of the row clips) against float64:",
        format_table(
            [
                "model",
                "block",
                "precision",
                "peak x uniform",
                "max |q.k|",
                "TV mean",
                "TV max",
                "argmax agree %",
            ],
            row_lines,
            markdown,
        ),
    ]
    return "\n".join(parts)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    print(f"{machine_description(args.device)}; torch {torch.__version__}; device {args.device}")
    results = [measure(path, args) for path in args.checkpoints]
    print(tables(results, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
