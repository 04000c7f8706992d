"""List and category files: the list format (paths with spaces), atomic writes, strict reading."""

import os

import pytest

from rnlvideo.data.annotations import prepare_kinetics, write_prepared_lists
from rnlvideo.data.lists import (
    VideoRecord,
    format_list_line,
    parse_list_line,
    read_categories,
    read_video_list,
    write_lines,
)
from rnlvideo.data.video import VideoFileDataset

KINETICS_VIDEOS = [
    "train/air drumming/clip 1.mp4",
    "train/air drumming/clip2.mp4",
    "train/zumba/z 9 12.mp4",  # a name ending in a number: not a frame count
    "val/air drumming/v1.mp4",
    "val/zumba/v2.mp4",
]


@pytest.mark.parametrize(
    "record",
    [
        VideoRecord("train/air drumming/clip 1.mp4", None, 3),
        VideoRecord("folder 12", None, 7),  # ends like 'path num_frames label'
        VideoRecord("with 2 spaces", 40, 1),
        VideoRecord('"quoted".mp4', None, 0),
        VideoRecord("ünïcödé/ok", 5, 2),
        VideoRecord("plain/12345", 37, 173),
    ],
)
def test_list_lines_read_back_exactly(record):
    line = format_list_line(record)
    assert parse_list_line(line, "x:1") == record
    if " " not in record.path and '"' not in record.path:
        assert line.split()[0] == record.path  # TSM's format, unchanged


def test_unquoted_spaces_and_bad_quotes_are_errors(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text('a 3 0\ntrain/air drumming/x.mp4 5 0\n"unterminated 5 0\n"a"5 0\n')
    with pytest.raises(ValueError, match=r"list.txt:2: .*quote a path that holds spaces"):
        parse_list_line("train/air drumming/x.mp4 5 0", f"{path}:2")
    with pytest.raises(ValueError, match=r"list.txt:3: unterminated or malformed quoted path"):
        parse_list_line('"unterminated 5 0', f"{path}:3")
    with pytest.raises(ValueError, match=r"list.txt:4: expected a quoted path then whitespace"):
        parse_list_line('"a"5 0', f"{path}:4")


def test_kinetics_lists_with_spaces_round_trip(tmp_path):
    for video in KINETICS_VIDEOS:
        (tmp_path / video).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / video).write_bytes(b"")
    assert write_prepared_lists(prepare_kinetics(tmp_path), tmp_path, allow_missing=False)
    categories = read_categories(tmp_path / "category.txt")
    assert categories == ["air drumming", "zumba"]
    train = read_video_list(tmp_path / "train_videolist.txt", num_classes=2)
    assert [(r.path, categories[r.label]) for r in train] == [
        (KINETICS_VIDEOS[0], "air drumming"),
        (KINETICS_VIDEOS[1], "air drumming"),
        (KINETICS_VIDEOS[2], "zumba"),
    ]
    dataset = VideoFileDataset(tmp_path, tmp_path / "val_videolist.txt", None, num_classes=2)
    assert all(dataset.video_location(r).is_file() for r in dataset.records)
    assert [r.path for r in dataset.records] == KINETICS_VIDEOS[3:]


def test_write_lines_replaces_the_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "train.txt"
    write_lines(path, ["old 3 0"])
    real_fsync = os.fsync

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_lines(path, ["new 4 1", "new2 5 1"])
    assert path.read_text() == "old 3 0\n"  # the old list, complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]  # no temporary left
    monkeypatch.setattr(os, "fsync", real_fsync)
    write_lines(path, ["new 4 1", "new2 5 1"])
    assert path.read_text() == "new 4 1\nnew2 5 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]
    with pytest.raises(ValueError, match="line 2 to write holds a line break"):
        write_lines(path, ["fine", "two\nlines"])
    assert path.read_text() == "new 4 1\nnew2 5 1\n"


def test_category_files_are_read_strictly(tmp_path):
    path = tmp_path / "category.txt"
    path.write_text("a\nb\n\n\n")
    assert read_categories(path) == ["a", "b"]  # trailing blank lines are fine
    path.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match=r"category.txt:2: empty class name"):
        read_categories(path)
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"category.txt:3: class name 'a' already on line 1"):
        read_categories(path)
