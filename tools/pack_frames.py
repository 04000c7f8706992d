"""Pack each video's frame folder into one file (the JPEG bytes unchanged, plus an index).

    python tools/pack_frames.py --root $STHV1_ROOT [--lists train_videofolder.txt ...]
                                [--frames-dir 20bn-something-something-v1] [--workers 8] [--force]

For every video of the lists (``path num_frames label`` lines; by default every such list
``*.txt`` directly in --root; ``category.txt`` and text files that are not frame lists are
reported and left alone), the folder <frames-dir>/<path>/ becomes the file
<frames-dir>/<path>.pack, holding frames 00001.jpg .. <num_frames>. --frames-dir (relative to
--root) defaults to the folder among --root and its subfolders that holds the lists' videos.
Then train or evaluate with ``data.root=<root> data.frame_store=packed``; the folders are no
longer read (keep them or delete them).

Files are written atomically (temporary file, then rename). A rerun skips the videos whose
packed file is complete and holds the listed frame count (--force repacks them). Failures (a
missing folder or frame, a frame that is not a JPEG) are listed with their files. Exit status:
0 all packed; 1 some videos failed; 2 bad arguments or lists.
"""

import argparse
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from rnlvideo.data.lists import (
    CATEGORY_FILENAME,
    VideoRecord,
    path_under,
    read_video_list,
)
from rnlvideo.data.packed import (
    PackedFormatError,
    pack_folder,
    packed_count,
    packed_path,
)
from rnlvideo.files import remove_stale_temporaries

NAMED_FAILURES = 50


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, type=Path, help="the dataset root")
    parser.add_argument(
        "--lists", nargs="+", type=Path, help="frame lists (relative to --root); default: found"
    )
    parser.add_argument("--frames-dir", help="the frame root, relative to --root; default: found")
    parser.add_argument("--filename-tmpl", default="{:05d}.jpg")
    parser.add_argument("--start-index", type=int, default=1)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--force", action="store_true", help="repack complete packed files too")
    return parser.parse_args(argv)


def frame_list(path: Path) -> list[VideoRecord]:
    """The records of a frame list; ``ValueError`` if it is not one."""
    records = read_video_list(path)
    if not records:
        raise ValueError(f"{path}: the list names no videos")
    uncounted = [r for r in records if r.num_frames is None]
    if uncounted:
        raise ValueError(f"{path}: '{uncounted[0].path}' has no frame count (not a frame list)")
    return records


def find_lists(root: Path) -> list[tuple[Path, list[VideoRecord]]]:
    """The frame lists among ``root/*.txt``; the other text files are reported."""
    found = []
    for path in sorted(root.glob("*.txt")):
        if path.name == CATEGORY_FILENAME:
            continue
        try:
            found.append((path, frame_list(path)))
        except ValueError as error:
            print(f"not a frame list, left alone: {error}")
    return found


def find_frame_root(root: Path, video: str) -> Path:
    """The folder among ``root`` and its subfolders holding ``video``'s frames or packed file."""
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    holding = [c for c in candidates if (c / video).is_dir() or packed_path(c / video).is_file()]
    if len(holding) != 1:
        where = "none" if not holding else ", ".join(map(str, holding))
        raise ValueError(
            f"cannot tell where the frame folders are: {video!r} is in {where} (of {root} and "
            "its subfolders); give --frames-dir"
        )
    return holding[0]


def is_packed(folder: Path, num_frames: int) -> bool:
    """Whether ``folder``'s packed file is complete and holds ``num_frames`` frames."""
    try:
        return packed_count(packed_path(folder)) == num_frames
    except (OSError, PackedFormatError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    root = args.root
    try:
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {root}")
        if args.lists:
            lists = [(root / path, frame_list(root / path)) for path in args.lists]
        else:
            lists = find_lists(root)
            if not lists:
                raise ValueError(f"no frame list (path num_frames label) in {root}/*.txt")
        records = {r.path: r for _, rs in lists for r in rs}
        first = next(iter(records))
        frame_root = root / args.frames_dir if args.frames_dir else find_frame_root(root, first)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, rs in lists:
        print(f"{path}: {len(rs)} videos")
    try:
        folders = {path_under(frame_root, r.path): r.num_frames for r in records.values()}
    except ValueError as error:  # UnsafePathError
        print(f"error: {error}", file=sys.stderr)
        return 2
    for parent in {folder.parent for folder in folders}:
        if parent.is_dir():
            remove_stale_temporaries(parent)
    todo = {f: n for f, n in folders.items() if args.force or not is_packed(f, n)}
    print(
        f"{len(folders)} videos under {frame_root}: {len(folders) - len(todo)} already packed, "
        f"packing {len(todo)} with {args.workers} workers"
    )

    def pack(item: tuple[Path, int]) -> tuple[Path, str | None]:
        folder, num_frames = item
        try:
            pack_folder(folder, num_frames, args.filename_tmpl, args.start_index)
        except (OSError, ValueError) as error:
            return folder, str(error)
        return folder, None

    with ThreadPoolExecutor(max(args.workers, 1)) as pool:
        results = list(tqdm(pool.map(pack, todo.items()), total=len(todo), unit="video"))
    failed = sorted((folder, error) for folder, error in results if error is not None)
    print(f"{len(todo) - len(failed)} of {len(todo)} packed, {len(failed)} failed")
    for folder, error in failed[:NAMED_FAILURES]:
        print(f"  FAILED {folder}: {error}")
    if len(failed) > NAMED_FAILURES:
        print(f"  ... and {len(failed) - NAMED_FAILURES} more")
    if not failed:
        print(f"train or evaluate from them with: data.root={root} data.frame_store=packed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
