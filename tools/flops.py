"""Parameters and GMACs per view of a configured model, per block.

    python tools/flops.py +experiment=rnl_sthv1                  # RNL TSM-R50, 8 frames, 224 px
    python tools/flops.py +experiment=rnl_sthv1 placement=none   # plain TSM-R50
    python tools/flops.py +experiment=rnl_sthv1 data.num_segments=16 --markdown
    python tools/flops.py model=x3d_s data=sthv1 data.num_segments=13 data.input_size=160

The model is built from the Hydra overrides with random weights (``model.weights`` is forced to
null: nothing is downloaded) and counted on one view ``(1, 3, T, S, S)``, ``S =
data.input_size``, ``T = data.num_segments`` (SlowFast: the ``[slow, fast]`` pair that
``data.slowfast_alpha`` makes), with torch's FlopCounterMode; GMAC = GFLOPs / 2. TSM ResNets are
counted per residual stage and inserted block, pytorchvideo models per block. Models with RNL /
NL blocks also get the cost of the official release's form of the same network (masked grouped
aggregation conv, materialised affinity). ``--device meta`` (default) counts without computing
anything.
"""

import argparse
import sys

import torch
from omegaconf import DictConfig

from rnlvideo.config import build_model, compose_config
from rnlvideo.data.pathways import with_pathways
from rnlvideo.models import NLBlock, RNLBlock, TSMResNet
from rnlvideo.models.cost import (
    CostRow,
    block_parts,
    cost_table,
    format_table,
    release_form,
    tsm_resnet_cost,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=rnl_sthv1")
    parser.add_argument(
        "--device",
        default="meta",
        help="where the counted forward runs: meta (no compute, default), cpu or cuda",
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args(argv)


def cost_lines(ours: list[CostRow], release: list[CostRow] | None) -> list[list[str]]:
    lines = []
    for index, row in enumerate(ours):
        line = [row.name, f"{row.params:,}", f"{row.macs / 1e9:.2f}"]
        if release is not None:
            theirs = release[index]
            line += [f"{theirs.params:,}", f"{theirs.macs / 1e9:.2f}"]
        lines.append(line)
    return lines


def one_view(cfg: DictConfig, device: str) -> torch.Tensor | list[torch.Tensor]:
    """A zero view ``(1, 3, T, S, S)`` of the data config; ``[slow, fast]`` with
    ``data.slowfast_alpha``."""
    size = int(cfg.data.input_size)
    clip = torch.zeros(1, 3, int(cfg.data.num_segments), size, size, device=device)
    return with_pathways(clip, cfg.data.get("slowfast_alpha"))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    cfg = compose_config(args.overrides)
    with torch.device(args.device):
        model = build_model(cfg, load_weights=False)
    model.eval()
    input_size = int(cfg.data.input_size)
    view = one_view(cfg, args.device)
    release = None
    if isinstance(model, TSMResNet):
        ours = tsm_resnet_cost(model, input_size)
        if any(isinstance(m, (RNLBlock, NLBlock)) for m in model.modules()):
            release = tsm_resnet_cost(release_form(model), input_size)
    else:
        ours = cost_table(model, view, block_parts(model))

    header = ["part", "params", "GMAC"]
    if release is not None:
        header += ["release params", "release GMAC"]
    pathways = view if isinstance(view, list) else [view]
    shapes = " + ".join(str(tuple(pathway.shape)) for pathway in pathways)
    print(
        f"overrides: {' '.join(args.overrides) or '(none)'}\n"
        f"one view {shapes}, {cfg.model.num_classes} classes, counted on {args.device}; "
        "GMAC = GFLOPs / 2 (convolutions, matrix products and attention)"
    )
    if args.device == "cpu":
        print(
            "attention: counted by rnlvideo.models.cost (torch has no formula for its CPU kernel)"
        )
    print()
    print(format_table(header, cost_lines(ours, release), args.markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
