"""List files and the frame-folder dataset, end to end on a tiny folder of JPEG frames."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rnlvideo.data.frames import FrameFolderDataset, VideoDataError, load_frame
from rnlvideo.data.lists import VideoRecord, read_categories, read_video_list
from rnlvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    three_crop_transform,
    train_transform,
    val_transform,
)

NUM_FRAMES = 12

# torchvision 0.29 deprecates its JPEG decoders in favour of TorchCodec
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
HEIGHT, WIDTH = 100, 140


def frame_red(video, frame_number):
    """Red is flat per frame and encodes video and 1-based frame number."""
    return 20 * frame_number + video


@pytest.fixture(scope="module")
def frame_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    lines = []
    for video in range(3):
        folder = root / f"vid{video}"
        folder.mkdir()
        for number in range(1, NUM_FRAMES + 1):
            pixels = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            pixels[..., 0] = frame_red(video, number)
            pixels[..., 1] = 128
            # a blue ramp so that different crops give different clips
            pixels[..., 2] = np.linspace(0, 255, WIDTH, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{number:05d}.jpg")
        lines.append(f"vid{video} {NUM_FRAMES} {video}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def make_dataset(root, transform, **kwargs):
    return FrameFolderDataset(root=root, list_file=root / "list.txt", transform=transform, **kwargs)


def test_read_video_list(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a/b 12 3\n\n  \nc 40 0\nd.mp4 5\n")
    assert read_video_list(path) == [
        VideoRecord("a/b", 12, 3),
        VideoRecord("c", 40, 0),
        VideoRecord("d.mp4", None, 5),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("vid", "expected 'path num_frames label' or 'path label', got 'vid'"),
        ("vid twelve 3", "expected 'path num_frames label' or 'path label'"),
        ("vid 12 3 4", "expected 'path num_frames label' or 'path label'"),
        ("vid x", "expected 'path num_frames label' or 'path label'"),
        ("vid 0 3", "num_frames must be positive"),
        ("vid -4 3", "num_frames must be positive"),
        ("vid 12 -1", "label must be non-negative"),
    ],
)
def test_read_video_list_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "list.txt"
    path.write_text(f"good 10 1\n{line}\n")
    with pytest.raises(ValueError, match=f"{path}:2: {message}"):
        read_video_list(path)


def test_missing_files_are_named(tmp_path, frame_root):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_video_list(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="cats.txt"):
        read_categories(tmp_path / "cats.txt")
    with pytest.raises(FileNotFoundError, match="no_root"):
        FrameFolderDataset(tmp_path / "no_root", frame_root / "list.txt", val_transform())


def test_read_categories(tmp_path):
    path = tmp_path / "category.txt"
    path.write_text("Holding something\nPushing something from left to right\n\n")
    assert read_categories(path) == ["Holding something", "Pushing something from left to right"]


def test_val_clip_holds_the_sampled_frames(frame_root):
    dataset = make_dataset(frame_root, val_transform(), num_segments=4, sampling="tsn_val")
    assert len(dataset) == 3 and dataset.clips_per_sample == 1
    clip, label = dataset[2]
    assert label == 2
    assert clip.shape == (3, 4, 224, 224) and clip.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1)
    pixels = (clip.flatten(2) * std[..., None] + mean[..., None]) * 255
    # n=12, T=4: tick 3, offsets int(1.5 + 3x) = 1, 4, 7, 10 -> files 2, 5, 8, 11
    expected_red = torch.tensor([frame_red(2, f) for f in (2, 5, 8, 11)], dtype=torch.float32)
    torch.testing.assert_close(pixels[0].mean(-1), expected_red, atol=3, rtol=0)
    torch.testing.assert_close(pixels[1].mean(-1), torch.full((4,), 128.0), atol=3, rtol=0)


def test_train_clip_shape_and_determinism(frame_root):
    dataset = make_dataset(frame_root, train_transform(input_size=64), seed=7)
    clip, label = dataset[1]
    assert clip.shape == (3, 8, 64, 64) and clip.dtype == torch.float32 and label == 1
    assert torch.equal(clip, dataset[1][0])
    again = make_dataset(frame_root, train_transform(input_size=64), seed=7)
    assert torch.equal(clip, again[1][0])
    clips = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        clips.append(dataset[1][0])
    assert any(not torch.equal(clips[0], other) for other in clips[1:])


def test_samples_do_not_depend_on_worker_count(frame_root):
    dataset = make_dataset(frame_root, train_transform(input_size=32), num_segments=4, seed=3)
    dataset.set_epoch(5)
    single = torch.cat([clip for clip, _ in DataLoader(dataset, batch_size=1)])
    loader = DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork")
    multi = torch.cat([clip for clip, _ in loader])
    assert torch.equal(single, multi)


def test_twice_and_three_crop_layout(frame_root):
    twice = make_dataset(
        frame_root,
        val_transform(input_size=64, scale_size=64),
        num_segments=4,
        sampling="twice",
    )
    assert twice.clips_per_sample == 2
    clips, _ = twice[0]
    assert clips.shape == (2, 3, 4, 64, 64)  # (views, C, T, H, W)
    single = make_dataset(
        frame_root, val_transform(input_size=64, scale_size=64), num_segments=4, sampling="tsn_val"
    )
    assert torch.equal(clips[0], single[0][0])  # the first of the two clips is the val clip

    views = make_dataset(frame_root, three_crop_transform(96, 96), num_segments=4, sampling="twice")
    clip, _ = views[0]
    assert clip.shape == (6, 3, 4, 96, 96)  # clip-major: clip 0 crops 0..2, clip 1 crops 0..2
    crops_only = make_dataset(
        frame_root, three_crop_transform(96, 96), num_segments=4, sampling="tsn_val"
    )
    assert torch.equal(clip[:3], crops_only[0][0])


def test_dense_test_gives_num_clips_clips(frame_root):
    dataset = make_dataset(
        frame_root, val_transform(32, 32), num_segments=4, sampling="dense_test", num_clips=3
    )
    assert dataset.clips_per_sample == 3
    assert dataset[0][0].shape == (3, 3, 4, 32, 32)


def test_min_frames_skips_short_videos(tmp_path, frame_root):
    lines = "vid0 12 0\nvid1 2 1\nvid2 3 2\n"
    (tmp_path / "list.txt").write_text(lines)
    dataset = FrameFolderDataset(frame_root, tmp_path / "list.txt", val_transform(), min_frames=3)
    assert [r.path for r in dataset.records] == ["vid0", "vid2"]


def test_missing_and_corrupt_frames_are_named(tmp_path, frame_root):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "00001.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "list.txt").write_text("broken 2 0\n")
    dataset = FrameFolderDataset(tmp_path, tmp_path / "list.txt", val_transform(), num_segments=2)
    with pytest.raises(VideoDataError, match="frame not found: .*broken/00002.jpg"):
        dataset.load_frames(dataset.records[0], np.array([1]))
    with pytest.raises(VideoDataError, match="cannot decode frame .*broken/00001.jpg"):
        dataset[0]
    assert load_frame(frame_root / "vid0" / "00001.jpg").shape == (3, HEIGHT, WIDTH)


def test_frame_folders_need_frame_counts(tmp_path, frame_root):
    (tmp_path / "list.txt").write_text("vid0 12 0\nvid1 1\n")
    with pytest.raises(ValueError, match="need 'path num_frames label' lines.*first: vid1"):
        FrameFolderDataset(frame_root, tmp_path / "list.txt", val_transform())


def test_on_error_is_validated(frame_root):
    with pytest.raises(ValueError, match="on_error='skip'"):
        make_dataset(frame_root, val_transform(), on_error="skip")


@pytest.fixture
def list_with_missing_video(tmp_path, frame_root):
    """vid0..vid2 plus a video whose folder does not exist (index 1)."""
    path = tmp_path / "list.txt"
    path.write_text(f"vid0 {NUM_FRAMES} 0\ngone {NUM_FRAMES} 7\nvid1 {NUM_FRAMES} 1\n")
    return path


def test_on_error_resample_replaces_and_counts(frame_root, list_with_missing_video, caplog):
    kwargs = dict(num_segments=2, sampling="tsn_val", on_error="resample", seed=4)
    dataset = FrameFolderDataset(
        frame_root, list_with_missing_video, val_transform(32, 32), **kwargs
    )
    with caplog.at_level(logging.WARNING, logger="rnlvideo.data.frames"):
        clip, label = dataset[1]
    assert label in (0, 1) and clip.shape == (3, 2, 32, 32)
    assert dataset.num_resampled >= 1
    assert "frame not found" in caplog.text and "gone/" in caplog.text
    again = FrameFolderDataset(frame_root, list_with_missing_video, val_transform(32, 32), **kwargs)
    assert torch.equal(again[1][0], clip) and again[1][1] == label  # deterministic
    assert torch.equal(dataset[0][0], again[0][0])  # good videos are untouched
    with caplog.at_level(logging.WARNING, logger="rnlvideo.data.frames"):
        dataset.set_epoch(1)
    assert (
        f"{dataset.num_resampled} unreadable video(s) replaced by others in epoch 0" in caplog.text
    )


def test_on_error_raise_names_the_folder(frame_root, list_with_missing_video):
    dataset = FrameFolderDataset(frame_root, list_with_missing_video, val_transform(32, 32))
    with pytest.raises(VideoDataError, match="gone/"):
        dataset[1]


def test_resample_count_reaches_the_main_process(frame_root, list_with_missing_video):
    dataset = FrameFolderDataset(
        frame_root,
        list_with_missing_video,
        val_transform(32, 32),
        num_segments=2,
        sampling="tsn_val",
        on_error="resample",
    )
    loader = DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork")
    labels = torch.cat([label for _, label in loader])
    assert len(labels) == 3 and 7 not in labels.tolist()
    assert dataset.num_resampled == 1


def test_horizontal_flip_mirrors_frames_and_relabels(frame_root, tmp_path):
    transform = val_transform(input_size=HEIGHT, scale_size=HEIGHT)  # symmetric centre crop
    plain = make_dataset(frame_root, transform, num_segments=2, sampling="tsn_val")
    map_file = tmp_path / "flip_map.txt"
    map_file.write_text("0 1\n1 0\n")  # class 2 is direction-agnostic
    flipping = make_dataset(
        frame_root,
        transform,
        num_segments=2,
        sampling="tsn_val",
        horizontal_flip=True,
        flip_label_map=str(map_file),
    )
    outcomes = set()
    for epoch in range(6):
        flipping.set_epoch(epoch)
        for index in range(len(plain)):
            clip, label = flipping[index]
            reference, reference_label = plain[index]
            flipped = not torch.equal(clip, reference)
            if flipped:
                torch.testing.assert_close(clip, reference.flip(-1))
                assert label == {0: 1, 1: 0}.get(reference_label, reference_label)
            else:
                assert label == reference_label
            outcomes.add(flipped)
    assert outcomes == {True, False}


def test_flip_label_map_file_errors_name_file_and_line(frame_root, tmp_path):
    bad = tmp_path / "flip_map.txt"
    bad.write_text("0 1\nleft right\n")
    with pytest.raises(ValueError, match=r"flip_map.txt:2: expected 'label mirrored_label'"):
        make_dataset(frame_root, val_transform(32, 32), horizontal_flip=True, flip_label_map=bad)
