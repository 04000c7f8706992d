"""Check a split's list file against the data on disk (``tools/check_dataset.py``).

Problem kinds (``PROBLEM_KINDS``): a malformed line or a list without videos, a path that is
absolute or leaves the data root, a missing frame folder, packed file or video, a frame count
that differs from the disk, expected frame files that are absent, a truncated or corrupt packed
file, unreadable frames or videos and frames of one video that differ in size
(``decode=True``), labels out of range, videos listed twice, and a category file that disagrees
with ``data.num_classes``. Videos listed with fewer than
``min_frames`` frames are counted (the datasets leave them out), not reported as problems.

:func:`check_class_count` is the start-of-run check of the category file that training and
evaluation call before building the model.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rnlvideo.config.build import config_node
from rnlvideo.config.targets import resolve_target
from rnlvideo.data.decoders import read_video_frames
from rnlvideo.data.frames import (
    DEFAULT_MIN_FRAMES,
    FrameFolderDataset,
    VideoDataError,
    decode_frame,
    load_frame,
)
from rnlvideo.data.lists import (
    VideoRecord,
    check_filename_template,
    check_label,
    check_list_path,
    iter_list_lines,
    parse_list_line,
    path_under,
    read_categories,
)
from rnlvideo.data.packed import PACK_SUFFIX, PackedFormatError, PackedFrames
from rnlvideo.data.video import VideoFileDataset

logger = logging.getLogger(__name__)

PROBLEM_KINDS = {
    "list": "list file missing or empty, or line malformed",
    "path": "list path absolute or outside the data root",
    "missing": "frame folder, packed file or video file not found",
    "frame_count": "frame count in the list differs from the disk",
    "missing_frame": "frame files absent from a folder",
    "unreadable": "frame, packed file or video cannot be read or decoded",
    "frame_size": "frames of one video differ in size",
    "label": "label out of range",
    "duplicate": "video listed more than once",
    "categories": "category file missing or disagrees with data.num_classes",
}
# Frames named per problem in a message.
_NAMED = 3
_PROGRESS_EVERY = 5000


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (a key of ``PROBLEM_KINDS``), where (a path or file:line), what."""

    kind: str
    where: str
    detail: str


@dataclass(frozen=True)
class ListSettings:
    """What a dataset config node says about the data on disk."""

    kind: str  # "frames" | "video"
    root: Path
    list_file: Path
    filename_tmpl: str = "{:05d}.jpg"
    start_index: int = 1
    min_frames: int = DEFAULT_MIN_FRAMES
    frame_store: str = "folders"  # frames: "folders" | "packed"
    video_backend: str = "auto"  # video: the decoder that probes them


@dataclass
class SplitReport:
    """The result of checking one split."""

    split: str
    settings: ListSettings
    num_videos: int = 0
    num_too_short: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(problem.kind for problem in self.problems)


