"""The clip dataset base (sampling, views, bad-input policy) and the frame-folder dataset."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from rnlvideo.data.device_transforms import DeferredClip, DeviceTransform, defer_transform
from rnlvideo.data.lists import (
    VideoRecord,
    check_filename_template,
    check_label,
    path_under,
    read_categories,
    read_video_list,
)
from rnlvideo.data.packed import PACK_SUFFIX, PackedFormatError, PackedFrames
from rnlvideo.data.pathways import check_slowfast_alpha, with_pathways
from rnlvideo.data.sampling import RANDOM_MODES, clips_per_sample, sample_offsets
from rnlvideo.data.transforms import FrameSizeError, VideoTransform

logger = logging.getLogger(__name__)

# "resample" substitutes another video (training only); "exclude" marks the video for the
# evaluation to leave out (evaluation only); "raise" stops.
ON_ERROR_POLICIES = ("raise", "resample", "exclude")
# How a frame dataset is stored: a folder of JPEG files per video, or one packed file per video
# (rnlvideo.data.packed).
FRAME_STORES = ("folders", "packed")
# TSM leaves videos with fewer frames than this out of every split.
DEFAULT_MIN_FRAMES = 3
# Short videos named in the log when a list's short videos are left out.
_NAMED_SHORT = 5
_JPEG_MAGIC = b"\xff\xd8\xff"
_KNOWN_FORMATS = {b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}
# on_error="resample" gives up after this many unreadable replacements in a row.
MAX_RESAMPLE_ATTEMPTS = 10
# The random stream of replacement choices: default_rng([seed, epoch, index, _RESAMPLE_STREAM]).
_RESAMPLE_STREAM = 1

__all__ = [
    "DEFAULT_MIN_FRAMES",
    "FRAME_STORES",
    "ON_ERROR_POLICIES",
    "ClipDataset",
    "ExcludedVideo",
    "FrameFolderDataset",
    "SharedCounter",
    "VideoDataError",
    "VideoRecord",
    "decode_frame",
    "load_frame",
    "load_packed_frames",
    "read_categories",
    "read_video_list",
]


class VideoDataError(RuntimeError):
    """A video's data on disk is missing, unreadable or inconsistent; the message names it."""


@dataclass(frozen=True)
class ExcludedVideo:
    """The clip of ``dataset[i]`` for a bad video under ``on_error="exclude"``: its error."""

    message: str


class SharedCounter:
    """A count that DataLoader worker processes add to and the main process reads.

    One int64 slot per worker in a shared-memory tensor (inherited by forked workers, passed
    by handle to spawned ones), so adding needs no lock: a worker writes only its own slot.
    """

    _SLOTS = 1024

    def __init__(self) -> None:
        self._slots = torch.zeros(self._SLOTS, dtype=torch.int64).share_memory_()

    def add(self, count: int = 1) -> None:
        worker = get_worker_info()
        slot = 0 if worker is None else 1 + worker.id % (self._SLOTS - 1)
        self._slots[slot] += count

    @property
    def value(self) -> int:
        return int(self._slots.sum())


def load_frame(path: Path) -> torch.Tensor:
    """Decode one JPEG to RGB uint8 ``(3, H, W)`` (grayscale and CMYK JPEGs are converted).

    A missing, empty, non-JPEG, truncated or otherwise undecodable file raises
    :class:`VideoDataError` naming it.
    """
    if not path.is_file():
        raise VideoDataError(f"frame not found: {path}")
    try:
        data = read_file(str(path)) if path.stat().st_size else None
    except (OSError, RuntimeError) as exc:
        raise VideoDataError(f"cannot read frame {path}: {exc}") from exc
    if data is None:
        raise VideoDataError(f"frame is an empty file (0 bytes): {path}")
    return decode_frame(data, str(path))


