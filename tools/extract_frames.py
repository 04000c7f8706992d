"""Extract the frames of video files into TSM-style frame folders (00001.jpg, ...).

    python tools/extract_frames.py --videos $STHV2_ROOT/20bn-something-something-v2 \\
        --frames $STHV2_ROOT/frames \\
        --list $STHV2_ROOT/train_videolist.txt $STHV2_ROOT/train_videofolder.txt \\
        --list $STHV2_ROOT/val_videolist.txt $STHV2_ROOT/val_videofolder.txt \\
        [--short-side 256] [--quality 90] [--fps 12] [--workers 8] [--video-backend auto]

The video <videos>/<path> becomes the folder <frames>/<path without suffix>/ (the layout the
frame datasets read). ``--list IN OUT`` extracts the videos of the list IN (``path [num_frames]
label`` lines, paths relative to --videos) and writes OUT, the same videos as frame folders
with the frame counts written (``folder num_frames label``); without --list every video file
under --videos is extracted. Default: every frame, at the decoded size, JPEG quality 90.

A folder is complete or absent: frames are written to a hidden temporary folder that is renamed
at the end. Rerunning the command skips finished videos and clears what an interrupted run
left. Failures are listed with their files at the end. Exit status: 0 all extracted; 1 some
videos failed (the OUT lists are then not written unless --allow-failures, which leaves the
failed videos out of them); 2 bad arguments or lists, or another run holds --frames.
"""

import argparse
import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from rnlvideo.data.decoders import VIDEO_BACKENDS, resolve_backend
from rnlvideo.data.extraction import ExtractSettings, extract_videos
from rnlvideo.data.lists import (
    VIDEO_EXTENSIONS,
    VideoRecord,
    format_list_line,
    read_video_list,
    write_lines,
)

LOCK_FILE = ".extract_frames.lock"
NAMED_FAILURES = 50


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", required=True, type=Path, help="the video root")
    parser.add_argument("--frames", required=True, type=Path, help="the frame root to write")
    parser.add_argument(
        "--list",
        nargs=2,
        action="append",
        default=[],
        metavar=("VIDEO_LIST", "FRAME_LIST"),
        help="extract the videos of VIDEO_LIST and write FRAME_LIST (repeatable)",
    )
    parser.add_argument("--short-side", type=int, help="resize the shorter side to this (px)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-95")
    parser.add_argument("--fps", type=float, help="frames per second to keep (default: all)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--video-backend", default="auto", choices=("auto", *VIDEO_BACKENDS))
    parser.add_argument(
        "--allow-failures",
        action="store_true",
        help="write the frame lists even if some videos failed (they are left out)",
    )
    args = parser.parse_args(argv)
    if args.short_side is not None and args.short_side < 1:
        parser.error(f"--short-side {args.short_side}: expected a positive size")
    if not 1 <= args.quality <= 95:
        parser.error(f"--quality {args.quality}: expected 1..95")
    if args.fps is not None and args.fps <= 0:
        parser.error(f"--fps {args.fps}: expected a positive rate")
    return args


def find_videos(root: Path) -> list[str]:
    """Every video file under ``root`` (by suffix), as sorted paths relative to it."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()
    )


class FrameRootBusy(RuntimeError):
    """Another extraction holds the frame root."""


@contextmanager
def frame_root_lock(frames: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``frames`` (one run at a time), released however it ends."""
    frames.mkdir(parents=True, exist_ok=True)
    fd = os.open(frames / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FrameRootBusy(f"another extraction is writing into {frames}") from None
        yield
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        backend = resolve_backend(args.video_backend)
        if not args.videos.is_dir():
            raise FileNotFoundError(f"video root not found: {args.videos}")
        lists = [(Path(src), Path(dst), read_video_list(src)) for src, dst in args.list]
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with frame_root_lock(args.frames):
            return extract(args, backend, lists)
    except FrameRootBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def extract(args: argparse.Namespace, backend: str, lists: list) -> int:
    """Extract, summarise, write the frame lists; the exit status."""
    if lists:
        videos = list(dict.fromkeys(r.path for _, _, records in lists for r in records))
    else:
        videos = find_videos(args.videos)
    settings = ExtractSettings(args.short_side, args.quality, args.fps, backend)
    print(
        f"{len(videos)} videos: {args.videos} -> {args.frames} ({backend}, "
        f"{'every frame' if args.fps is None else f'{args.fps:g} fps'}, "
        f"{'original size' if args.short_side is None else f'short side {args.short_side}'}, "
        f"quality {args.quality}, {args.workers} workers)"
    )
    results = {}
    progress = tqdm(
        extract_videos(videos, args.videos, args.frames, settings, args.workers),
        total=len(videos),
        unit="video",
    )
    for result in progress:
        results[result.video] = result
    failed = [r for r in results.values() if r.error is not None]
    skipped = sum(r.skipped for r in results.values())
    print(
        f"{len(videos) - len(failed)} of {len(videos)} videos extracted "
        f"({skipped} finished by an earlier run), {len(failed)} failed"
    )
    for result in sorted(failed, key=lambda r: r.video)[:NAMED_FAILURES]:
        print(f"  FAILED {result.video}: {result.error}")
    if len(failed) > NAMED_FAILURES:
        print(f"  ... and {len(failed) - NAMED_FAILURES} more")
    if failed and not args.allow_failures:
        if lists:
            print("frame lists not written (--allow-failures writes them without the failures)")
        return 1
    for src, dst, records in lists:
        lines = [
            format_list_line(
                VideoRecord(results[r.path].folder, results[r.path].num_frames, r.label)
            )
            for r in records
            if results[r.path].error is None
        ]
        write_lines(dst, lines)
        print(f"wrote {dst}: {len(lines)} of the {len(records)} videos of {src}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
