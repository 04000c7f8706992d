"""Make video lists of Something-Something V2 from its JSON annotations and the .webm files.

    python datasets/sthv2/prepare.py --root $STHV2_ROOT [--videos-dir 20bn-something-something-v2]
                                     [--no-count] [--allow-missing] [--video-backend auto]

Writes ``category.txt``, ``train_videolist.txt`` and ``val_videolist.txt`` in ``--root``
(``<id>.webm num_frames label``; ``<id>.webm label`` with ``--no-count``). See
datasets/sthv2/README.md. Exit status: 0 written; 1 videos missing or unreadable (nothing
written unless ``--allow-missing``); 2 unreadable annotations.
"""

import argparse
import logging
import sys

from rnlvideo.data.annotations import prepare_sthv2, write_prepared_lists
from rnlvideo.data.decoders import VIDEO_BACKENDS

logger = logging.getLogger("prepare_sthv2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with the JSON files and videos")
    parser.add_argument("--videos-dir", default="20bn-something-something-v2")
    parser.add_argument(
        "--no-count",
        action="store_true",
        help="do not open the videos: write 'path label' lines (counted when loading)",
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="leave videos missing on disk out"
    )
    parser.add_argument(
        "--video-backend",
        default="auto",
        choices=("auto", *VIDEO_BACKENDS),
        help="decoder that counts the frames (every backend counts the same)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        prepared = prepare_sthv2(
            args.root, args.videos_dir, count=not args.no_count, video_backend=args.video_backend
        )
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        logger.error("%s", err)
        return 2
    return 0 if write_prepared_lists(prepared, args.root, args.allow_missing) else 1


if __name__ == "__main__":
    sys.exit(main())
