"""Video lists made from the official annotations (``datasets/*/prepare.py``).

- Something-Something V1: ``something-something-v1-labels.csv`` (one class per line) and
  ``-train.csv`` / ``-validation.csv`` (``id;label`` lines) -> frame-folder lists;
- Something-Something V2: ``labels.json`` (``{name: "idx"}``) and ``train.json`` /
  ``validation.json`` (``[{"id", "template", ...}]``) -> ``<id>.webm`` video lists;
- Kinetics: ``<split>/<class name>/<clip>.mp4`` folders -> ``path label`` video lists.

The lists are written in the format :mod:`rnlvideo.data.lists` reads.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rnlvideo.data.decoders import count_frames
from rnlvideo.data.frames import VideoDataError
from rnlvideo.data.lists import (
    CATEGORY_FILENAME,
    VIDEO_EXTENSIONS,
    VideoRecord,
    check_list_path,
    format_list_line,
    iter_list_lines,
    write_lines,
)

logger = logging.getLogger(__name__)


@dataclass
class SplitList:
    """A list made from annotations: the kept records and the videos missing on disk.

    ``missing``: not on disk (or, for video files, not readable). Short videos are kept: the
    datasets leave out those with fewer than ``data.min_frames`` frames, in every split.
    """

    records: list[VideoRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The list-file lines: ``path num_frames label``, or ``path label`` without a count."""
        return [format_list_line(record) for record in self.records]


def make_split_list(
    entries: Iterable[tuple[str, int]], count_frames: Callable[[str], int | None] | None
) -> SplitList:
    """Records for ``(path, label)`` entries, counting each video's frames on disk.

    ``count_frames(path)`` returns None for a missing (or unreadable) video, listed in
    ``missing``. With ``count_frames=None`` nothing is counted and every entry is kept without
    a frame count.
    """
    split = SplitList()
    for path, label in entries:
        num_frames = None if count_frames is None else count_frames(path)
        if count_frames is not None and num_frames is None:
            split.missing.append(path)
        else:
            split.records.append(VideoRecord(path, num_frames, label))
    return split


