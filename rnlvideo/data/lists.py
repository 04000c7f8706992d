"""Video list files: reading TSM lists, and making them from the official annotations.

A list file has one video per line, ``path num_frames label`` (TSM's ``*_videofolder.txt``) or
``path label`` (video files whose frame count is read from the container). ``path`` is relative
to the dataset's frame or video root and may not leave it (no absolute paths, no ``..``). A
path holding whitespace (Kinetics class folders such as ``air drumming``) is written as a JSON
string, ``"train/air drumming/x.mp4" 0``, so every line reads back unambiguously; plain paths
are written bare, as TSM writes them. ``category.txt`` holds the class names, line ``i`` being
class ``i``. Lists and category files are written atomically (temporary file, fsync, rename).

Makers for the official annotation formats:
- Something-Something V1: ``something-something-v1-labels.csv`` (one class per line) and
  ``-train.csv`` / ``-validation.csv`` (``id;label`` lines) -> frame-folder lists;
- Something-Something V2: ``labels.json`` (``{name: "idx"}``) and ``train.json`` /
  ``validation.json`` (``[{"id", "template", ...}]``) -> ``<id>.webm`` video lists;
- Kinetics: ``<split>/<class name>/<clip>.mp4`` folders -> ``path label`` video lists.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rnlvideo.files import write_text_atomic

logger = logging.getLogger(__name__)

CATEGORY_FILENAME = "category.txt"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass(frozen=True)
class VideoRecord:
    """One line of a list file: path (relative to the root), frame count (or None), class."""

    path: str
    num_frames: int | None
    label: int


_LINE_FORMAT = "'path num_frames label' or 'path label'"


def _split_path(line: str, where: str) -> tuple[str, list[str]]:
    """``(path, remaining fields)``; a path starting with ``"`` is a JSON string."""
    text = line.strip()
    if not text:
        raise ValueError(f"{where}: expected {_LINE_FORMAT}, got an empty line")
    if not text.startswith('"'):
        path, *fields = text.split()
        return path, fields
    try:
        path, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        raise ValueError(f"{where}: unterminated or malformed quoted path in {line!r}") from None
    rest = text[end:]
    if not isinstance(path, str) or (rest and not rest[0].isspace()):
        raise ValueError(f"{where}: expected a quoted path then whitespace, got {line!r}")
    return path, rest.split()


def parse_list_line(line: str, where: str) -> VideoRecord:
    """``path num_frames label`` or ``path label``; errors start with ``where`` (file:line).

    ``path`` is a bare word or a JSON string (for paths holding whitespace); it is not checked
    here (see :func:`check_list_path`).
    """
    path, fields = _split_path(line, where)
    try:
        if len(fields) == 2:
            num_frames, label = int(fields[0]), int(fields[1])
        elif len(fields) == 1:
            num_frames, label = None, int(fields[0])
        else:
            raise ValueError
    except ValueError:
        hint = "; quote a path that holds spaces as a JSON string" if len(fields) > 2 else ""
        raise ValueError(f"{where}: expected {_LINE_FORMAT}, got {line!r}{hint}") from None
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"{where}: num_frames must be positive, got {line!r}")
    if label < 0:
        raise ValueError(f"{where}: label must be non-negative, got {line!r}")
    return VideoRecord(path, num_frames, label)


def check_list_path(path: str, where: str) -> None:
    """Refuse a list path that is empty, absolute, has a ``..`` part or control characters.

    List paths are joined to the data root, so any of these could read outside it.
    """
    if not path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError(f"{where}: path {path!r} is empty or holds control characters")
    if PurePosixPath(path).is_absolute():
        raise ValueError(
            f"{where}: path {path!r} is absolute; list paths must be relative to the data root"
        )
    if ".." in PurePosixPath(path).parts:
        raise ValueError(
            f"{where}: path {path!r} has a '..' part; it must stay under the data root"
        )


class UnsafePathError(ValueError):
    """A path built from a list or a config would leave its data root."""


# A frame-index field: ``{}`` / ``{0}`` with an optional decimal width (``{:05d}``).
_INDEX_SPEC = re.compile(r"0?\d*d?")