def list_settings(node: Mapping[str, Any], path: str = "data") -> ListSettings:
    """The settings of a plain ``data.<split>`` node (at ``path``), with the dataset class's
    defaults filled in; only rnlvideo's own dataset classes can be checked."""
    cls = resolve_target(node, path)
    if not isinstance(cls, type):
        raise ValueError(f"{path}: cannot check {cls!r}: expected a frame or video dataset")
    if issubclass(cls, VideoFileDataset):
        kind = "video"
    elif issubclass(cls, FrameFolderDataset):
        kind = "frames"
    else:
        raise ValueError(f"cannot check a {cls.__name__}: expected a frame or video dataset")
    values = {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    values.update(node)
    check_filename_template(values.get("filename_tmpl", "{:05d}.jpg"), f"{path}.filename_tmpl")
    return ListSettings(
        kind=kind,
        root=Path(values["root"]),
        list_file=Path(values["list_file"]),
        filename_tmpl=values.get("filename_tmpl", "{:05d}.jpg"),
        start_index=values.get("start_index", 1),
        min_frames=values.get("min_frames", DEFAULT_MIN_FRAMES),
        frame_store=values.get("frame_store", "folders"),
        video_backend=values.get("video_backend", "auto"),
    )


def _decode_frames(
    folder: Path, names: list[str], decode: Callable[[str], torch.Tensor] | None = None
) -> list[Problem]:
    """Decode frames ``names`` (files of ``folder``, or what ``decode(name)`` returns)."""
    unreadable, shapes = [], set()
    for name in names:
        try:
            frame = load_frame(folder / name) if decode is None else decode(name)
            shapes.add(tuple(frame.shape))
        except VideoDataError as error:
            unreadable.append((name, error))
    problems = []
    if unreadable:
        name, error = unreadable[0]
        where = str(folder / name) if decode is None else str(folder)
        problems.append(
            Problem(
                "unreadable",
                where,
                f"{len(unreadable)} of {len(names)} frames unreadable; first: {error}",
            )
        )
    if len(shapes) > 1:
        problems.append(Problem("frame_size", str(folder), f"frame shapes {sorted(shapes)}"))
    return problems


def check_packed_file(settings: ListSettings, record: VideoRecord, decode: bool) -> list[Problem]:
    """Problems of one packed frame file: missing, truncated or corrupt, frame count; with
    ``decode``, every frame's checksum and JPEG data."""
    path = path_under(settings.root, f"{record.path}{PACK_SUFFIX}")
    try:
        packed = PackedFrames(path)
    except FileNotFoundError:
        return [Problem("missing", str(path), "packed frame file not found")]
    except PackedFormatError as error:
        return [Problem("unreadable", str(path), str(error))]
    with packed:
        try:
            count = packed.count
        except PackedFormatError as error:
            return [Problem("unreadable", str(path), str(error))]
        if count != record.num_frames:
            return [
                Problem(
                    "frame_count",
                    str(path),
                    f"list says {record.num_frames} frames, packed file has {count}",
                )
            ]
        if not decode:
            return []

        def decode_packed(index: str) -> torch.Tensor:
            try:
                (data,) = packed.read([int(index)])
            except PackedFormatError as error:
                raise VideoDataError(str(error)) from error
            frame = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_frame(frame, f"{path} (frame {index})")

        return _decode_frames(path, [str(i) for i in range(count)], decode_packed)


def check_frame_folder(settings: ListSettings, record: VideoRecord, decode: bool) -> list[Problem]:
    """Problems of one frame folder: missing, frame count, absent or unreadable frames."""
    folder = path_under(settings.root, record.path)
    try:
        present = set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return [Problem("missing", str(folder), "frame folder not found")]
    problems = []
    if len(present) != record.num_frames:
        problems.append(
            Problem(
                "frame_count",
                str(folder),
                f"list says {record.num_frames} frames, folder has {len(present)} files",
            )
        )
    expected = [
        settings.filename_tmpl.format(i + settings.start_index) for i in range(record.num_frames)
    ]
    absent = [name for name in expected if name not in present]
    if absent:
        problems.append(
            Problem(
                "missing_frame",
                str(folder),
                f"{len(absent)} of {len(expected)} frame files absent: "
                + ", ".join(absent[:_NAMED])
                + (", ..." if len(absent) > _NAMED else ""),
            )
        )
    if decode:
        problems += _decode_frames(folder, [name for name in expected if name in present])
    return problems


def check_video_file(settings: ListSettings, record: VideoRecord, decode: bool) -> list[Problem]:
    """Problems of one video file: missing or empty; with ``decode``, probe it.

    The probe opens the container, compares its frame count with the list's and decodes the
    first and last frames.
    """
    path = path_under(settings.root, record.path)
    if not path.is_file():
        return [Problem("missing", str(path), "video file not found")]
    if path.stat().st_size == 0:
        return [Problem("unreadable", str(path), "empty file")]
    if not decode:
        return []
    counted = []

    def first_and_last(num_frames: int):
        counted.append(num_frames)
        return [0, num_frames - 1]

    try:
        read_video_frames(path, first_and_last, settings.video_backend)
    except VideoDataError as error:
        return [Problem("unreadable", str(path), str(error))]
    if record.num_frames is not None and counted[0] != record.num_frames:
        return [
            Problem(
                "frame_count",
                str(path),
                f"list says {record.num_frames} frames, container has {counted[0]}",
            )
        ]
    return []


def _parse_records(
    settings: ListSettings, num_classes: int, report: SplitReport
) -> list[VideoRecord]:
    """The list's well-formed records; list, label and duplicate problems go to ``report``."""
    records: list[VideoRecord] = []
    first_seen: dict[str, str] = {}
    for number, line in iter_list_lines(settings.list_file):
        where = f"{settings.list_file}:{number}"
        try:
            record = parse_list_line(line, where)
        except ValueError as error:
            report.problems.append(Problem("list", where, str(error).removeprefix(f"{where}: ")))
            continue
        if settings.kind == "frames" and record.num_frames is None:
            report.problems.append(Problem("list", where, "frame folders need a frame count"))
            continue
        try:
            check_list_path(record.path, where)
        except ValueError as error:
            report.problems.append(Problem("path", where, str(error).removeprefix(f"{where}: ")))
            continue
        try:
            check_label(record.label, num_classes, where)
        except ValueError as error:
            report.problems.append(Problem("label", where, str(error).removeprefix(f"{where}: ")))
        if record.path in first_seen:
            report.problems.append(
                Problem(
                    "duplicate", where, f"{record.path} already listed at {first_seen[record.path]}"
                )
            )
            continue
        first_seen[record.path] = where
        records.append(record)
    return records


def check_categories(category_file: str | Path | None, num_classes: int) -> list[Problem]:
    """The category file must exist, be well formed and name ``num_classes`` classes.

    Nothing is checked when ``category_file`` is None (none configured).
    """
    if category_file is None:
        return []
    try:
        names = read_categories(category_file)
    except FileNotFoundError:
        return [Problem("categories", str(category_file), "category file not found")]
    except ValueError as error:
        where, _, detail = str(error).partition(": ")
        return [Problem("categories", where, detail)]
    if len(names) != num_classes:
        return [
            Problem(
                "categories",
                str(category_file),
                f"{len(names)} classes, data.num_classes is {num_classes}",
            )
        ]
    return []


def check_class_count(category_file: str | Path | None, num_classes: int) -> None:
    """Start-of-run check: ``category_file`` (``data.category_file``) names ``num_classes``.

    Raises ``ValueError`` naming the file when it is missing, malformed or names another
    number of classes than ``data.num_classes``; does nothing when ``category_file`` is None.
    Training and evaluation call it before building the model.
    """
    problems = check_categories(category_file, num_classes)
    if problems:
        raise ValueError(
            "; ".join(f"{p.where}: {p.detail}" for p in problems)
            + " (data.category_file must name data.num_classes classes, one per line)"
        )


def check_list(
    split: str,
    settings: ListSettings,
    num_classes: int,
    decode: bool = False,
    workers: int = 1,
) -> SplitReport:
    """Check every line of ``settings.list_file`` against ``settings.root``."""
    report = SplitReport(split, settings)
    if not settings.list_file.is_file():
        report.problems.append(Problem("list", str(settings.list_file), "list file not found"))
        return report
    records = _parse_records(settings, num_classes, report)
    if not records and not report.problems:
        report.problems.append(Problem("list", str(settings.list_file), "the list names no videos"))
    short = [r for r in records if r.num_frames is not None and r.num_frames < settings.min_frames]
    report.num_too_short = len(short)
    report.num_videos = len(records)
    if not settings.root.is_dir():
        report.problems.append(Problem("missing", str(settings.root), "data root not found"))
        return report
    if settings.kind == "video":
        check = check_video_file
    else:
        check = check_packed_file if settings.frame_store == "packed" else check_frame_folder
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        results = pool.map(lambda record: check(settings, record, decode), records)
        for done, problems in enumerate(results, start=1):
            report.problems += problems
            if done % _PROGRESS_EVERY == 0:
                logger.info("%s: %d / %d videos checked", split, done, len(records))
    return report


def check_split(cfg: DictConfig, split: str, decode: bool = False, workers: int = 1) -> SplitReport:
    """Check ``cfg.data.<split>``'s list against the disk, as training would load it."""
    settings = list_settings(config_node(cfg, f"data.{split}"), f"data.{split}")
    return check_list(split, settings, cfg.data.num_classes, decode, workers)


def check_config_categories(cfg: DictConfig) -> list[Problem]:
    """Problems of ``cfg.data.category_file`` (if configured) against ``data.num_classes``."""
    return check_categories(cfg.data.get("category_file"), cfg.data.num_classes)


def format_report(report: SplitReport, max_problems: int) -> str:
    """A summary of ``report`` and its first ``max_problems`` problems."""
    settings = report.settings
    kind = (
        "packed frames"
        if settings.kind == "frames" and settings.frame_store == "packed"
        else settings.kind
    )
    lines = [
        f"{report.split}: {report.num_videos} videos in {settings.list_file} "
        f"({kind} under {settings.root}): "
        + ("OK" if report.ok else f"{len(report.problems)} problem(s)")
    ]
    if report.num_too_short:
        lines.append(
            f"  {report.num_too_short} videos listed with fewer than {settings.min_frames} frames "
            "(min_frames): left out when loading"
        )
    for kind, count in sorted(report.counts().items()):
        lines.append(f"  {kind:<14}{count:>8}  {PROBLEM_KINDS[kind]}")
    shown = report.problems[:max_problems]
    if shown:
        lines.append(f"  first {len(shown)}:")
        lines += [f"    [{p.kind}] {p.where}: {p.detail}" for p in shown]
    return "\n".join(lines)