def count_files(folder: str | Path) -> int | None:
    """Number of entries in ``folder`` (TSM's frame count), or None if it is not a folder."""
    try:
        return len(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None


def count_video_frames(path: str | Path, video_backend: str = "auto") -> int | None:
    """Frames of a video file as ``video_backend`` counts them (every backend counts the same);
    None if it is missing or unreadable, which is logged with the decoder's error.
    """
    if not Path(path).is_file():
        return None
    try:
        return count_frames(path, video_backend)
    except VideoDataError as exc:
        logger.warning("%s", exc)
        return None


def label_index(categories: list[str]) -> dict[str, int]:
    """``{name: index}`` of a category list."""
    return {name: index for index, name in enumerate(categories)}


# --------------------------------------------------------------------- Something-Something V1
def read_v1_labels(path: str | Path) -> list[str]:
    """The class names of ``something-something-v1-labels.csv``, sorted as TSM sorts them."""
    names = [line.strip() for _, line in iter_list_lines(path)]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{path}: duplicate labels {duplicates}")
    return sorted(names)


def read_v1_split(path: str | Path, labels: dict[str, int]) -> list[tuple[str, int]]:
    """``(video id, class index)`` of each ``id;label`` line of a V1 split CSV.

    A line without ``;``, with an empty id or with a label not in ``labels`` raises
    ``file:line: ...``.
    """
    entries = []
    for number, line in iter_list_lines(path):
        video_id, sep, name = line.strip().partition(";")
        where = f"{path}:{number}"
        if not sep or not video_id or not name:
            raise ValueError(f"{where}: expected 'id;label', got {line!r}")
        if name not in labels:
            raise ValueError(f"{where}: unknown label {name!r} (not in the labels CSV)")
        check_list_path(video_id, where)
        entries.append((video_id, labels[name]))
    return entries


# --------------------------------------------------------------------- Something-Something V2
def v2_label_name(template: str) -> str:
    """The V2 class name of a template: ``"Putting [something] on ..."`` without the brackets."""
    return template.replace("[", "").replace("]", "")


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def read_v2_labels(path: str | Path) -> list[str]:
    """The class names of V2's ``labels.json`` (``{name: "index"}``), in index order."""
    path = Path(path)
    mapping = _load_json(path)
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected a JSON object {{name: index}}")
    try:
        by_index = {int(index): name for name, index in mapping.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: class indices must be integers") from None
    if sorted(by_index) != list(range(len(mapping))):
        raise ValueError(f"{path}: class indices must be 0..{len(mapping) - 1}, each once")
    return [by_index[i] for i in range(len(mapping))]


def read_v2_split(
    path: str | Path, labels: dict[str, int], extension: str = ".webm"
) -> list[tuple[str, int]]:
    """``(<id><extension>, class index)`` of each entry of a V2 ``train.json``/``validation.json``.

    An entry without ``id``/``template`` or whose template names no known class raises an error
    naming the file and the entry's position.
    """
    path = Path(path)
    items = _load_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of videos")
    entries = []
    for position, item in enumerate(items):
        where = f"{path}: entry {position}"
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise ValueError(f"{where}: expected an object with 'id' and 'template'")
        name = v2_label_name(item["template"])
        if name not in labels:
            raise ValueError(f"{where}: unknown class {name!r} (not in labels.json)")
        check_list_path(f"{item['id']}{extension}", where)
        entries.append((f"{item['id']}{extension}", labels[name]))
    return entries


# ------------------------------------------------------------------------------------ Kinetics
def scan_class_folders(
    root: str | Path, split_dir: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> dict[str, list[str]]:
    """``{class name: [video paths relative to root]}`` of ``root/split_dir/<class>/<video>``."""
    split_root = Path(root) / split_dir
    if not split_root.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_root}")
    classes = {}
    for class_dir in sorted(p for p in split_root.iterdir() if p.is_dir()):
        classes[class_dir.name] = sorted(
            f"{split_dir}/{class_dir.name}/{video.name}"
            for video in class_dir.iterdir()
            if video.suffix.lower() in extensions
        )
    return classes


def class_folder_entries(
    videos_by_class: dict[str, list[str]], labels: dict[str, int]
) -> list[tuple[str, int]]:
    """``(path, class index)`` pairs; a class folder not in ``labels`` raises."""
    unknown = sorted(set(videos_by_class) - set(labels))
    if unknown:
        raise ValueError(f"class folders not among the training classes: {unknown}")
    return [(path, labels[name]) for name, paths in videos_by_class.items() for path in paths]


# ------------------------------------------------------------------------- whole data sets
@dataclass
class PreparedLists:
    """The class names and the lists of one data set, by list file name."""

    categories: list[str]
    splits: dict[str, SplitList]

    def num_missing(self) -> int:
        return sum(len(split.missing) for split in self.splits.values())

    def log_summary(self, max_named: int = 10) -> None:
        """Log the kept / missing counts of every list and name the first missing videos."""
        logger.info("%d classes", len(self.categories))
        for name, split in self.splits.items():
            logger.info(
                "%s: %d videos kept, %d missing on disk",
                name,
                len(split.records),
                len(split.missing),
            )
            for path in split.missing[:max_named]:
                logger.warning("%s: missing on disk: %s", name, path)
            if len(split.missing) > max_named:
                logger.warning(
                    "%s: ... %d more missing on disk", name, len(split.missing) - max_named
                )

    def write(self, root: str | Path) -> list[Path]:
        """Write ``category.txt`` and the lists under ``root``; returns the paths written."""
        root = Path(root)
        written = [root / CATEGORY_FILENAME]
        write_lines(written[0], self.categories)
        for name, split in self.splits.items():
            write_lines(root / name, split.lines())
            written.append(root / name)
        return written


def prepare_sthv1(
    root: str | Path, frames_dir: str = "20bn-something-something-v1"
) -> PreparedLists:
    """V1 lists from the official CSVs in ``root`` and the frame folders in ``root/frames_dir``.

    ``category.txt`` = the sorted labels; ``train_videofolder.txt`` / ``val_videofolder.txt``
    = ``id num_frames class`` with ``num_frames`` the number of files in the video's folder.
    Every video on disk is listed; the datasets leave out short ones (``data.min_frames``).
    """
    root = Path(root)
    categories = read_v1_labels(root / "something-something-v1-labels.csv")
    labels = label_index(categories)
    splits = {}
    for list_name, csv_name in (
        ("train_videofolder.txt", "something-something-v1-train.csv"),
        ("val_videofolder.txt", "something-something-v1-validation.csv"),
    ):
        entries = read_v1_split(root / csv_name, labels)
        splits[list_name] = make_split_list(
            entries, lambda path: count_files(root / frames_dir / path)
        )
    return PreparedLists(categories, splits)


def prepare_sthv2(
    root: str | Path,
    videos_dir: str = "20bn-something-something-v2",
    count: bool = True,
    video_backend: str = "auto",
) -> PreparedLists:
    """V2 lists from ``labels.json``, ``train.json``, ``validation.json`` in ``root``.

    ``category.txt`` in ``labels.json``'s index order; ``train_videolist.txt`` /
    ``val_videolist.txt`` = ``<id>.webm num_frames class`` (the frame count as
    ``video_backend`` decodes it; with ``count=False`` ``<id>.webm class`` and the dataset
    reads the count when loading).
    """
    root = Path(root)
    categories = read_v2_labels(root / "labels.json")
    labels = label_index(categories)
    counter = (
        (lambda path: count_video_frames(root / videos_dir / path, video_backend))
        if count
        else None
    )
    splits = {}
    for list_name, json_name in (
        ("train_videolist.txt", "train.json"),
        ("val_videolist.txt", "validation.json"),
    ):
        entries = read_v2_split(root / json_name, labels)
        splits[list_name] = make_split_list(entries, counter)
    return PreparedLists(categories, splits)


def prepare_kinetics(
    root: str | Path, train_dir: str = "train", val_dir: str = "val"
) -> PreparedLists:
    """Kinetics lists from ``root/{train,val}/<class name>/<clip>.mp4`` folders.

    ``category.txt`` = the sorted class folders of ``train_dir``; ``train_videolist.txt`` /
    ``val_videolist.txt`` = ``<split>/<class>/<clip> class`` (frame counts are read from the
    containers when loading).
    """
    train = scan_class_folders(root, train_dir)
    categories = sorted(train)
    labels = label_index(categories)
    splits = {}
    for list_name, videos in (
        ("train_videolist.txt", train),
        ("val_videolist.txt", scan_class_folders(root, val_dir)),
    ):
        splits[list_name] = make_split_list(class_folder_entries(videos, labels), None)
    return PreparedLists(categories, splits)


def write_prepared_lists(prepared: PreparedLists, root: str | Path, allow_missing: bool) -> bool:
    """Log ``prepared``, then write it under ``root`` unless videos are missing.

    Returns False (nothing written) when some listed videos are missing on disk and
    ``allow_missing`` is off; with ``allow_missing`` they are left out of the lists.
    """
    prepared.log_summary()
    missing = prepared.num_missing()
    if missing and not allow_missing:
        logger.error(
            "%d annotated videos are missing on disk; nothing written (pass --allow-missing "
            "to leave them out of the lists)",
            missing,
        )
        return False
    for path in prepared.write(root):
        logger.info("wrote %s", path)
    return True
