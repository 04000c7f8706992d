"""List files and the frame-folder dataset, end to end on a tiny folder of JPEG frames."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rnlvideo.data.frames import ExcludedVideo, FrameFolderDataset, VideoDataError, load_frame
from rnlvideo.data.lists import VideoRecord, read_categories, read_video_list
from rnlvideo.data.sampling import resolve_sampling
from rnlvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    ThreeCrop,
    three_crop_transform,
    train_transform,
    val_transform,
)
from rnlvideo.engine.evaluation import predict
from rnlvideo.engine.loaders import make_eval_loader

NUM_FRAMES = 12

# torchvision 0.29 deprecates its JPEG decoders in favour of TorchCodec
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
HEIGHT, WIDTH = 100, 140


def frame_red(video, frame_number):
    """Red is flat per frame and encodes video and 1-based frame number."""
    return 20 * frame_number + video


@pytest.fixture(scope="module")
def frame_root(module_tmp_path):
    root = module_tmp_path
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


@pytest.mark.parametrize("sampling", ["tsn_train", "tsn_val", "tsn_test", "twice"])
def test_min_frames_leaves_short_videos_out_of_every_split(tmp_path, frame_root, caplog, sampling):
    (tmp_path / "list.txt").write_text("vid0 12 0\nvid1 2 1\nvid2 3 2\n")
    with caplog.at_level(logging.WARNING, logger="rnlvideo.data.frames"):
        dataset = FrameFolderDataset(  # default min_frames: 3, as TSM
            frame_root, tmp_path / "list.txt", val_transform(), sampling=sampling
        )
    assert [r.path for r in dataset.records] == ["vid0", "vid2"] and len(dataset) == 2
    assert dataset.num_too_short == 1
    assert f"{tmp_path / 'list.txt'}: 1 of 3 videos have fewer than 3 frames" in caplog.text
    assert "vid1" in caplog.text
    (tmp_path / "short.txt").write_text("vid1 2 1\n")
    with pytest.raises(ValueError, match=r"short.txt: all 1 videos have fewer than min_frames=3"):
        FrameFolderDataset(frame_root, tmp_path / "short.txt", val_transform())


@pytest.mark.parametrize(("sampling", "files"), [("tsn_test", 4), ("twice", 8)])
def test_test_sampling_takes_every_frame_of_a_video_of_t_frames(
    tmp_path, frame_root, sampling, files
):
    """n = T = 4: TSM's test mode reads frames 1..4 (twice: 1..4 again), not frame 1 only."""
    (tmp_path / "list.txt").write_text("vid1 4 1\n")  # the first 4 of vid1's 12 frames
    assert resolve_sampling("auto", files // 4) == sampling
    dataset = FrameFolderDataset(
        frame_root,
        tmp_path / "list.txt",
        lambda video, rng: video,
        num_segments=4,
        sampling=sampling,
    )
    clip, _ = dataset[0]
    red = clip.reshape(-1, 3, 4, HEIGHT, WIDTH)[:, 0].float().mean(dim=(-1, -2)).flatten()
    expected = torch.tensor([frame_red(1, f) for f in (1, 2, 3, 4)] * (files // 4)).float()
    torch.testing.assert_close(red, expected, atol=3, rtol=0)
    validation = FrameFolderDataset(  # validation during training keeps frame 1 for n <= T
        frame_root,
        tmp_path / "list.txt",
        lambda video, rng: video,
        num_segments=4,
        sampling="tsn_val",
    )
    red = validation[0][0][0].float().mean(dim=(-1, -2))
    torch.testing.assert_close(red, torch.full((4,), float(frame_red(1, 1))), atol=3, rtol=0)


def test_list_checks_name_file_and_line(tmp_path, frame_root):
    cases = {
        "label.txt": ("vid0 12 0\nvid1 12 12\n", r"label.txt:2: label 12 is out of range"),
        "dotdot.txt": ("vid0 12 0\n../frames/vid1 12 1\n", r"dotdot.txt:2: path .* '\.\.' part"),
        "absolute.txt": (f"{frame_root / 'vid0'} 12 0\n", r"absolute.txt:1: path .* is absolute"),
        "empty.txt": ("\n  \n", r"empty.txt: the list names no videos"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            FrameFolderDataset(frame_root, tmp_path / name, val_transform(), num_classes=12)
    (tmp_path / "flip.txt").write_text("0 1\n1 12\n")
    with pytest.raises(ValueError, match=r"flip.txt:2: label 12 is out of range"):
        make_dataset(
            frame_root, val_transform(), num_classes=12, flip_label_map=tmp_path / "flip.txt"
        )
    assert len(make_dataset(frame_root, val_transform(), num_classes=3)) == 3  # labels 0..2


def write_frames(folder, count, make_file):
    folder.mkdir()
    for number in range(1, count + 1):
        make_file(folder / f"{number:05d}.jpg")


def test_grayscale_and_cmyk_jpegs_decode_to_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    for mode in ("L", "CMYK"):
        path = tmp_path / f"{mode}.jpg"
        Image.fromarray(pixels).convert(mode).save(path)
        decoded = load_frame(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
        assert decoded.shape == (3, 24, 36) and decoded.dtype == torch.uint8
        assert np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1


def test_bad_frames_raise_video_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(good)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    Image.new("RGB", (30, 20)).save(tmp_path / "png.jpg", format="PNG")
    cases = {
        "empty.jpg": r"frame is an empty file \(0 bytes\): .*empty.jpg$",
        "truncated.jpg": r"cannot decode JPEG frame .*truncated.jpg: Image is incomplete",
        "png.jpg": r"frame is not a JPEG file \(PNG data\): .*png.jpg$",
        "absent.jpg": r"frame not found: .*absent.jpg$",
    }
    for name, message in cases.items():
        with pytest.raises(VideoDataError, match=message):
            load_frame(tmp_path / name)


@pytest.fixture
def bad_frame_root(tmp_path, frame_root):
    """vid0 plus videos whose frames are 0-byte, truncated, PNG, 1 px, and 20 x 20 px."""
    root = tmp_path / "frames"
    root.mkdir()
    (root / "vid0").symlink_to(frame_root / "vid0")
    good = (frame_root / "vid0" / "00001.jpg").read_bytes()
    write_frames(root / "empty", 4, lambda p: p.write_bytes(b""))
    write_frames(root / "truncated", 4, lambda p: p.write_bytes(good[: len(good) // 2]))
    write_frames(root / "png", 4, lambda p: Image.new("RGB", (40, 30)).save(p, format="PNG"))
    write_frames(root / "tiny", 4, lambda p: Image.new("RGB", (1, 1)).save(p))
    write_frames(root / "small", 4, lambda p: Image.new("RGB", (20, 20)).save(p))
    lines = ["vid0 12 0", "empty 4 1", "truncated 4 2", "png 4 3", "tiny 4 4", "small 4 5"]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(
    ("transform", "bad"),
    [
        (train_transform(input_size=32), {"empty", "truncated", "png", "tiny"}),
        (Compose([ThreeCrop(32)]), {"empty", "truncated", "png", "tiny", "small"}),
    ],
    ids=["multiscale_crop", "three_crop"],
)
def test_bad_frames_go_through_the_error_policy(bad_frame_root, transform, bad):
    def dataset(**kwargs):
        return FrameFolderDataset(
            bad_frame_root, bad_frame_root / "list.txt", transform, num_segments=2, **kwargs
        )

    raising = dataset()
    for index, record in enumerate(raising.records):
        if record.path in bad:
            with pytest.raises(VideoDataError, match=f"/{record.path}"):
                raising[index]
        else:
            assert raising[index][1] == record.label
    resampling = dataset(on_error="resample")
    good_labels = {r.label for r in resampling.records if r.path not in bad}
    for index, record in enumerate(resampling.records):
        label = resampling[index][1]
        assert label in good_labels if record.path in bad else label == record.label
    assert resampling.num_resampled >= len(bad)


def test_exclude_marks_a_bad_video_for_the_evaluation(bad_frame_root):
    excluding = FrameFolderDataset(
        bad_frame_root,
        bad_frame_root / "list.txt",
        val_transform(32, 32),
        num_segments=2,
        sampling="tsn_test",
        on_error="exclude",
    )
    clip, label = excluding[1]
    assert isinstance(clip, ExcludedVideo) and label == 1
    assert "frame is an empty file (0 bytes)" in clip.message and "empty/0000" in clip.message
    assert excluding[0][0].shape == (3, 2, 32, 32)


def test_excluded_videos_pass_through_loader_workers(bad_frame_root):
    dataset = FrameFolderDataset(
        bad_frame_root,
        bad_frame_root / "list.txt",
        val_transform(32, 32),
        num_segments=2,
        sampling="tsn_test",
        on_error="exclude",
    )
    loader, indices = make_eval_loader(dataset, 0, 1, batch_size=4, num_workers=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 32 * 32, 6))
    preds = predict(model, loader, indices, torch.device("cpu"))
    assert preds.indices.tolist() == [0, 4, 5] and preds.labels.tolist() == [0, 4, 5]
    assert list(preds.excluded) == [1, 2, 3]  # empty, truncated and PNG frames
    assert "png/0000" in preds.excluded[3] and "PNG data" in preds.excluded[3]
    expected = model(torch.stack([dataset[i][0] for i in (0, 4, 5)]))
    torch.testing.assert_close(preds.scores, expected)


def test_on_error_must_suit_the_sampling(frame_root):
    with pytest.raises(ValueError, match="on_error='resample' substitutes videos"):
        make_dataset(frame_root, val_transform(), sampling="tsn_val", on_error="resample")
    with pytest.raises(ValueError, match="on_error='exclude' is for evaluation"):
        make_dataset(frame_root, val_transform(), sampling="tsn_train", on_error="exclude")


def test_missing_and_corrupt_frames_are_named(tmp_path, frame_root):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "00001.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "list.txt").write_text("broken 3 0\n")
    dataset = FrameFolderDataset(tmp_path, tmp_path / "list.txt", val_transform(), num_segments=2)
    with pytest.raises(VideoDataError, match="frame not found: .*broken/00002.jpg"):
        dataset.load_frames(dataset.records[0], np.array([1]))
    with pytest.raises(VideoDataError, match="frame is not a JPEG file .*: .*broken/00001.jpg"):
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
    kwargs = dict(num_segments=2, sampling="tsn_train", on_error="resample", seed=4)
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
        sampling="tsn_train",
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
