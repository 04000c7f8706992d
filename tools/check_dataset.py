"""Check a dataset's lists against the disk, with the same Hydra config as training.

    python tools/check_dataset.py +experiment=rnl_sthv1 data.root=/data/sthv1
    python tools/check_dataset.py data=sthv2 data.root=/data/sthv2 --split val --decode

Reports missing frame folders / videos, frame counts that differ from the disk, absent frame
files, labels out of range (data.num_classes, category.txt), paths that are absolute or leave
the data root, empty lists, videos listed twice and malformed list lines (the same checks that
stop training at start), and counts the videos shorter than data.min_frames; with --decode
also unreadable JPEGs (every frame of every video is decoded) or videos (opened, frame count
compared, first and last frames decoded). Prints a summary per split and the first
--max-problems problems. Exit status: 0 all good, 1 problems found.
"""

import argparse
import logging
import os
import sys

from rnlvideo.config import compose_config
from rnlvideo.data.checks import (
    check_config_categories,
    check_split,
    format_report,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for tools/train.py")
    parser.add_argument("--split", choices=("train", "val", "all"), default="all")
    parser.add_argument("--max-problems", type=int, default=20, help="problems listed per split")
    parser.add_argument("--decode", action="store_true", help="decode frames / probe videos")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="checking threads"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    cfg = compose_config(args.overrides)
    splits = ("train", "val") if args.split == "all" else (args.split,)
    reports = [check_split(cfg, split, args.decode, args.workers) for split in splits]
    for report in reports:
        print(format_report(report, args.max_problems))
    category_problems = check_config_categories(cfg)
    for problem in category_problems:
        print(f"[{problem.kind}] {problem.where}: {problem.detail}")
    if any(p.kind in ("list", "missing") for r in reports for p in r.problems):
        print(f"\nHow to prepare the data:\n{cfg.data.get('prepare_hint', '')}")
    return 0 if all(report.ok for report in reports) and not category_problems else 1


if __name__ == "__main__":
    sys.exit(main())