def check_filename_template(template: str, where: str = "filename_tmpl") -> None:
    """Refuse a frame-file template other than a relative path with one frame-index field.

    ``{:05d}.jpg`` and ``img_{:05d}.jpg`` are fine; an absolute template, a ``..`` part,
    control characters, no or several fields, or a field other than a decimal index raise
    ``ValueError`` starting with ``where``.
    """
    if not isinstance(template, str):
        raise ValueError(f"{where}={template!r}: expected a string such as '{{:05d}}.jpg'")
    try:
        fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as err:
        raise ValueError(f"{where}={template!r}: not a format string ({err})") from None
    if len(fields) != 1:
        raise ValueError(
            f"{where}={template!r}: expected exactly one frame-index field such as {{:05d}}, "
            f"found {len(fields)}"
        )
    _, name, spec, conversion = fields[0]
    if name not in ("", "0") or conversion or not _INDEX_SPEC.fullmatch(spec or ""):
        raise ValueError(
            f"{where}={template!r}: the field must be the frame index as a decimal number, "
            "such as {} or {:05d}"
        )
    check_list_path(template.format(1), f"{where}={template!r}")


def path_under(root: str | Path, *parts: str) -> Path:
    """``root / parts...``, refusing any part that is absolute or has a ``..`` component.

    Every path the datasets open is built here, after the list and template checks, so that
    nothing read from a file can point outside the data root. Symbolic links inside the root
    are the dataset owner's and are followed.
    """
    for part in parts:
        pure = PurePosixPath(part)
        if not part or pure.is_absolute() or ".." in pure.parts or "\x00" in part:
            raise UnsafePathError(f"{part!r} would leave the data root {root}")
    return Path(root).joinpath(*parts)


def check_label(label: int, num_classes: int, where: str) -> None:
    """Refuse a label outside ``[0, num_classes)``; the message starts with ``where``."""
    if not 0 <= label < num_classes:
        raise ValueError(
            f"{where}: label {label} is out of range: expected 0 <= label < {num_classes} "
            f"(data.num_classes)"
        )


def format_list_line(record: VideoRecord) -> str:
    """The list-file line of ``record`` (read back by :func:`parse_list_line`).

    The path is written as a JSON string when it holds whitespace or non-printable characters
    or starts with ``"``; bare otherwise.
    """
    path = record.path
    if not path or path[0] == '"' or any(c.isspace() or not c.isprintable() for c in path):
        path = json.dumps(path, ensure_ascii=False)
    if record.num_frames is None:
        return f"{path} {record.label}"
    return f"{path} {record.num_frames} {record.label}"


def iter_list_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines of a text file (numbers start at 1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video list file not found: {path}")
    # utf-8-sig: a byte-order mark (some editors write one) is not part of the first path.
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.rstrip("\n")


def read_video_list(path: str | Path, num_classes: int | None = None) -> list[VideoRecord]:
    """Parse and check a list file; blank lines are skipped.

    Every path must stay under the data root (:func:`check_list_path`) and, with
    ``num_classes``, every label must lie in ``[0, num_classes)``; a video listed twice would
    count twice in every metric, so a repeated path is refused with both lines. The first bad
    line raises ``ValueError`` starting with ``file:line``.
    """
    records = []
    first_line: dict[str, int] = {}
    for number, line in iter_list_lines(path):
        where = f"{path}:{number}"
        record = parse_list_line(line, where)
        check_list_path(record.path, where)
        if num_classes is not None:
            check_label(record.label, num_classes, where)
        if record.path in first_line:
            raise ValueError(
                f"{where}: video {record.path!r} is listed again (first at "
                f"{path}:{first_line[record.path]}); each video may appear once"
            )
        first_line[record.path] = number
        records.append(record)
    return records


def read_categories(path: str | Path) -> list[str]:
    """Class names from ``category.txt``, one per line (line ``i`` is class ``i``).

    Trailing blank lines are ignored; a blank line before a name (it would shift every later
    class) or a name given twice raises ``ValueError`` with ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"category file not found: {path}")
    with path.open(encoding="utf-8-sig") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    first_line: dict[str, int] = {}
    for number, name in enumerate(lines, start=1):
        if not name:
            raise ValueError(
                f"{path}:{number}: empty class name (line {number} is class {number - 1})"
            )
        if name in first_line:
            raise ValueError(
                f"{path}:{number}: class name {name!r} already on line {first_line[name]}"
            )
        first_line[name] = number
    return lines


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path``, each ending with a newline, atomically.

    The text goes to a temporary file in the same directory, is flushed and fsynced, then
    renamed over ``path``: a reader sees the old or the complete new file, never a part. A line
    holding a newline raises ``ValueError`` (it would read back as two lines).
    """
    path = Path(path)
    lines = list(lines)
    for number, line in enumerate(lines, start=1):
        if "\n" in line or "\r" in line:
            raise ValueError(f"{path}: line {number} to write holds a line break: {line!r}")
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))


# ------------------------------------------------------------------------------ list making
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
    from rnlvideo.data.decoders import count_frames  # imported here: decoders -> frames -> lists
    from rnlvideo.data.frames import VideoDataError

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
