"""Frame-store benchmark: frame folders against packed files, cold and warm page cache.

    python tools/benchmark_stores.py --root /data/bench --make 20000     # the set, once
    python tools/pack_frames.py --root /data/bench
    sudo python tools/benchmark_stores.py --root /data/bench --cold --opens   # as root

--root is a frame dataset in the synthetic layout (frames/, train.txt), packed with
tools/pack_frames.py. ``--make N`` writes one first: N videos of Something-Something V1's frame
size (176x100, 36 JPEG frames each), copies of --unique videos rendered by the synthetic
generator (distinct files, so the page cache and the disk see N videos; rendering 20k would take
an hour on 2 cores). For each store (``data.frame_store``: folders, packed), a DataLoader with
--workers workers loads --clips training clips (TSN sampling, --segments frames,
train_transform to --size px with device_transform=True, so that the loader's own work is
reading and decoding: the resize runs on the training device; --cpu-transform does it in the
loader) of distinct videos drawn at random from the list, in batches of --batch-size, and the
clips/s after its first batch are printed (--read-only: the same frames' bytes are read, one
file at a time, and nothing is decoded: the storage's share alone):
- cold (--cold, needs root): the page cache is dropped (``sync; echo 3 >
  /proc/sys/vm/drop_caches``) right before each store's run, so every file is read from disk;
- warm: the same clips again, their files now in the page cache.
--opens counts the frame files opened per clip (under --root/frames; ``strace -f -e
trace=openat`` on a process loading --open-clips clips with no workers). The two stores read the
same videos and frames (``frame_store`` changes nothing else).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rnlvideo.data.frames import FRAME_STORES, FrameFolderDataset
from rnlvideo.data.lists import read_video_list, write_lines
from rnlvideo.data.packed import PackedFrames
from rnlvideo.data.sampling import sample_offsets
from rnlvideo.data.synthetic import class_names, generate_synthetic_dataset
from rnlvideo.data.transforms import train_transform

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--stores", nargs="+", default=list(FRAME_STORES), choices=FRAME_STORES)
    parser.add_argument("--clips", type=int, default=2000, help="clips per measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0, help="which videos are drawn")
    parser.add_argument(
        "--cpu-transform", action="store_true", help="resize in the loader (device_transform off)"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="read the clips' JPEG bytes, decode nothing"
    )
    parser.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    parser.add_argument("--opens", action="store_true", help="count files opened per clip")
    parser.add_argument("--open-clips", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1, help="runs per store (medians)")
    parser.add_argument("--make", type=int, metavar="N", help="write an N-video set at --root")
    parser.add_argument("--unique", type=int, default=600, help="videos rendered for --make")
    parser.add_argument("--load-only", choices=FRAME_STORES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_benchmark_set(root: Path, num_videos: int, unique: int) -> None:
    """``num_videos`` V1-size videos at ``root`` (frames/, train.txt): copies of rendered ones."""
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"--make: {root} is not empty")
    rendered = root / "rendered"
    per_class = -(-unique // len(class_names()))
    generate_synthetic_dataset(
        rendered, per_class, 1, min_frames=36, max_frames=36, min_width=176, max_width=176
    )
    sources = read_video_list(rendered / "train.txt")
    lines = []
    for video in range(1, num_videos + 1):
        source = sources[(video - 1) % len(sources)]
        shutil.copytree(rendered / "frames" / source.path, root / "frames" / str(video))
        lines.append(f"{video} {source.num_frames} {source.label}")
        if video % 2000 == 0:
            print(f"{video} / {num_videos} videos written")
    write_lines(root / "train.txt", lines)
    shutil.rmtree(rendered)


class ReadOnly(Dataset):
    """The bytes of the frames ``frames[index]`` would decode, read and not decoded."""

    def __init__(self, frames: FrameFolderDataset) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[int, int]:
        data, record = self.frames, self.frames.records[index]
        rng = np.random.default_rng([data.seed, data.epoch, index])
        drawn = sample_offsets(data.sampling, record.num_frames, data.num_segments, rng)
        offsets = sorted(set(drawn.tolist()))
        if data.frame_store == "packed":
            with PackedFrames(data.packed_location(record)) as packed:
                return sum(map(len, packed.read(offsets))), record.label
        folder = data.video_location(record)
        names = [data.filename_tmpl.format(offset + data.start_index) for offset in offsets]
        return sum(len((folder / name).read_bytes()) for name in names), record.label


def make_dataset(args: argparse.Namespace, store: str) -> Dataset:
    if args.read_only:
        return ReadOnly(make_frame_dataset(args, store))
    return make_frame_dataset(args, store)


def make_frame_dataset(args: argparse.Namespace, store: str) -> FrameFolderDataset:
    return FrameFolderDataset(
        args.root / "frames",
        args.root / "train.txt",
        train_transform(args.size),
        num_segments=args.segments,
        frame_store=store,
        device_transform=not args.cpu_transform,
    )


def clip_indices(args: argparse.Namespace, num_videos: int, count: int) -> list[int]:
    """``count`` distinct videos in a random order (the same for every store)."""
    if count > num_videos:
        raise SystemExit(f"--clips {count} is more than the {num_videos} videos of the list")
    return np.random.default_rng(args.seed).permutation(num_videos)[:count].tolist()


def drop_page_cache() -> None:
    """Write dirty pages out, then drop the page cache, dentries and inodes (root only)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except PermissionError:
        raise SystemExit(f"--cold needs root: cannot write {DROP_CACHES}") from None


