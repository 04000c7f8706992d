"""Generate the synthetic Something-Something-V1-format dataset (no-op when already complete).

Example:
    python tools/make_synthetic.py --root data/synthetic --seed 0 --workers 2
"""

from __future__ import annotations

import argparse
import logging

from rnlvideo.data.synthetic import (
    dataset_is_complete,
    generate_synthetic_dataset,
    read_manifest,
)

logger = logging.getLogger("make_synthetic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults match the library's defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthetic", help="output folder")
    parser.add_argument("--videos-per-class-train", type=int, default=48)
    parser.add_argument("--videos-per-class-val", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-frames", type=int, default=30)
    parser.add_argument("--max-frames", type=int, default=50)
    parser.add_argument("--height", type=int, default=100, help="frame height (px)")
    parser.add_argument("--min-width", type=int, default=120, help="narrowest frame width (px)")
    parser.add_argument("--max-width", type=int, default=176, help="widest frame width (px)")
    parser.add_argument("--num-distractors", type=int, default=2)
    parser.add_argument("--noise-std", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the dataset is complete"
    )
    return parser.parse_args(argv)


def _warn_if_parameters_differ(root: str, args: argparse.Namespace) -> None:
    """A complete dataset made with other parameters is kept, but say so."""
    manifest = read_manifest(root) or {}
    requested = {
        "seed": args.seed,
        "videos_per_class_train": args.videos_per_class_train,
        "videos_per_class_val": args.videos_per_class_val,
    }
    differing = {
        key: manifest.get(key) for key, value in requested.items() if manifest.get(key) != value
    }
    if differing:
        logger.warning("%s was generated with %s; use --force to regenerate", root, differing)


def main(argv: list[str] | None = None) -> None:
    """Generate the dataset unless it is already complete (or --force)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    if dataset_is_complete(args.root) and not args.force:
        logger.info("Synthetic dataset already complete at %s; nothing to do", args.root)
        _warn_if_parameters_differ(args.root, args)
        return
    summary = generate_synthetic_dataset(
        args.root,
        videos_per_class_train=args.videos_per_class_train,
        videos_per_class_val=args.videos_per_class_val,
        seed=args.seed,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        height=args.height,
        min_width=args.min_width,
        max_width=args.max_width,
        num_workers=args.workers,
        num_distractors=args.num_distractors,
        noise_std=args.noise_std,
        overwrite=True,
    )
    logger.info(
        "Wrote %d classes, %d train + %d val videos, %d frames to %s in %.1f s",
        len(summary.classes),
        summary.num_train_videos,
        summary.num_val_videos,
        summary.num_frames,
        summary.root,
        summary.seconds,
    )


if __name__ == "__main__":
    main()
