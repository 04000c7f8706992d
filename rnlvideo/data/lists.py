"""Video list files and category files: reading and checking them, writing them atomically.

A list file has one video per line, ``path num_frames label`` (TSM's ``*_videofolder.txt``) or
``path label`` (video files whose frame count is read from the container). ``path`` is relative
to the dataset's frame or video root and may not leave it (no absolute paths, no ``..``). A
path holding whitespace (Kinetics class folders such as ``air drumming``) is written as a JSON
string, ``"train/air drumming/x.mp4" 0``, so every line reads back unambiguously; plain paths
are written bare, as TSM writes them. ``category.txt`` holds the class names, line ``i`` being
class ``i``. Lists and category files are written atomically (temporary file, fsync, rename).
Lists are made from the official annotations by :mod:`rnlvideo.data.annotations`.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def class_names_for(
    list_file: str | Path, num_classes: int, category_file: str | Path | None = None
) -> list[str]:
    """Class names, line ``i`` of the category file naming class ``i``.

    The category file is ``category_file`` if given, else ``category.txt`` next to the video list
    (the TSM / V1 layout: ``<root>/val_videofolder.txt`` and ``<root>/category.txt``). Without a
    usable file (missing, malformed, or not ``num_classes`` names) the names are the class
    indices.
    """
    path = Path(category_file) if category_file else Path(list_file).parent / CATEGORY_FILENAME
    if not path.is_file():
        logger.info("no category file at %s: classes are named by index", path)
        return [str(i) for i in range(num_classes)]
    try:
        names = read_categories(path)
    except ValueError as error:
        logger.warning("%s: classes are named by index", error)
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        logger.warning(
            "%s names %d classes, the model has %d: classes are named by index",
            path,
            len(names),
            num_classes,
        )
        return [str(i) for i in range(num_classes)]
    return names