def loader_rate(dataset: Dataset, indices: list[int], args: argparse.Namespace) -> float:
    """Clips/s of a DataLoader over ``indices`` after its first batch (worker start-up)."""
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=indices, num_workers=args.workers
    )
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    count = sum(len(labels) for _, labels in iterator)
    return count / (time.perf_counter() - started)


def count_opens(args: argparse.Namespace, store: str) -> float:
    """Files under --root/frames opened per clip, counted with strace on a loading process."""
    if shutil.which("strace") is None:
        raise SystemExit("--opens needs strace (apt-get install strace)")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "openat.log"
        command = [sys.executable, __file__, "--root", str(args.root), "--load-only", store]
        command += ["--open-clips", str(args.open_clips), "--seed", str(args.seed)]
        trace = ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log)]
        subprocess.run(trace + command, check=True)
        root = str(args.root.resolve() / "frames")
        opened = [
            line
            for line in log.read_text().splitlines()
            if f'"{root}/' in line and "= -1" not in line
        ]
    return len(opened) / args.open_clips


def load_only(args: argparse.Namespace) -> None:
    """The traced process of --opens: load --open-clips clips, no workers."""
    dataset = make_dataset(args, args.load_only)
    for index in clip_indices(args, len(dataset), args.open_clips):
        dataset[index]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.root = args.root.resolve()
    torch.set_num_threads(1)
    if args.load_only:
        load_only(args)
        return
    if args.make:
        make_benchmark_set(args.root, args.make, args.unique)
        print(f"wrote {args.make} videos to {args.root}; pack them: tools/pack_frames.py")
        return
    datasets = {store: make_dataset(args, store) for store in args.stores}
    indices = clip_indices(args, len(next(iter(datasets.values()))), args.clips)
    print(
        f"{len(indices)} clips of distinct videos of {args.root / 'train.txt'} "
        f"({len(next(iter(datasets.values())))} videos), {args.segments} segments, "
        f"train_transform {args.size} px ({'in the loader' if args.cpu_transform else 'device'}"
        f" transform), batch {args.batch_size}, {args.workers} workers"
    )
    rates: dict[str, list[tuple[float | None, float]]] = {store: [] for store in datasets}
    print("| run | store | cold clips/s | warm clips/s |")
    print("|---|---|---|---|")
    for run in range(1, args.repeats + 1):  # the stores take turns, so load changes hit both
        for store, dataset in datasets.items():
            cold = None
            if args.cold:
                drop_page_cache()
                cold = loader_rate(dataset, indices, args)
            else:
                loader_rate(dataset, indices, args)  # bring the files into the page cache
            warm = loader_rate(dataset, indices, args)
            rates[store].append((cold, warm))
            print(f"| {run} | {store} | {'-' if cold is None else f'{cold:.0f}'} | {warm:.0f} |")
    if args.cold:
        print(
            "the page cache was dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before each "
            "cold run"
        )
    print(
        "\nmedians:\n| store | cold clips/s | warm clips/s | cold / warm | files opened per clip |"
    )
    print("|---|---|---|---|---|")
    medians = {}
    for store, runs in rates.items():
        cold = float(np.median([c for c, _ in runs])) if args.cold else None
        warm = float(np.median([w for _, w in runs]))
        medians[store] = (cold, warm)
        opens = f"{count_opens(args, store):.2f}" if args.opens else "-"
        print(
            f"| {store} | {'-' if cold is None else f'{cold:.0f}'} | {warm:.0f} | "
            f"{'-' if cold is None else f'{cold / warm:.2f}'} | {opens} |"
        )
    if set(medians) == set(FRAME_STORES):
        (folders_cold, folders_warm), (packed_cold, packed_warm) = (
            medians["folders"],
            medians["packed"],
        )
        print(f"packed / folders, warm: {packed_warm / folders_warm:.2f}")
        if args.cold:
            print(
                f"packed / folders, cold: {packed_cold / folders_cold:.2f}; packed cold / "
                f"folders warm: {packed_cold / folders_warm:.2f}"
            )


if __name__ == "__main__":
    main()
