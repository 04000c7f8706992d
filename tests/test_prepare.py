"""List preparation: V1 from the synthetic generator's official-style CSVs, V2, Kinetics."""

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from rnlvideo.data.annotations import prepare_kinetics, read_v1_split, read_v2_labels, v2_label_name
from rnlvideo.data.lists import read_categories, read_video_list

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    spec = importlib.util.spec_from_file_location(Path(relative_path).stem, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def v1_root(tmp_path, small_dataset):
    """A writable copy of the synthetic CSVs, frames linked in as the V1 frames folder."""
    for csv in small_dataset.glob("something-something-v1-*.csv"):
        shutil.copy(csv, tmp_path)
    (tmp_path / "frames").symlink_to(small_dataset / "frames")
    return tmp_path


def named(list_path: Path, categories_path: Path) -> list[tuple[str, int, str]]:
    """``(path, num_frames, class name)`` of every line of a list."""
    names = read_categories(categories_path)
    return [(r.path, r.num_frames, names[r.label]) for r in read_video_list(list_path)]


def run_sthv1(root, *extra) -> int:
    script = load_script("datasets/sthv1/prepare.py")
    return script.main(["--root", str(root), "--frames-dir", "frames", *extra])


def test_sthv1_lists_equal_the_generator_lists(v1_root, small_dataset):
    assert run_sthv1(v1_root) == 0
    categories = read_categories(v1_root / "category.txt")
    assert categories == sorted(categories) == read_categories(small_dataset / "category.txt")
    for ours, theirs in (
        ("train_videofolder.txt", "train.txt"),
        ("val_videofolder.txt", "val.txt"),
    ):
        assert named(v1_root / ours, v1_root / "category.txt") == named(
            small_dataset / theirs, small_dataset / "category.txt"
        )


def test_sthv1_short_and_missing_videos(tmp_path, small_dataset, caplog):
    frames = tmp_path / "frames"
    shutil.copytree(small_dataset / "frames", frames)
    for csv in small_dataset.glob("something-something-v1-*.csv"):
        shutil.copy(csv, tmp_path)
    train_ids = [r.path for r in read_video_list(small_dataset / "train.txt")]
    val_ids = [r.path for r in read_video_list(small_dataset / "val.txt")]
    for video in (train_ids[0], val_ids[0]):  # two frames left: too short for the datasets
        for extra in sorted((frames / video).iterdir())[2:]:
            extra.unlink()
    shutil.rmtree(frames / train_ids[1])
    with caplog.at_level(logging.INFO):
        assert run_sthv1(tmp_path) == 1
    assert "1 annotated videos are missing on disk; nothing written" in caplog.text
    assert f"missing on disk: {train_ids[1]}" in caplog.text
    assert not (tmp_path / "train_videofolder.txt").exists()

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_sthv1(tmp_path, "--allow-missing") == 0
    assert "train_videofolder.txt: 11 videos kept, 1 missing on disk" in caplog.text
    # The lists keep short videos (as TSM's generator); the datasets leave them out.
    train = read_video_list(tmp_path / "train_videofolder.txt")
    assert [r.path for r in train] == [train_ids[0], *train_ids[2:]] and train[0].num_frames == 2
    val = read_video_list(tmp_path / "val_videofolder.txt")
    assert [r.path for r in val] == val_ids and val[0].num_frames == 2


def test_sthv1_bad_csv_line_names_file_and_line(v1_root, caplog):
    csv = v1_root / "something-something-v1-train.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "12345 no separator"
    csv.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR):
        assert run_sthv1(v1_root) == 2
    assert f"{csv}:3: expected 'id;label'" in caplog.text
    with pytest.raises(ValueError, match=r"x.csv:1: unknown label 'Flying'"):
        (v1_root / "x.csv").write_text("7;Flying\n")
        read_v1_split(v1_root / "x.csv", {"Moving something up": 0})


def write_webm(path: Path, num_frames: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(num_frames):
            pixels = np.full((24, 32, 3), 20 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def test_sthv2_lists(tmp_path):
    labels = {"Putting something on something": "1", "Pushing something from left to right": "0"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    train = [
        {"id": "11", "label": "a cup on a box", "template": "Putting [something] on [something]"},
        {"id": "12", "template": "Pushing [something] from left to right"},
        {"id": "13", "template": "Pushing [something] from left to right"},
    ]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "validation.json").write_text(
        json.dumps([{"id": "21", "template": "Putting [something] on [something]"}])
    )
    videos = tmp_path / "20bn-something-something-v2"
    videos.mkdir()
    for video_id, num_frames in (("11", 6), ("12", 2), ("13", 5), ("21", 4)):
        write_webm(videos / f"{video_id}.webm", num_frames)
    script = load_script("datasets/sthv2/prepare.py")
    assert script.main(["--root", str(tmp_path)]) == 0
    assert read_categories(tmp_path / "category.txt") == [
        "Pushing something from left to right",
        "Putting something on something",
    ]
    # video 12 has 2 frames: listed (the datasets leave it out, data.min_frames)
    listed = (tmp_path / "train_videolist.txt").read_text()
    assert listed == "11.webm 6 1\n12.webm 2 0\n13.webm 5 0\n"
    assert (tmp_path / "val_videolist.txt").read_text() == "21.webm 4 1\n"
    (videos / "13.webm").write_bytes(b"\x1a\x45 broken")
    assert script.main(["--root", str(tmp_path)]) == 1  # unreadable: like a missing video
    assert script.main(["--root", str(tmp_path), "--no-count"]) == 0
    assert (tmp_path / "train_videolist.txt").read_text() == "11.webm 1\n12.webm 0\n13.webm 0\n"
    assert v2_label_name("Putting [something] on [something]") == "Putting something on something"
    (tmp_path / "labels.json").write_text(json.dumps({"a": "0", "b": "2"}))
    with pytest.raises(ValueError, match="class indices must be 0..1"):
        read_v2_labels(tmp_path / "labels.json")


def test_kinetics_lists(tmp_path):
    for path in (
        "train/zumba/z1.mp4",
        "train/abseiling/a1.mp4",
        "train/abseiling/a2.mp4",
        "train/abseiling/notes.txt",
        "val/zumba/z9.mp4",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    script = load_script("datasets/kinetics/prepare.py")
    assert script.main(["--root", str(tmp_path)]) == 0
    assert read_categories(tmp_path / "category.txt") == ["abseiling", "zumba"]
    assert (tmp_path / "train_videolist.txt").read_text() == (
        "train/abseiling/a1.mp4 0\ntrain/abseiling/a2.mp4 0\ntrain/zumba/z1.mp4 1\n"
    )
    assert (tmp_path / "val_videolist.txt").read_text() == "val/zumba/z9.mp4 1\n"
    (tmp_path / "val/yoga").mkdir()
    with pytest.raises(ValueError, match="not among the training classes: \\['yoga'\\]"):
        prepare_kinetics(tmp_path)
