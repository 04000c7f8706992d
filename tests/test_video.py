"""The video-file dataset on small mp4 files written here with PyAV, with each decoder."""

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rnlvideo import build_dataset_from_config
from rnlvideo.data.annotations import prepare_kinetics, write_prepared_lists
from rnlvideo.data.decoders import available_backends
from rnlvideo.data.device_transforms import DeferredClip, to_model_input
from rnlvideo.data.frames import VideoDataError
from rnlvideo.data.sampling import dense_offsets, tsn_train_offsets
from rnlvideo.data.transforms import train_transform
from rnlvideo.data.video import VideoFileDataset

NUM_FRAMES = 30


def frame_level(index: int) -> int:
    """Every pixel of 0-based frame ``index`` has this grey level."""
    return 10 + 8 * index


def write_video(path, num_frames=NUM_FRAMES, height=48, width=64):
    """An H.264 mp4 (lossless, a keyframe every 5 frames) of flat frames ``frame_level(i)``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"crf": "0", "g": "5"}
        for index in range(num_frames):
            pixels = np.full((height, width, 3), frame_level(index), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def as_float(video, rng):
    """A transform that keeps the frames: ``(T, C, H, W)`` float."""
    return video.float()


def frame_levels(clip: torch.Tensor) -> torch.Tensor:
    """Mean grey level of each frame of a ``(C, T, H, W)`` clip."""
    return clip.mean(dim=(0, 2, 3))


def expected_levels(offsets) -> torch.Tensor:
    return torch.tensor([float(frame_level(o)) for o in offsets])


@pytest.fixture(scope="module")
def video_root(module_tmp_path):
    root = module_tmp_path
    write_video(root / "a.mp4")
    write_video(root / "b.mp4", num_frames=12, width=80)
    (root / "list.txt").write_text(f"a.mp4 {NUM_FRAMES} 3\nb.mp4 12 5\n")
    (root / "uncounted.txt").write_text("a.mp4 3\nb.mp4 5\n")
    return root


def make_dataset(root, list_name="list.txt", transform=as_float, **kwargs):
    return VideoFileDataset(root, root / list_name, transform, **kwargs)


def test_val_clip_holds_the_sampled_frames(video_root):
    dataset = make_dataset(video_root, num_segments=4, sampling="tsn_val")
    clip, label = dataset[0]
    assert label == 3 and clip.shape == (3, 4, 48, 64) and clip.dtype == torch.float32
    # n=30, T=4: tick 7.5, offsets int(3.75 + 7.5x) = 3, 11, 18, 26
    torch.testing.assert_close(frame_levels(clip), expected_levels([3, 11, 18, 26]), atol=2, rtol=0)


def test_train_frames_are_the_rng_draws(video_root):
    dataset = make_dataset(video_root, num_segments=8, seed=11)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        offsets = tsn_train_offsets(NUM_FRAMES, 8, np.random.default_rng([11, epoch, 0]))
        torch.testing.assert_close(
            frame_levels(dataset[0][0]), expected_levels(offsets), atol=2, rtol=0
        )


def test_path_label_lines_take_the_count_from_the_container(video_root):
    dataset = make_dataset(
        video_root, "uncounted.txt", num_segments=4, sampling="dense_test", num_clips=2
    )
    assert dataset.records[1].num_frames is None
    clips, label = dataset[1]
    assert label == 5 and clips.shape == (2, 3, 4, 48, 80)
    offsets = dense_offsets(12, 4, num_clips=2)  # wraps around the 12 frames
    levels = torch.cat([frame_levels(clip) for clip in clips])
    torch.testing.assert_close(levels, expected_levels(offsets), atol=2, rtol=0)


def test_bad_videos_raise_or_are_replaced(tmp_path, video_root):
    (tmp_path / "a.mp4").symlink_to(video_root / "a.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "list.txt").write_text("a.mp4 1\nbroken.mp4 2\ngone.mp4 3\n")
    dataset = make_dataset(tmp_path, num_segments=2, sampling="tsn_val")
    with pytest.raises(VideoDataError, match="cannot open video .*broken.mp4"):
        dataset[1]
    with pytest.raises(VideoDataError, match="video not found: .*gone.mp4"):
        dataset[2]
    resampling = make_dataset(tmp_path, num_segments=2, on_error="resample")  # tsn_train
    assert [resampling[i][1] for i in range(3)] == [1, 1, 1]
    assert resampling.num_resampled >= 2


def test_a_video_shorter_than_min_frames_is_a_video_error(tmp_path):
    write_video(tmp_path / "short.mp4", num_frames=2)
    write_video(tmp_path / "long.mp4", num_frames=6)
    (tmp_path / "list.txt").write_text("short.mp4 4\nlong.mp4 5\n")  # no counts: read at load
    dataset = make_dataset(tmp_path, num_segments=2, sampling="tsn_test")  # min_frames 3
    assert len(dataset) == 2 and dataset[1][1] == 5
    with pytest.raises(
        VideoDataError, match="video has 2 frames, fewer than min_frames=3: .*short"
    ):
        dataset[0]
    excluding = make_dataset(tmp_path, num_segments=2, sampling="tsn_test", on_error="exclude")
    assert "short.mp4" in excluding[0][0].message
    (tmp_path / "counted.txt").write_text("short.mp4 2 4\nlong.mp4 6 5\n")
    assert [r.path for r in make_dataset(tmp_path, "counted.txt").records] == ["long.mp4"]


def test_device_mode_through_a_loader(video_root):
    transform = train_transform(input_size=96)
    cpu = make_dataset(video_root, transform=transform, num_segments=4, seed=2)
    deferred = make_dataset(
        video_root, transform=transform, num_segments=4, seed=2, device_transform=True
    )
    batch = next(iter(DataLoader(deferred, batch_size=2, num_workers=1)))
    assert isinstance(batch[0], DeferredClip)
    clips, labels = to_model_input(batch, torch.device("cpu"), deferred.device_transform)
    expected = torch.stack([cpu[i][0] for i in range(2)])
    torch.testing.assert_close(clips, expected, atol=0.02, rtol=0)
    assert labels.tolist() == [3, 5]


def test_kinetics_config_builds_a_video_dataset(tmp_path, video_root):
    for split, label in (("train", "abseiling"), ("train", "zumba"), ("val", "zumba")):
        (tmp_path / split / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / label / "clip_000001_000011.mp4").symlink_to(video_root / "a.mp4")
    assert write_prepared_lists(prepare_kinetics(tmp_path), tmp_path, allow_missing=False)
    overrides = [
        "data=kinetics400",
        f"data.root={tmp_path}",
        "data.num_segments=4",
        "data.input_size=32",
        "data.scale_size=37",
        "data.video_backend=pyav",
    ]
    train = build_dataset_from_config(overrides, "train")
    assert isinstance(train, VideoFileDataset) and train.sampling == "dense_train"
    assert train.video_backend == "pyav"
    clip, label = train[1]
    assert clip.shape == (3, 4, 32, 32) and label == 1
    val = build_dataset_from_config(overrides, "val")
    assert val[0][0].shape == (3, 4, 32, 32) and val[0][1] == 1


def test_every_backend_gives_the_same_samples(video_root):
    backends = available_backends()
    datasets = [
        make_dataset(video_root, num_segments=8, seed=3, video_backend=backend)
        for backend in backends
    ]
    assert [d.video_backend for d in datasets] == backends
    assert make_dataset(video_root).video_backend == backends[0]  # auto
    for index in range(2):
        for dataset in datasets[1:]:
            torch.testing.assert_close(dataset[index], datasets[0][index], rtol=0, atol=0)
