"""Video-decoder benchmark: clips/s of every installed backend on mp4 (H.264) and webm (VP9).

    python tools/benchmark_decoders.py [--videos 24] [--clips 240] [--height 240 --width 320]

Writes --videos synthetic videos (Something-Something-like: moving objects, noise; --frames
frames at 12 fps) as H.264 mp4 and VP9 webm files into a temporary folder, then decodes
--clips training clips (TSN sampling, --segments frames: what VideoFileDataset reads) from
them with each backend (``data.video_backend``), one thread in one process: clips/s per core,
the open (index scan) included. Every backend decodes the same clips, and the decoded frames of
the first clips are compared between backends (max abs difference, grey levels).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnlvideo.data.decoders import available_backends, read_video_frames
from rnlvideo.data.encode import ENCODERS, write_video
from rnlvideo.data.sampling import tsn_train_offsets
from rnlvideo.data.synthetic import (
    RenderSettings,
    class_names,
    plan_video,
    render_video,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48, help="frames per video")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--clips", type=int, default=240, help="clips per measurement")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--backends", nargs="+", default=None, help="default: all installed")
    return parser.parse_args(argv)


def write_videos(folder: Path, args: argparse.Namespace) -> dict[str, list[Path]]:
    """``{suffix: paths}``: the same rendered videos in every container."""
    settings = RenderSettings(
        height=args.height,
        min_width=args.width,
        max_width=args.width,
        min_frames=args.frames,
        max_frames=args.frames,
    )
    names = class_names()
    written: dict[str, list[Path]] = {suffix: [] for suffix in ENCODERS}
    for video in range(args.videos):
        frames = render_video(plan_video(names[video % len(names)], 0, video + 1, settings))
        for suffix in ENCODERS:
            path = folder / f"{video}{suffix}"
            write_video(path, frames)
            written[suffix].append(path)
    return written


def decode_rate(paths: list[Path], backend: str, args: argparse.Namespace) -> float:
    """Clips/s decoding --clips training clips of ``paths`` with ``backend``."""
    rng = np.random.default_rng(0)

    def offsets(n: int) -> np.ndarray:
        return tsn_train_offsets(n, args.segments, rng)

    read_video_frames(paths[0], offsets, backend)  # imports, first-call set-up
    started = time.perf_counter()
    for clip in range(args.clips):
        read_video_frames(paths[clip % len(paths)], offsets, backend)
    return args.clips / (time.perf_counter() - started)


def max_difference(paths: list[Path], backends: list[str], args: argparse.Namespace) -> int:
    """The largest pixel difference between backends over the first videos' clips."""
    largest = 0
    for path in paths[:4]:
        clips = [
            read_video_frames(
                path, lambda n: tsn_train_offsets(n, args.segments, np.random.default_rng(1)), b
            ).int()
            for b in backends
        ]
        for clip in clips[1:]:
            largest = max(largest, int((clip - clips[0]).abs().max()))
    return largest


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    backends = args.backends or available_backends()
    with tempfile.TemporaryDirectory(prefix="rnlvideo_decoders_") as tmp:
        videos = write_videos(Path(tmp), args)
        print(
            f"{args.videos} synthetic videos of {args.frames} frames, {args.width}x{args.height}, "
            f"12 fps; {args.clips} clips of {args.segments} frames (TSN training sampling); "
            f"one thread; torch {torch.__version__}"
        )
        header = "| container | " + " | ".join(f"{b} clips/s" for b in backends)
        print(header + " | max pixel difference |")
        print("|---" * (len(backends) + 2) + "|")
        for suffix, paths in videos.items():
            size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
            rates = [decode_rate(paths, backend, args) for backend in backends]
            codec = ENCODERS[suffix][0]
            print(
                f"| {suffix[1:]} ({codec}, {size:.0f} KiB/video) | "
                + " | ".join(f"{rate:.0f}" for rate in rates)
                + f" | {max_difference(paths, backends, args)} |"
            )


if __name__ == "__main__":
    main()
