"""Make Kinetics video lists from class folders: ``<root>/{train,val}/<class name>/<clip>.mp4``.

    python datasets/kinetics/prepare.py --root $KINETICS_ROOT [--train-dir train] [--val-dir val]

Writes ``category.txt`` (the sorted training class folders), ``train_videolist.txt`` and
``val_videolist.txt`` (``<split>/<class>/<clip> label``) in ``--root``; see
datasets/kinetics/README.md. Exit status: 0 written; 2 missing folders or unknown classes.
"""

import argparse
import logging
import sys

from rnlvideo.data.annotations import prepare_kinetics, write_prepared_lists

logger = logging.getLogger("prepare_kinetics")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder holding the split folders")
    parser.add_argument("--train-dir", default="train")
    parser.add_argument("--val-dir", default="val")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        prepared = prepare_kinetics(args.root, args.train_dir, args.val_dir)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    return 0 if write_prepared_lists(prepared, args.root, allow_missing=False) else 1


if __name__ == "__main__":
    sys.exit(main())
