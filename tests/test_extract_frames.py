"""tools/extract_frames.py and rnlvideo.data.extraction: layout, options, lists, failures and
resuming after an interruption. The videos show their frame index (tests/test_decoders.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnlvideo.data import decoders, extraction
from rnlvideo.data.encode import write_video
from rnlvideo.data.frames import FrameFolderDataset, load_frame
from rnlvideo.data.lists import read_video_list
from tests.test_decoders import HEIGHT, PIXEL_TOLERANCE, WIDTH, index_frame, read_index
from tests.test_prepare import load_script

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
extract_tool = load_script("tools/extract_frames.py")
REPO = Path(__file__).resolve().parents[1]
LENGTHS = {"a.mp4": 30, "b.webm": 20, "class x/c.mp4": 25}


@pytest.fixture(scope="module")
def pristine_videos(module_tmp_path) -> Path:
    root = module_tmp_path
    for name, length in LENGTHS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, (index_frame(i) for i in range(length)))
    (root / "list.txt").write_text('a.mp4 1\nb.webm 20 2\n"class x/c.mp4" 3\n')
    return root


@pytest.fixture
def videos(tmp_path, pristine_videos) -> Path:
    shutil.copytree(pristine_videos, tmp_path / "videos")
    return tmp_path / "videos"


def folder_indices(folder: Path) -> list[int]:
    """The frame indices the JPEG files of ``folder`` show, in file order."""
    return [read_index(load_frame(path)) for path in sorted(folder.iterdir())]


def run(videos: Path, frames: Path, *options: str) -> int:
    return extract_tool.main(["--videos", str(videos), "--frames", str(frames), *options])


def test_videos_become_frame_folders_and_lists(videos, tmp_path, capsys):
    frames = tmp_path / "frames"
    out_list = tmp_path / "lists" / "frames.txt"
    assert run(videos, frames, "--list", str(videos / "list.txt"), str(out_list)) == 0
    assert read_video_list(out_list) == [
        read_video_list(out_list)[0].__class__(path, LENGTHS[video], label)
        for path, video, label in (
            ("a", "a.mp4", 1),
            ("b", "b.webm", 2),
            ("class x/c", "class x/c.mp4", 3),
        )
    ]
    for video, length in LENGTHS.items():
        folder = frames / extraction.frame_folder_name(video)
        assert sorted(os.listdir(folder)) == [f"{i:05d}.jpg" for i in range(1, length + 1)]
        assert folder_indices(folder) == list(range(length))
        assert load_frame(folder / "00001.jpg").shape == (3, HEIGHT, WIDTH)
    dataset = FrameFolderDataset(
        frames, out_list, lambda v, r: v, num_segments=4, sampling="tsn_test"
    )
    clip, label = dataset[2]
    assert label == 3 and [read_index(f) for f in clip.transpose(0, 1)] == [3, 9, 15, 21]
    assert (
        "3 of 3 videos extracted (0 finished by an earlier run), 0 failed"
        in capsys.readouterr().out
    )


def test_size_quality_and_fps_options(videos, tmp_path):
    assert run(videos, tmp_path / "q90", "--short-side", "32") == 0
    assert run(videos, tmp_path / "q30", "--short-side", "32", "--quality", "30") == 0
    small = load_frame(tmp_path / "q90" / "a" / "00001.jpg")
    assert small.shape == (3, 32, 48)
    size = lambda root: sum(p.stat().st_size for p in (root / "a").iterdir())  # noqa: E731
    assert size(tmp_path / "q30") < size(tmp_path / "q90")
    assert run(videos, tmp_path / "half", "--fps", "6") == 0  # the videos have 12 fps
    assert folder_indices(tmp_path / "half" / "a") == list(range(0, 30, 2))
    assert run(videos, tmp_path / "slow", "--fps", "5") == 0  # output k at k/5 s: nearest frame
    expected = [round(k * 12 / 5 + 1e-9) for k in range(int(29 / 12 * 5) + 1)]
    assert folder_indices(tmp_path / "slow" / "a") == expected


def test_resample_takes_the_nearest_frame():
    times = [0.0, 0.1, 0.2, 0.3, 0.4]
    pairs = list(zip(times, "abcde", strict=True))
    assert list(extraction.resample(pairs, None)) == list("abcde")
    assert list(extraction.resample(pairs, 10)) == list("abcde")
    assert list(extraction.resample(pairs, 4)) == list("ac")  # 0 and 0.25 (a tie: the earlier)
    assert list(extraction.resample(pairs, 20)) == list("aabbccddee")[:9]


@pytest.mark.parametrize("backend", decoders.VIDEO_BACKENDS)
def test_every_backend_writes_the_same_frames(videos, tmp_path, backend):
    if decoders.backend_problem(backend) is not None:
        pytest.skip(f"{backend} is not usable here")
    reference = tmp_path / "reference"
    assert run(videos, reference, "--video-backend", "pyav", "--workers", "1") == 0
    assert run(videos, tmp_path / backend, "--video-backend", backend, "--workers", "1") == 0
    for video in LENGTHS:
        folder = extraction.frame_folder_name(video)
        names = sorted(os.listdir(reference / folder))
        assert sorted(os.listdir(tmp_path / backend / folder)) == names
        for name in names:  # identical here; PIXEL_TOLERANCE allows for another FFmpeg
            ours = load_frame(tmp_path / backend / folder / name).int()
            theirs = load_frame(reference / folder / name).int()
            assert (ours - theirs).abs().float().mean() <= PIXEL_TOLERANCE


def test_failures_are_named_and_keep_the_lists_back(videos, tmp_path, capsys):
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 40)
    (videos / "list.txt").write_text("a.mp4 1\nbroken.mp4 4\nmissing.webm 5\n")
    out_list = tmp_path / "frames.txt"
    args = ["--list", str(videos / "list.txt"), str(out_list), "--workers", "2"]
    assert run(videos, tmp_path / "frames", *args) == 1
    printed = capsys.readouterr().out
    assert "1 of 3 videos extracted" in printed and "2 failed" in printed
    assert "FAILED broken.mp4: cannot open video" in printed
    assert "FAILED missing.webm: video not found" in printed
    assert "frame lists not written" in printed and not out_list.exists()
    assert run(videos, tmp_path / "frames", *args, "--allow-failures") == 1
    assert [r.path for r in read_video_list(out_list)] == ["a"]
    assert "(1 finished by an earlier run)" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "frames").iterdir() if p.name.endswith(".partial")]


def test_a_video_failing_midway_leaves_no_folder(videos, tmp_path, monkeypatch):
    saved = []
    real_resize = extraction._resize

    def failing_resize(frame, short_side):
        saved.append(1)
        if len(saved) == 10:
            raise OSError("No space left on device")
        return real_resize(frame, short_side)

    monkeypatch.setattr(extraction, "_resize", failing_resize)
    results = list(
        extraction.extract_videos(
            ["a.mp4"], videos, tmp_path / "frames", extraction.ExtractSettings()
        )
    )
    assert results[0].error == "No space left on device" and results[0].num_frames is None
    assert os.listdir(tmp_path / "frames") == []


def test_a_killed_run_leaves_no_half_folder_and_a_rerun_finishes(videos, tmp_path, capsys):
    """SIGKILL in the middle of a video (frame writes slowed down), then rerun."""
    for copy in range(4):
        shutil.copy(videos / "a.mp4", videos / f"copy{copy}.mp4")
    frames = tmp_path / "frames"
    slow_run = (
        "import runpy, sys, time; from PIL import Image; save = Image.Image.save\n"
        "Image.Image.save = lambda *a, **k: (time.sleep(0.01), save(*a, **k))[1]\n"
        f"sys.argv = ['extract_frames.py', '--videos', {str(videos)!r},"
        f" '--frames', {str(frames)!r}, '--workers', '1']\n"
        f"runpy.run_path({str(REPO / 'tools' / 'extract_frames.py')!r}, run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", slow_run], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once a folder is done and the next one is begun
        assert process.poll() is None, process.stderr.read().decode()
        names = os.listdir(frames) if frames.is_dir() else []
        partial = [n for n in names if n.endswith(".partial")]
        if len([n for n in names if not n.startswith(".")]) >= 1 and partial:
            if os.listdir(frames / partial[0]):
                break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = os.listdir(frames)
    assert any(n.endswith(".partial") for n in left)  # the video being written
    finished = [n for n in left if not n.startswith(".") and (frames / n).is_dir()]
    assert finished
    for name in finished:  # what looks finished is finished
        assert len(os.listdir(frames / name)) == LENGTHS.get(f"{name}.mp4", 30)
    assert run(videos, frames, "--workers", "1") == 0
    assert f"({len(finished)} finished by an earlier run)" in capsys.readouterr().out
    assert not any(n.endswith(".partial") for n in os.listdir(frames))
    for copy in range(4):
        assert folder_indices(frames / f"copy{copy}") == list(range(30))


def test_one_run_at_a_time_per_frame_root(videos, tmp_path, capsys):
    with extract_tool.frame_root_lock(tmp_path / "frames"):
        assert run(videos, tmp_path / "frames") == 2
    assert "another extraction is writing into" in capsys.readouterr().err
    assert run(videos, tmp_path / "frames", "--workers", "1") == 0
    assert folder_indices(tmp_path / "frames" / "b") == list(range(20))
