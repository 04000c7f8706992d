"""Data-loading benchmark on Something-Something-V1-size frames (100 px tall JPEGs).

    python tools/benchmark_data.py [--root DATA] [--clips 96] [--workers 1 2]

Training clips (TSN sampling, ``--segments`` frames, MultiScaleCrop to ``--size``) through
- ``reference``: a mirror of TSM's PIL path: PIL open + convert per frame, crop, bilinear resize
  to the output size, stack, ToTensor (float / 255), normalise (in place);
- ``cpu-complete``: FrameFolderDataset + train_transform (torchvision decode, uint8 resize);
- ``device-side``: FrameFolderDataset(device_transform=True): the loader returns uint8 crops
  on a canvas + boxes; the resize + normalisation (DeviceTransform) is timed separately, on the
  CPU here and on CUDA when available, since it runs on the training device.

Per pipeline: ms per clip of decode / transform / collate in one process with one thread (the
cost per DataLoader worker, i.e. per core), then clips/s of a DataLoader with each
``--workers`` count. All pipelines use the same videos, frame draws and crop boxes. Without
``--root`` a small synthetic set is generated in a temporary folder (or data/synthetic is used
when present).
"""

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from rnlvideo.data.device_transforms import multiscale_crop_box
from rnlvideo.data.frames import FrameFolderDataset
from rnlvideo.data.sampling import sample_offsets
from rnlvideo.data.synthetic import dataset_is_complete, generate_synthetic_dataset
from rnlvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiScaleCrop,
    train_transform,
)


class ReferencePipeline(Dataset):
    """TSM's per-frame PIL path, with the frames and crops the rnlvideo datasets draw."""

    def __init__(self, frames: FrameFolderDataset, size: int) -> None:
        self.frames = frames  # only for its records and frame draws
        self.crop = MultiScaleCrop(size)
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).repeat(frames.num_segments).view(-1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).repeat(frames.num_segments).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.frames)

    def decode(self, index: int) -> tuple[list[Image.Image], np.random.Generator]:
        dataset, record = self.frames, self.frames.records[index]
        rng = np.random.default_rng([dataset.seed, dataset.epoch, index])
        offsets = sample_offsets(dataset.sampling, record.num_frames, dataset.num_segments, rng)
        folder = dataset.root / record.path
        names = [dataset.filename_tmpl.format(o + dataset.start_index) for o in offsets]
        return [Image.open(folder / name).convert("RGB") for name in names], rng

    def finish(self, images: list[Image.Image], rng: np.random.Generator) -> torch.Tensor:
        width, height = images[0].size
        x, y, crop_w, crop_h = multiscale_crop_box(self.crop, width, height, rng)
        resized = [
            image.crop((x, y, x + crop_w, y + crop_h)).resize(
                (self.size, self.size), Image.Resampling.BILINEAR
            )
            for image in images
        ]
        stacked = np.concatenate([np.asarray(image) for image in resized], axis=2)  # (S, S, 3T)
        clip = torch.from_numpy(stacked).permute(2, 0, 1).contiguous().float().div(255)
        return clip.sub_(self.mean).div_(self.std)  # (3T, S, S), as TSM feeds its model

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, rng = self.decode(index)
        return self.finish(images, rng), self.frames.records[index].label


def stage_times(pipeline, indices: list[int], batch_size: int) -> dict[str, float]:
    """ms per clip of decode, transform and collate, in this process."""
    decode = finish = collate = 0.0
    batch = []
    for index in indices:
        started = time.perf_counter()
        raw, rng = pipeline.decode(index)
        decoded = time.perf_counter()
        batch.append((pipeline.finish(raw, rng), 0))
        finished = time.perf_counter()
        decode += decoded - started
        finish += finished - decoded
        if len(batch) == batch_size:
            default_collate(batch)
            collate += time.perf_counter() - finished
            batch = []
    count = len(indices) // batch_size * batch_size
    return {
        "decode": 1000 * decode / len(indices),
        "transform": 1000 * finish / len(indices),
        "collate": 1000 * collate / max(count, 1),
    }