def decode_frame(data: torch.Tensor, where: str) -> torch.Tensor:
    """Decode the JPEG bytes ``data`` (uint8 ``(L,)``) to RGB uint8 ``(3, H, W)``.

    Data that is not a JPEG or does not decode raises :class:`VideoDataError` naming ``where``.
    """
    head = data[:4].numpy().tobytes()
    if not head.startswith(_JPEG_MAGIC):
        found = next(
            (name for magic, name in _KNOWN_FORMATS.items() if head.startswith(magic)), None
        )
        what = f"{found} data" if found else f"starts with {head.hex(' ')}"
        raise VideoDataError(f"frame is not a JPEG file ({what}): {where}")
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).rsplit(", ", 1)[-1]  # drop torchvision's source location
        raise VideoDataError(f"cannot decode JPEG frame {where}: {reason}") from exc


def load_packed_frames(
    path: Path, offsets: Sequence[int], opened: PackedFrames | None = None
) -> list[torch.Tensor]:
    """Decode frames ``offsets`` (0-based) of the packed file ``path``: RGB uint8 ``(3, H, W)``.

    One file opened for all of them (``opened``: already opened, closed here). A missing,
    truncated or corrupt file, or an offset beyond its frames, raises :class:`VideoDataError`
    naming it.
    """
    try:
        with opened if opened is not None else PackedFrames(path) as packed:
            data = packed.read(offsets)
    except FileNotFoundError:
        raise VideoDataError(f"packed frame file not found: {path}") from None
    except PackedFormatError as exc:
        raise VideoDataError(str(exc)) from exc
    return [
        decode_frame(torch.frombuffer(bytearray(frame), dtype=torch.uint8), f"{path} (frame {i})")
        for i, frame in zip(offsets, data, strict=True)
    ]


OffsetsFn = Callable[[int], np.ndarray]
# A dataset sample's clip: one tensor / DeferredClip, or the [slow, fast] pathways of one.
Sample = torch.Tensor | DeferredClip | list[torch.Tensor | DeferredClip]


def arrange_views(clip: torch.Tensor, clips: int, num_segments: int) -> torch.Tensor:
    """Transform output ``(K*T, C, H, W)`` or ``(S, K*T, C, H, W)`` -> ``(K*S, C, T, H, W)``.

    ``K = clips`` temporal clips of ``T = num_segments`` frames, ``S`` crops; views are ordered
    clip-major (clip 0 crop 0, clip 0 crop 1, ...). The result is a transposed view (a
    DataLoader's collate makes the one contiguous copy).
    """
    crops = clip.unsqueeze(0) if clip.dim() == 4 else clip
    s, _, c, h, w = crops.shape
    views = crops.reshape(s, clips, num_segments, c, h, w).transpose(0, 1)
    return views.reshape(clips * s, num_segments, c, h, w).transpose(1, 2)


