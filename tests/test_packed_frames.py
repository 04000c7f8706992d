"""Packed frames: the file format, tools/pack_frames.py, the packed store of the datasets, and
check_dataset on packed stores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import rnlvideo
from rnlvideo import build_dataset_from_config
from rnlvideo.analysis.classify import classify_video
from rnlvideo.config import ConfigError, compose_config
from rnlvideo.data.checks import check_split, format_report
from rnlvideo.data.frames import FrameFolderDataset, VideoDataError
from rnlvideo.data.lists import read_video_list
from rnlvideo.data.packed import (
    PackedFormatError,
    PackedFrames,
    pack_folder,
    pack_frames,
    packed_path,
)
from rnlvideo.engine.resume import config_changes, is_resumable_change
from rnlvideo.engine.trained_model import load_trained_model
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tests.test_prepare import load_script

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
pack_tool = load_script("tools/pack_frames.py")


@pytest.fixture(scope="module")
def packed_root(tiny_dataset, module_tmp_path) -> Path:
    """A copy of the tiny dataset, packed, its frame folders deleted."""
    root = module_tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    assert pack_tool.main(["--root", str(root), "--workers", "2"]) == 0
    for folder in (root / "frames").iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
    return root


@pytest.fixture
def root(tmp_path, tiny_dataset) -> Path:
    """A writable copy of the tiny dataset (frame folders, not packed)."""
    shutil.copytree(tiny_dataset, tmp_path / "data")
    return tmp_path / "data"


def overrides(root: Path, *extra: str) -> list[str]:
    return [
        "+experiment=demo",
        f"data.root={root}",
        "data.num_segments=4",
        "data.input_size=32",
        "data.scale_size=37",
        *extra,
    ]


def test_packed_file_holds_the_jpeg_bytes_unchanged(root):
    folder = root / "frames" / "3"
    names = sorted(os.listdir(folder))
    path = pack_folder(folder, len(names))
    assert path == root / "frames" / "3.pack"
    with PackedFrames(path) as packed:
        assert packed.count == len(names)
        order = [5, 0, 5, len(names) - 1, 2]
        assert packed.read(order) == [(folder / names[i]).read_bytes() for i in order]
        assert packed.frame_sizes().tolist() == [(folder / n).stat().st_size for n in names]
        with pytest.raises(PackedFormatError, match=f"frame {len(names)} requested, .*3.pack"):
            packed.read([1, len(names)])
    data = [(folder / n).read_bytes() for n in names]
    assert path.read_bytes() == pack_frames(data)


def test_pack_folder_refuses_missing_or_non_jpeg_frames_and_writes_nothing(root):
    folder = root / "frames" / "3"
    (folder / "00004.jpg").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="frame is not a JPEG .*: .*3/00004.jpg"):
        pack_folder(folder, 8)
    (folder / "00004.jpg").unlink()
    with pytest.raises(ValueError, match="frame not found: .*3/00004.jpg"):
        pack_folder(folder, 8)
    with pytest.raises(FileNotFoundError, match="frame folder not found"):
        pack_folder(root / "frames" / "gone", 8)
    assert not packed_path(folder).exists()
    assert not [p for p in (root / "frames").iterdir() if p.name.startswith(".")]


def test_packed_store_gives_the_folders_pixels(tiny_dataset, packed_root):
    for split in ("train", "val"):
        folders = build_dataset_from_config(overrides(tiny_dataset), split)
        packed = build_dataset_from_config(overrides(packed_root, "data.frame_store=packed"), split)
        assert isinstance(packed, FrameFolderDataset) and packed.frame_store == "packed"
        for index in range(len(folders)):
            torch.testing.assert_close(packed[index], folders[index], rtol=0, atol=0)


def test_predictions_and_metrics_are_equal_on_both_stores(tiny_dataset, packed_root, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "last.pt", tiny_run_overrides(tiny_dataset, tmp_path))
    results = {}
    for name, extra in (
        ("folders", []),
        ("packed", [f"data.root={packed_root}", "data.frame_store=packed"]),
    ):
        out = tmp_path / name
        metrics = rnlvideo.evaluate(checkpoint, protocol="2x3", overrides=extra, out_dir=out)
        results[name] = (
            metrics,
            (out / "predictions.csv").read_text(),
            torch.load(out / "scores.pt", weights_only=True),
        )
    (m_folders, p_folders, s_folders), (m_packed, p_packed, s_packed) = results.values()
    assert m_packed["num_videos"] == m_folders["num_videos"] == 12
    for key in ("top1", "top5", "mean_class_acc"):
        assert m_packed[key] == m_folders[key]
    assert p_packed.replace(str(packed_root), "ROOT") == p_folders.replace(
        str(tiny_dataset), "ROOT"
    )
    torch.testing.assert_close(s_packed, s_folders, rtol=0, atol=0)
    trained = load_trained_model(checkpoint)
    from_pack, _ = classify_video(trained, packed_root / "frames" / "4.pack")
    from_folder, _ = classify_video(trained, tiny_dataset / "frames" / "4")
    assert from_pack == from_folder


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) - 100]
    elif how == "frame byte":
        data[-50] ^= 0xFF  # inside the last frame
    elif how == "index":
        data[20:28] = (10**12).to_bytes(8, "little")  # the offset of frame 1
    elif how == "magic":
        data[:4] = b"\xff\xd8\xff\xe0"
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "truncated or corrupt: the index ends at byte .*, the file has"),
        ("frame byte", "truncated or corrupt: frame .* fails its checksum"),
        ("index", "truncated or corrupt: the frame index is damaged"),
        ("magic", "is not a packed frame file"),
        ("empty", "truncated or corrupt: 0 bytes"),
    ],
)
def test_a_damaged_packed_file_raises_a_video_error_naming_it(root, how, message):
    pack_tool.main(["--root", str(root), "--workers", "1"])
    dataset = build_dataset_from_config(overrides(root, "data.frame_store=packed"), "val")
    dataset.sampling = "dense_test"  # read every frame: the damaged one too
    dataset.num_segments = dataset.records[0].num_frames
    target = packed_path(dataset.root / dataset.records[0].path)
    damage(target, how)
    with pytest.raises(VideoDataError, match=f"{target}.*{message}|{message}.*{target}"):
        dataset[0]
    dataset[1]  # the others still read
    target.unlink()
    with pytest.raises(VideoDataError, match=f"packed frame file not found: {target}"):
        dataset[0]


def test_a_corrupt_jpeg_inside_a_packed_file_is_named(root):
    folder = root / "frames" / "5"
    jpeg = bytearray((folder / "00002.jpg").read_bytes())
    (folder / "00002.jpg").write_bytes(bytes(jpeg[: len(jpeg) // 3]))  # a truncated JPEG
    path = pack_folder(folder, len(os.listdir(folder)))
    with pytest.raises(VideoDataError, match=r"cannot decode JPEG frame .*5.pack \(frame 1\)"):
        rnlvideo.data.frames.load_packed_frames(path, [0, 1])


def test_pack_tool_finds_lists_skips_finished_videos_and_names_failures(root, capsys):
    (root / "notes.txt").write_text("some notes\n")
    assert pack_tool.main(["--root", str(root), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "not a frame list, left alone: " in printed and "notes.txt" in printed
    assert "train.txt: 24 videos" in printed and "val.txt: 12 videos" in printed
    packs = sorted((root / "frames").glob("*.pack"))
    assert len(packs) == 36
    stamps = {p: p.stat().st_mtime_ns for p in packs}

    records = read_video_list(root / "val.txt")
    damage(packed_path(root / "frames" / records[0].path), "truncated")
    shutil.rmtree(root / "frames" / records[1].path)
    packed_path(root / "frames" / records[1].path).unlink()
    (root / "frames" / records[2].path / "00003.jpg").unlink()
    packed_path(root / "frames" / records[2].path).unlink()
    (root / "frames" / ".stale.pack.x.tmp").write_bytes(b"half")
    assert pack_tool.main(["--root", str(root), "--lists", "val.txt"]) == 1
    printed = capsys.readouterr().out
    assert "36" not in printed.split("videos under")[0]  # only val.txt's videos
    assert "12 videos under" in printed and "9 already packed, packing 3" in printed
    assert f"FAILED {root / 'frames' / records[1].path}: frame folder not found" in printed
    assert f"{records[2].path}/00003.jpg" in printed and "1 of 3 packed, 2 failed" in printed
    assert not (root / "frames" / ".stale.pack.x.tmp").exists()
    unchanged = [p for p in packs if p.exists() and p.stat().st_mtime_ns == stamps[p]]
    assert len(unchanged) == 33  # 36 - the repacked one - the two that failed
    assert pack_tool.main(["--root", str(root), "--force", "--lists", "train.txt"]) == 0
    assert "packing 24" in capsys.readouterr().out


def test_pack_tool_needs_a_frame_root_it_can_tell(root, tmp_path, capsys):
    shutil.copytree(root / "frames", root / "frames_copy")
    assert pack_tool.main(["--root", str(root)]) == 2
    assert "give --frames-dir" in capsys.readouterr().err
    assert pack_tool.main(["--root", str(root), "--frames-dir", "frames_copy"]) == 0
    assert (root / "frames_copy" / "1.pack").is_file() and not (root / "frames" / "1.pack").exists()
    assert pack_tool.main(["--root", str(tmp_path / "nowhere")]) == 2


def test_check_dataset_checks_packed_stores(root):
    pack_tool.main(["--root", str(root)])
    cfg = compose_config([f"data.root={root}", "data.frame_store=packed"])
    report = check_split(cfg, "train", decode=True, workers=2)
    assert report.ok, report.problems
    assert "(packed frames under" in format_report(report, 5)
    records = read_video_list(root / "train.txt")
    frames = root / "frames"
    packed_path(frames / records[0].path).unlink()
    damage(packed_path(frames / records[1].path), "truncated")
    damage(packed_path(frames / records[2].path), "frame byte")
    pack_folder(frames / records[3].path, records[3].num_frames - 1)  # one frame short
    found = check_split(cfg, "train", decode=False, workers=2).problems
    assert {(p.kind, Path(p.where).name) for p in found} == {
        ("missing", f"{records[0].path}.pack"),
        ("unreadable", f"{records[1].path}.pack"),
        ("frame_count", f"{records[3].path}.pack"),
    }
    decoded = check_split(cfg, "train", decode=True, workers=2).problems
    checksum = [p for p in decoded if Path(p.where).name == f"{records[2].path}.pack"]
    assert [p.kind for p in checksum] == ["unreadable"] and "checksum" in checksum[0].detail


def test_the_frame_store_may_change_on_resume():
    def resolved(*extra: str) -> dict:
        return OmegaConf.to_container(compose_config(overrides("/data", *extra)), resolve=True)

    changes = config_changes(resolved(), resolved("data.frame_store=packed"))
    assert {c.key for c in changes} - {"overrides"} == {
        "data.frame_store",
        "data.train.frame_store",
        "data.val.frame_store",
    }
    assert all(is_resumable_change(c) for c in changes)
    other_decoder = config_changes(resolved(), resolved("data.video_backend=pyav"))
    changed = [c for c in other_decoder if c.key != "overrides"]
    assert [c.key for c in changed] == ["data.video_backend"]
    assert not is_resumable_change(changed[0])  # decoders may differ in pixels


def test_frame_store_is_validated(root):
    with pytest.raises(ValueError, match="frame_store='zip': expected one of"):
        FrameFolderDataset(root / "frames", root / "val.txt", lambda v, r: v, frame_store="zip")
    with pytest.raises(ConfigError, match="data.frame_store"):
        compose_config([f"data.root={root}", "data.frame_store=zip"])


def test_a_batch_of_packed_videos_is_read_ahead_and_closed(root):
    pack_tool.main(["--root", str(root)])
    dataset = build_dataset_from_config(overrides(root, "data.frame_store=packed"), "train")
    batch = [3, 0, 3, 7]
    open_files = len(os.listdir("/proc/self/fd"))
    assert_equal = torch.testing.assert_close
    for (clip, label), index in zip(dataset.__getitems__(batch), batch, strict=True):
        assert_equal((clip, label), dataset[index], rtol=0, atol=0)
    assert len(os.listdir("/proc/self/fd")) == open_files and not dataset._opened
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=batch, num_workers=0)
    clips, labels = next(iter(loader))
    assert labels.tolist() == [dataset.records[i].label for i in batch]
    damage(packed_path(dataset.root / dataset.records[7].path), "truncated")
    with pytest.raises(VideoDataError, match="truncated or corrupt"):
        dataset.__getitems__(batch)
    assert len(os.listdir("/proc/self/fd")) == open_files and not dataset._opened