def loader_rate(dataset: Dataset, clips: int, batch_size: int, workers: int) -> float:
    """Clips/s of a DataLoader over the first ``clips`` videos (after its first batch)."""
    indices = [i % len(dataset) for i in range(clips + batch_size)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not data loading
    started = time.perf_counter()
    count = sum(len(labels) for _, labels in iterator)
    return count / (time.perf_counter() - started)


def device_part_ms(dataset: FrameFolderDataset, batch_size: int, device: torch.device) -> float:
    """ms per clip of DeviceTransform on one collated batch, on ``device``."""
    batch = default_collate([dataset[i % len(dataset)] for i in range(batch_size)])[0]
    batch = type(batch)(*(part.to(device) for part in batch))
    transform = dataset.device_transform.to(device)
    transform(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        transform(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started) / (repeats * batch_size)


def data_root(root: str | None, stack: contextlib.ExitStack) -> Path:
    """``root``, else data/synthetic if complete, else a generated set (deleted at exit)."""
    if root is not None:
        return Path(root)
    if dataset_is_complete("data/synthetic"):
        return Path("data/synthetic")
    generated = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnlvideo_bench_")))
    print(f"generating synthetic V1-size data in {generated} ...")
    generate_synthetic_dataset(generated, videos_per_class_train=4, videos_per_class_val=0)
    return generated


def run(args: argparse.Namespace, root: Path) -> None:
    """Measure every pipeline on the dataset at ``root`` and print the table."""
    torch.set_num_threads(1)  # per-core figures: a DataLoader worker runs one thread

    def frames_dataset(device_transform: bool) -> FrameFolderDataset:
        return FrameFolderDataset(
            root / "frames",
            root / "train.txt",
            train_transform(args.size),
            num_segments=args.segments,
            device_transform=device_transform,
        )

    device_side = frames_dataset(True)
    pipelines = {
        "reference (TSM PIL)": ReferencePipeline(frames_dataset(False), args.size),
        "cpu-complete": frames_dataset(False),
        "device-side loader": device_side,
    }
    indices = [i % len(device_side) for i in range(args.clips)]
    print(
        f"{len(device_side)} videos in {root}, {args.segments} segments, train transform, "
        f"{args.size} px output, batch {args.batch_size}, torch {torch.__version__}"
    )
    header = "| pipeline | decode | transform | collate | ms/clip/core | clips/s/core | x ref |"
    workers_cols = "".join(f" {w} worker(s) clips/s |" for w in args.workers)
    print(header + workers_cols)
    print("|---" * (7 + len(args.workers)) + "|")
    reference_rate = None
    for name, pipeline in pipelines.items():
        stage_times(pipeline, indices[: args.batch_size], args.batch_size)  # warm caches
        times = stage_times(pipeline, indices, args.batch_size)
        total = sum(times.values())
        rate = 1000 / total
        reference_rate = reference_rate or rate
        rates = [loader_rate(pipeline, args.clips, args.batch_size, w) for w in args.workers]
        print(
            f"| {name} | {times['decode']:.2f} | {times['transform']:.2f} | "
            f"{times['collate']:.2f} | {total:.2f} | {rate:.0f} | {rate / reference_rate:.1f} |"
            + "".join(f" {r:.0f} |" for r in rates)
        )
    print(
        f"device part (DeviceTransform, batched {args.batch_size}): "
        f"{device_part_ms(device_side, args.batch_size, torch.device('cpu')):.2f} ms/clip on "
        "the CPU (1 thread)"
        + (
            f", {device_part_ms(device_side, args.batch_size, torch.device('cuda')):.3f} ms/clip "
            "on CUDA"
            if torch.cuda.is_available()
            else ""
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="a synthetic-layout dataset (frames/, train.txt)")
    parser.add_argument("--clips", type=int, default=96, help="clips per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        run(args, data_root(args.root, stack))


if __name__ == "__main__":
    main()