def read_flip_label_map(
    source: Mapping[int, int] | str | Path | None, num_classes: int | None = None
) -> dict[int, int]:
    """``{label: label after a horizontal flip}`` from a mapping or a ``label mirrored`` file.

    With ``num_classes`` both labels of every pair must lie in ``[0, num_classes)``; errors
    name the file and line (or ``flip_label_map`` for a mapping).
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        pairs = [("flip_label_map", int(k), int(v)) for k, v in source.items()]
    else:
        path = Path(source)
        pairs = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(f.lstrip("-").isdigit() for f in fields):
                raise ValueError(f"{path}:{number}: expected 'label mirrored_label', got {line!r}")
            pairs.append((f"{path}:{number}", int(fields[0]), int(fields[1])))
    if num_classes is not None:
        for where, label, mirrored in pairs:
            check_label(label, num_classes, where)
            check_label(mirrored, num_classes, where)
    return {label: mirrored for _, label, mirrored in pairs}


class ClipDataset(Dataset):
    """Base of the video datasets: list file, frame sampling, transform, views, bad input.

    ``dataset[i]`` is ``(clip, label)``. With a single view ``clip`` is float ``(C, T, H, W)``,
    ``T = num_segments``. With several views it is ``(V, C, T, H, W)``, ``V = K * S``: the
    ``K = clips_per_sample`` temporal clips (2 for "twice", ``num_clips`` for "dense_test", else
    1) times the ``S`` spatial crops of the transform (3 for ``three_crop_transform``), ordered
    clip-major (clip 0 crop 0, clip 0 crop 1, ...).

    With ``device_transform=True`` the transform's resize and normalisation are left to the
    training device: ``clip`` is a :class:`DeferredClip` of uint8 frames and crop boxes (same
    view layout) and ``self.device_transform`` is the module that finishes it
    (``rnlvideo.data.device_transforms.to_model_input``). Otherwise ``self.device_transform``
    is None.

    Randomness (frame sampling and transform) comes from
    ``np.random.default_rng([seed, epoch, index])``, so a sample does not depend on the
    DataLoader worker count. ``set_epoch`` must be called before the epoch's iterator is made;
    with ``persistent_workers=True`` the workers keep the epoch they were started with.

    The list is checked when the dataset is built: a malformed line, a path that is absolute or
    leaves the root (``..``) and, with ``num_classes``, a label outside ``[0, num_classes)``
    raise ``ValueError`` naming the file and line; so does a list without videos. Videos with
    fewer than ``min_frames`` frames (TSM: 3) are left out, counted in ``num_too_short`` and
    logged with the list's name; a video whose count is only known when it is opened (a
    ``path label`` line) and is too short raises :class:`VideoDataError` then.

    Bad input (a missing, empty or undecodable frame or video, frames too small for the
    transform's crops): ``on_error="raise"`` raises :class:`VideoDataError` naming the file.
    ``on_error="resample"`` (training sampling only) logs a warning naming the file and returns
    another video, drawn from ``default_rng([seed, epoch, index, 1])``, instead. Replacements
    are counted across worker processes: ``num_resampled`` (cumulative) and a warning with the
    epoch's count at the next ``set_epoch``. ``on_error="exclude"`` (evaluation sampling only)
    returns ``(ExcludedVideo(message), label)``: the evaluation leaves the video out of the
    metrics and reports it (``rnlvideo.engine.evaluation.predict``).

    ``horizontal_flip`` mirrors half of the samples (drawn from the sample's generator) before the
    transform; ``flip_label_map`` (``{label: mirrored label}``, or a file of ``label mirrored``
    lines) relabels direction-sensitive classes ("left to right" <-> "right to left"), classes
    absent from it keep their label. Off by default: Something-Something labels are
    direction-sensitive, and TSM trains it without flips.

    ``slowfast_alpha`` (SlowFast models) makes ``clip`` a list ``[slow, fast]``: ``fast`` is the
    clip above, ``slow`` every ``slowfast_alpha``-th of its frames
    (:func:`rnlvideo.data.pathways.slowfast_pathways`).

    Subclasses implement ``read_clip``.
    """

    def __init__(
        self,
        list_file: str | Path,
        transform: VideoTransform,
        num_segments: int = 8,
        sampling: str = "tsn_train",
        num_clips: int = 1,
        seed: int = 0,
        min_frames: int = DEFAULT_MIN_FRAMES,
        on_error: str = "raise",
        device_transform: bool = False,
        horizontal_flip: bool = False,
        flip_label_map: Mapping[int, int] | str | Path | None = None,
        num_classes: int | None = None,
        slowfast_alpha: int | None = None,
    ) -> None:
        check_on_error(on_error, sampling)
        if min_frames < 1:
            raise ValueError(f"min_frames={min_frames}: expected a positive frame count")
        check_slowfast_alpha(slowfast_alpha, num_segments)
        self.list_file = Path(list_file)
        self.clips_per_sample = clips_per_sample(sampling, num_clips)
        self.transform = defer_transform(transform) if device_transform else transform
        self.device_transform: DeviceTransform | None = (
            self.transform.device_transform if device_transform else None
        )
        self.num_segments = num_segments
        self.sampling = sampling
        self.num_clips = num_clips
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.min_frames = min_frames
        self.horizontal_flip = horizontal_flip
        self.flip_label_map = read_flip_label_map(flip_label_map, num_classes)
        self.slowfast_alpha = slowfast_alpha
        self._resampled = SharedCounter()
        self._resampled_reported = 0
        self.records = self._keep_long_enough(read_video_list(self.list_file, num_classes))
        logger.info("%s: %d videos", self.list_file, len(self.records))

    def _keep_long_enough(self, records: list[VideoRecord]) -> list[VideoRecord]:
        """``records`` without those listed with fewer than ``min_frames`` frames (logged).

        Records without a frame count are kept: their count is checked when they are opened.
        """
        if not records:
            raise ValueError(f"{self.list_file}: the list names no videos")
        kept = [r for r in records if r.num_frames is None or r.num_frames >= self.min_frames]
        short = [
            r.path for r in records if r.num_frames is not None and r.num_frames < self.min_frames
        ]
        self.num_too_short = len(short)
        if short:
            named = ", ".join(short[:_NAMED_SHORT]) + (", ..." if len(short) > _NAMED_SHORT else "")
            logger.warning(
                "%s: %d of %d videos have fewer than %d frames and are left out (min_frames): %s",
                self.list_file,
                len(short),
                len(records),
                self.min_frames,
                named,
            )
        if not kept:
            raise ValueError(
                f"{self.list_file}: all {len(records)} videos have fewer than "
                f"min_frames={self.min_frames} frames"
            )
        return kept

    def video_location(self, record: VideoRecord) -> Path:
        """Where ``record``'s frame folder or file is: ``self.root / record.path``.

        Subclasses set ``self.root``. A path that would leave the root raises
        :class:`rnlvideo.data.lists.UnsafePathError` (never replaced by ``on_error``).
        """
        return path_under(self.root, record.path)

    def read_clip(self, record: VideoRecord, offsets_for: OffsetsFn) -> torch.Tensor:
        """Decode the frames at ``offsets_for(num_frames)``: uint8 ``(len(offsets), 3, H, W)``.

        ``offsets_for`` maps the video's frame count to 0-based frame offsets. Missing or
        undecodable data raises :class:`VideoDataError` naming the file.
        """
        raise NotImplementedError

    @property
    def num_resampled(self) -> int:
        """Unreadable videos replaced so far (all worker processes, all epochs)."""
        return self._resampled.value

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes.

        Logs a warning with the number of videos replaced since the previous call.
        """
        total = self.num_resampled
        if total > self._resampled_reported:
            logger.warning(
                "%s: %d unreadable video(s) replaced by others in epoch %d (on_error=resample)",
                self.list_file,
                total - self._resampled_reported,
                self.epoch,
            )
        self._resampled_reported = total
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Sample, int]:
        index %= len(self.records)  # the generator's seed must be non-negative
        try:
            return self._sample(index)
        except VideoDataError as error:
            if self.on_error == "raise":
                raise
            if self.on_error == "exclude":
                return ExcludedVideo(str(error)), self.records[index].label
            return self._replacement(index, error)

    def _sample(self, index: int) -> tuple[Sample, int]:
        frames, rng = self.decode(index)
        label = self.records[index].label
        if self.horizontal_flip and rng.random() < 0.5:
            frames = frames.flip(-1)
            label = self.flip_label_map.get(label, label)
        try:
            return self.finish(frames, rng), label
        except FrameSizeError as error:
            location = self.video_location(self.records[index])
            raise VideoDataError(f"{location}: {error}") from error

    def decode(self, index: int) -> tuple[torch.Tensor, np.random.Generator]:
        """First stage of ``dataset[index]``: the sampled frames and the sample's generator.

        Returns uint8 ``(K*T, C, H, W)`` frames and the generator, its frame draws made.
        """
        rng = np.random.default_rng([self.seed, self.epoch, index])

        def offsets_for(num_frames: int) -> np.ndarray:
            return sample_offsets(self.sampling, num_frames, self.num_segments, rng, self.num_clips)

        return self.read_clip(self.records[index], offsets_for), rng

    def finish(self, frames: torch.Tensor, rng: np.random.Generator) -> Sample:
        """Second stage of ``dataset[index]``: transform ``decode``'s frames into the views
        (with ``slowfast_alpha``: the views' ``[slow, fast]`` pathways)."""
        return with_pathways(self.to_views(self.transform(frames, rng)), self.slowfast_alpha)

    def _replacement(self, index: int, error: VideoDataError) -> tuple:
        rng = np.random.default_rng([self.seed, self.epoch, index, _RESAMPLE_STREAM])
        for _ in range(MAX_RESAMPLE_ATTEMPTS if len(self.records) > 1 else 0):
            self._resampled.add()
            other = int(rng.integers(len(self.records) - 1))
            other += other >= index  # any video but this one
            logger.warning(
                "%s; replaced by video %s (on_error=resample)", error, self.records[other].path
            )
            try:
                return self._sample(other)
            except VideoDataError as next_error:
                error = next_error
        raise VideoDataError(f"{error}; no readable replacement video found (on_error=resample)")

    def to_views(self, clip: torch.Tensor | DeferredClip) -> torch.Tensor | DeferredClip:
        """Transform output ``(K*T, C, H, W)`` or ``(S, K*T, C, H, W)`` as model views.

        Returns ``(C, T, H, W)`` for one view, else ``(K*S, C, T, H, W)``. A DeferredClip's
        frames are laid out the same way and its ``(4,)``/``(S, 4)`` boxes and ``(2,)``/``(S, 2)``
        sizes become ``(4,)``/``(K*S, 4)`` and ``(2,)``/``(K*S, 2)``.
        """
        if isinstance(clip, DeferredClip):
            return DeferredClip(
                self._frame_views(clip.frames),
                self._per_view(clip.boxes),
                self._per_view(clip.sizes),
            )
        return self._frame_views(clip)

    def _frame_views(self, clip: torch.Tensor) -> torch.Tensor:
        views = arrange_views(clip, self.clips_per_sample, self.num_segments)
        return views[0] if len(views) == 1 else views

    def _per_view(self, per_crop: torch.Tensor) -> torch.Tensor:
        crops = per_crop.unsqueeze(0) if per_crop.dim() == 1 else per_crop
        views = crops.repeat(self.clips_per_sample, 1)  # clip-major: view k*S + s is crop s
        return views[0] if len(views) == 1 else views


def check_on_error(on_error: str, sampling: str) -> None:
    """``on_error`` must be a policy of ``ON_ERROR_POLICIES`` that suits ``sampling``.

    Substituting a video ("resample") would put another video's label into evaluation
    metrics, so it needs a training (random) sampling; "exclude" is for evaluation samplings.
    """
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR_POLICIES}")
    training = sampling in RANDOM_MODES
    if on_error == "resample" and not training:
        raise ValueError(
            f"on_error='resample' substitutes videos, which only training may do (sampling "
            f"{' / '.join(RANDOM_MODES)}), got sampling={sampling!r}; evaluation datasets take "
            "'raise' or 'exclude' (eval.on_error)"
        )
    if on_error == "exclude" and training:
        raise ValueError(
            f"on_error='exclude' is for evaluation datasets, got the training sampling "
            f"{sampling!r}; training takes 'raise' or 'resample' (data.on_error)"
        )


