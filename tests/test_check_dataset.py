"""tools/check_dataset.py and rnlvideo.data.checks: every problem kind, frames and videos."""

import importlib.util
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rnlvideo.config import compose_config
from rnlvideo.data.checks import (
    PROBLEM_KINDS,
    Problem,
    check_config_categories,
    check_split,
    format_report,
)
from rnlvideo.data.lists import read_video_list
from tests.test_prepare import write_webm

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture
def root(tmp_path, small_dataset):
    shutil.copytree(small_dataset, tmp_path / "data")
    return tmp_path / "data"


def check(root, split="train", decode=False, *overrides):
    cfg = compose_config([f"data.root={root}", *overrides])
    return check_split(cfg, split, decode=decode, workers=2)


def test_a_good_dataset_passes(root):
    for split in ("train", "val"):
        report = check(root, split, True)
        assert report.ok and report.num_videos == 12, report.problems


def test_every_frame_folder_problem_is_found(root):
    records = read_video_list(root / "train.txt")
    frames = root / "frames"
    shutil.rmtree(frames / records[0].path)  # missing
    (frames / records[1].path / "extra.jpg").write_bytes(b"")  # frame_count
    third = frames / records[2].path
    (third / "00003.jpg").rename(third / "renamed.jpg")  # missing_frame
    (frames / records[3].path / "00002.jpg").write_bytes(b"not a jpeg")  # unreadable
    Image.new("RGB", (20, 20)).save(frames / records[4].path / "00001.jpg")  # frame_size
    with (root / "train.txt").open("a") as f:
        f.write(f"{records[5].path} {records[5].num_frames} 12\n")  # label, duplicate
        f.write("malformed line with words\n")  # list
        f.write("../../etc 5 0\n")  # path
    report = check(root, "train", True)
    by_kind = {}
    for problem in report.problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    assert set(by_kind) == set(PROBLEM_KINDS) - {"categories"}
    assert by_kind["missing"][0].where.endswith(f"frames/{records[0].path}")
    assert f"folder has {records[1].num_frames + 1} files" in by_kind["frame_count"][0].detail
    assert "00003.jpg" in by_kind["missing_frame"][0].detail
    assert by_kind["unreadable"][0].where.endswith(f"{records[3].path}/00002.jpg")
    assert by_kind["label"][0].where == f"{root / 'train.txt'}:13"
    assert "label 12 is out of range: expected 0 <= label < 12" in by_kind["label"][0].detail
    assert f"already listed at {root / 'train.txt'}:6" in by_kind["duplicate"][0].detail
    assert by_kind["list"][0].where == f"{root / 'train.txt'}:14"
    assert by_kind["path"][0].where == f"{root / 'train.txt'}:15"
    assert "'../../etc' has a '..' part" in by_kind["path"][0].detail
    # without --decode the JPEGs are not opened
    assert {p.kind for p in check(root, "train").problems} == set(by_kind) - {
        "unreadable",
        "frame_size",
    }


def test_empty_lists_and_short_videos_are_reported(root, capsys):
    lines = (root / "val.txt").read_text().splitlines()
    (root / "val.txt").write_text("\n".join([lines[0].rsplit(" ", 2)[0] + " 2 0", *lines[1:]]))
    report = check(root, "val")
    assert report.num_too_short == 1 and report.num_videos == 12
    assert "1 videos listed with fewer than 3 frames (min_frames)" in format_report(report, 5)
    (root / "val.txt").write_text("\n\n")
    report = check(root, "val")
    assert report.problems == [Problem("list", str(root / "val.txt"), "the list names no videos")]


def test_categories_must_match_num_classes(root):
    cfg = compose_config([f"data.root={root}", "data.num_classes=13"])
    assert check_config_categories(cfg) == [
        Problem("categories", str(root / "category.txt"), "12 classes, data.num_classes is 13")
    ]
    (root / "category.txt").write_text("a\n\nb\n")
    assert check_config_categories(cfg) == [
        Problem("categories", f"{root / 'category.txt'}:2", "empty class name (line 2 is class 1)")
    ]
    (root / "category.txt").unlink()
    assert [p.detail for p in check_config_categories(cfg)] == ["category file not found"]


def test_video_file_problems(tmp_path):
    videos = tmp_path / "20bn-something-something-v2"
    videos.mkdir()
    write_webm(videos / "1.webm", num_frames=6)
    write_webm(videos / "2.webm", num_frames=6)
    (videos / "3.webm").write_bytes(b"")
    (videos / "4.webm").write_bytes(b"\x00garbage" * 64)
    (tmp_path / "category.txt").write_text("".join(f"class {i}\n" for i in range(174)))
    (tmp_path / "train_videolist.txt").write_text(
        "1.webm 6 0\n2.webm 7 1\n3.webm 2\n4.webm 3\n5.webm 4\n"
    )
    report = check(tmp_path, "train", False, "data=sthv2")
    assert [(p.kind, Path(p.where).name) for p in report.problems] == [
        ("unreadable", "3.webm"),
        ("missing", "5.webm"),
    ]
    report = check(tmp_path, "train", True, "data=sthv2")
    assert [(p.kind, Path(p.where).name) for p in report.problems] == [
        ("frame_count", "2.webm"),
        ("unreadable", "3.webm"),
        ("unreadable", "4.webm"),
        ("missing", "5.webm"),
    ]
    assert "list says 7 frames, container has 6" in report.problems[0].detail


def test_the_tool_prints_problems_and_fails(root, capsys):
    spec = importlib.util.spec_from_file_location("check_dataset", REPO / "tools/check_dataset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([f"data.root={root}", "--split", "val", "--workers", "1"]) == 0
    shutil.rmtree(root / "frames")
    assert tool.main([f"data.root={root}", "--max-problems", "1"]) == 1
    out = capsys.readouterr().out
    assert "train: 12 videos" in out and "missing" in out and "first 1:" in out
    assert "data root not found" in out and "How to prepare the data" in out
    (root / "category.txt").write_text("just one class\n")
    assert tool.main([f"data.root={root}", "--split", "val"]) == 1
    assert "[categories]" in capsys.readouterr().out
