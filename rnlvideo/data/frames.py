"""TSM list files and the dataset of videos stored as folders of JPEG frames."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from rnlvideo.data.sampling import clips_per_sample, sample_offsets
from rnlvideo.data.transforms import VideoTransform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRecord:
    """One line of a TSM list file: frame folder (relative to the root), frame count, class."""

    path: str
    num_frames: int
    label: int


def _parse_list_line(line: str, where: str) -> VideoRecord:
    try:
        path, num_frames, label = line.split()
        num_frames, label = int(num_frames), int(label)
    except ValueError:
        raise ValueError(f"{where}: expected 'path num_frames label', got {line!r}") from None
    if num_frames < 1:
        raise ValueError(f"{where}: num_frames must be positive, got {line!r}")
    if label < 0:
        raise ValueError(f"{where}: label must be non-negative, got {line!r}")
    return VideoRecord(path, num_frames, label)


def read_video_list(path: str | Path) -> list[VideoRecord]:
    """Parse a TSM list file of ``path num_frames label`` lines; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video list file not found: {path}")
    with path.open() as f:
        return [
            _parse_list_line(line, f"{path}:{number}")
            for number, line in enumerate(f, start=1)
            if line.strip()
        ]


def read_categories(path: str | Path) -> list[str]:
    """Class names from ``category.txt``, one per line (line ``i`` is class ``i``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"category file not found: {path}")
    with path.open() as f:
        return [line.strip() for line in f if line.strip()]


def load_frame(path: Path) -> torch.Tensor:
    """Decode one JPEG to RGB uint8 ``(3, H, W)``; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    try:
        return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot decode frame {path}: {exc}") from exc


class FrameFolderDataset(Dataset):
    """Videos as ``root/<record.path>/<filename_tmpl.format(offset + start_index)>`` JPEGs.

    ``dataset[i]`` is ``(clip, label)``. With a single view ``clip`` is float ``(C, T, H, W)``,
    ``T = num_segments``. With several views it is ``(V, C, T, H, W)``, ``V = K * S``: the
    ``K = clips_per_sample`` temporal clips (2 for "twice", ``num_clips`` for "dense_test", else
    1) times the ``S`` spatial crops of the transform (3 for ``three_crop_transform``), ordered
    clip-major (clip 0 crop 0, clip 0 crop 1, ...).

    Randomness (frame sampling and transform) comes from
    ``np.random.default_rng([seed, epoch, index])``, so a sample does not depend on the
    DataLoader worker count. ``set_epoch`` must be called before the epoch's iterator is made;
    with ``persistent_workers=True`` the workers keep the epoch they were started with.
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        transform: VideoTransform,
        num_segments: int = 8,
        sampling: str = "tsn_train",
        filename_tmpl: str = "{:05d}.jpg",
        start_index: int = 1,
        num_clips: int = 1,
        seed: int = 0,
        min_frames: int = 1,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"frame root directory not found: {self.root}")
        self.clips_per_sample = clips_per_sample(sampling, num_clips)
        self.transform = transform
        self.num_segments = num_segments
        self.sampling = sampling
        self.filename_tmpl = filename_tmpl
        self.start_index = start_index
        self.num_clips = num_clips
        self.seed = seed
        self.epoch = 0
        records = read_video_list(list_file)
        # TSM trains only on videos with at least 3 frames (min_frames=3).
        self.records = [r for r in records if r.num_frames >= min_frames]
        logger.info(
            "%s: %d videos (%d with fewer than %d frames skipped)",
            list_file,
            len(self.records),
            len(records) - len(self.records),
            min_frames,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def load_frames(self, record: VideoRecord, offsets: np.ndarray) -> torch.Tensor:
        """The frames at 0-based ``offsets`` as uint8 ``(len(offsets), 3, H, W)``."""
        folder = self.root / record.path
        decoded: dict[int, torch.Tensor] = {}
        for offset in offsets.tolist():
            if offset not in decoded:
                name = self.filename_tmpl.format(offset + self.start_index)
                decoded[offset] = load_frame(folder / name)
        sizes = {tuple(frame.shape) for frame in decoded.values()}
        if len(sizes) > 1:
            raise ValueError(f"frames of {folder} differ in size: {sorted(sizes)}")
        return torch.stack([decoded[offset] for offset in offsets.tolist()])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        index %= len(self.records)  # the generator's seed must be non-negative
        rng = np.random.default_rng([self.seed, self.epoch, index])
        offsets = sample_offsets(
            self.sampling, record.num_frames, self.num_segments, rng, self.num_clips
        )
        clip = self.transform(self.load_frames(record, offsets), rng)
        return self.to_views(clip), record.label

    def to_views(self, clip: torch.Tensor) -> torch.Tensor:
        """Transform output ``(K*T, C, H, W)`` or ``(S, K*T, C, H, W)`` as model views.

        Returns ``(C, T, H, W)`` for one view, else ``(K*S, C, T, H, W)``.
        """
        crops = clip.unsqueeze(0) if clip.dim() == 4 else clip
        s, _, c, h, w = crops.shape
        k, t = self.clips_per_sample, self.num_segments
        views = crops.reshape(s, k, t, c, h, w).transpose(0, 1).reshape(k * s, t, c, h, w)
        # A transposed view: the DataLoader's collate makes the one contiguous copy.
        views = views.transpose(1, 2)
        return views[0] if k * s == 1 else views