class FrameFolderDataset(ClipDataset):
    """Videos as ``root/<record.path>/<filename_tmpl.format(offset + start_index)>`` JPEGs.

    List lines are ``path num_frames label`` (TSM's ``*_videofolder.txt``). With
    ``frame_store="packed"`` each video is read from its packed file ``root/<record.path>.pack``
    instead (``tools/pack_frames.py``; :mod:`rnlvideo.data.packed`): the same JPEG bytes, so the
    same pixels, with one file opened per clip. Samples, views, randomness, list checks,
    ``min_frames``, ``on_error`` and ``device_transform``: see :class:`ClipDataset`.
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
        min_frames: int = DEFAULT_MIN_FRAMES,
        on_error: str = "raise",
        device_transform: bool = False,
        horizontal_flip: bool = False,
        flip_label_map: Mapping[int, int] | str | Path | None = None,
        num_classes: int | None = None,
        slowfast_alpha: int | None = None,
        frame_store: str = "folders",
    ) -> None:
        if frame_store not in FRAME_STORES:
            raise ValueError(f"frame_store={frame_store!r}: expected one of {FRAME_STORES}")
        self.frame_store = frame_store
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"frame root directory not found: {self.root}")
        super().__init__(
            list_file,
            transform,
            num_segments=num_segments,
            sampling=sampling,
            num_clips=num_clips,
            seed=seed,
            min_frames=min_frames,
            on_error=on_error,
            device_transform=device_transform,
            horizontal_flip=horizontal_flip,
            flip_label_map=flip_label_map,
            num_classes=num_classes,
            slowfast_alpha=slowfast_alpha,
        )
        uncounted = [r.path for r in self.records if r.num_frames is None]
        if uncounted:
            raise ValueError(
                f"{list_file}: frame folders need 'path num_frames label' lines; "
                f"{len(uncounted)} lines have no frame count (first: {uncounted[0]})"
            )
        check_filename_template(filename_tmpl)
        self.filename_tmpl = filename_tmpl
        self.start_index = start_index
        self._opened: dict[Path, PackedFrames] = {}  # packed files of the batch being read

    def packed_location(self, record: VideoRecord) -> Path:
        """Where ``record``'s packed file is: ``self.root / (record.path + ".pack")``.

        A path that would leave the root raises :class:`rnlvideo.data.lists.UnsafePathError`.
        """
        return path_under(self.root, f"{record.path}{PACK_SUFFIX}")

    def load_frames(self, record: VideoRecord, offsets: np.ndarray) -> torch.Tensor:
        """The frames at 0-based ``offsets`` as uint8 ``(len(offsets), 3, H, W)``."""
        unique = sorted(set(offsets.tolist()))
        if self.frame_store == "packed":
            where = self.packed_location(record)
            frames = load_packed_frames(where, unique, self._opened.pop(where, None))
            decoded = dict(zip(unique, frames, strict=True))
        else:
            where = self.video_location(record)
            names = {
                offset: self.filename_tmpl.format(offset + self.start_index) for offset in unique
            }
            decoded = {
                offset: load_frame(path_under(self.root, record.path, name))
                for offset, name in names.items()
            }
        sizes = {tuple(frame.shape) for frame in decoded.values()}
        if len(sizes) > 1:
            raise VideoDataError(f"frames of {where} differ in size: {sorted(sizes)}")
        return torch.stack([decoded[offset] for offset in offsets.tolist()])

    def read_clip(self, record: VideoRecord, offsets_for: OffsetsFn) -> torch.Tensor:
        return self.load_frames(record, offsets_for(record.num_frames))

    def __getitems__(self, indices: list[int]) -> list[tuple[Sample, int]]:
        """``[dataset[i] for i in indices]``, a DataLoader's batch.

        From packed files, the batch's files are opened first and the kernel is asked to read
        them ahead, so that their disk reads overlap the decoding (what a cold page cache
        costs); each file is still opened once.
        """
        try:
            if self.frame_store == "packed":
                for index in indices:
                    where = self.packed_location(self.records[index % len(self.records)])
                    if where not in self._opened:
                        try:
                            self._opened[where] = PackedFrames(where, read_ahead=True)
                        except (OSError, PackedFormatError):
                            pass  # raised again, with the policy, when the video is read
            return [self[index] for index in indices]
        finally:
            for packed in self._opened.values():
                packed.close()
            self._opened.clear()
