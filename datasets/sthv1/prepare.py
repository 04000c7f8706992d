"""Make the TSM lists of Something-Something V1 from the official CSVs and the frames on disk.

    python datasets/sthv1/prepare.py --root $STHV1_ROOT [--frames-dir 20bn-something-something-v1]

Writes ``category.txt``, ``train_videofolder.txt`` and ``val_videofolder.txt`` in ``--root``
(see datasets/sthv1/README.md). Exit status: 0 written; 1 videos missing on disk (nothing
written unless ``--allow-missing``); 2 unreadable annotations (the error names file:line).
"""

import argparse
import logging
import sys

from rnlvideo.data.annotations import prepare_sthv1, write_prepared_lists

logger = logging.getLogger("prepare_sthv1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with the CSVs and the frames")
    parser.add_argument("--frames-dir", default="20bn-something-something-v1")
    parser.add_argument(
        "--allow-missing", action="store_true", help="leave videos missing on disk out"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        prepared = prepare_sthv1(args.root, args.frames_dir)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    return 0 if write_prepared_lists(prepared, args.root, args.allow_missing) else 1


if __name__ == "__main__":
    sys.exit(main())
