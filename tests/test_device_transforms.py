"""Device-side mode: the CPU half + DeviceTransform reproduce the CPU-complete pipelines."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from rnlvideo import build_dataset_from_config
from rnlvideo.data.device_transforms import (
    DeferredClip,
    DeviceTransform,
    defer_transform,
    resized_shape,
    to_model_input,
)
from rnlvideo.data.frames import FrameFolderDataset
from rnlvideo.data.synthetic import generate_synthetic_dataset
from rnlvideo.data.transforms import (
    IMAGENET_STD,
    Compose,
    MultiScaleCrop,
    Normalize,
    ResizeShorter,
    three_crop_transform,
    train_transform,
    val_transform,
)

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
# One grey level after normalisation (the largest 1 / (255 * std)): the CPU path rounds its
# resized frames to uint8, the device path does not.
ONE_LEVEL = 1 / (255 * min(IMAGENET_STD))


def noise_video(height, width, frames=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=generator)


def as_batch(clip: DeferredClip) -> DeferredClip:
    """A CPU-half output ``(T, C, ...)`` as the dataset lays it out and collates it."""
    return DeferredClip(
        clip.frames.transpose(-4, -3).unsqueeze(0), clip.boxes[None], clip.sizes[None]
    )


def both_paths(transform, video, seed):
    """(CPU-complete output as (..., C, T, S, S), device-path output), same generator seed."""
    cpu_rng, device_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    expected = transform(video, cpu_rng).transpose(-4, -3)
    deferred = defer_transform(transform)
    clip = deferred(video, device_rng)
    assert clip.frames.dtype == torch.uint8
    assert cpu_rng.integers(1 << 30) == device_rng.integers(1 << 30)  # same draws consumed
    return expected, deferred.device_transform(as_batch(clip))[0]


@pytest.mark.parametrize(
    ("name", "transform", "height", "width"),
    [
        ("train V1 landscape (upscale)", train_transform(224), 100, 176),
        ("train V1 portrait (upscale)", train_transform(224), 132, 100),
        ("train shrink (CPU resize)", train_transform(64), 100, 176),
        ("train V2-size (mixed)", train_transform(224), 240, 427),
        ("val V1 (upscale)", val_transform(224, 256), 100, 176),
        ("val portrait (upscale)", val_transform(224, 256), 120, 100),
        ("val shrink (CPU resize)", val_transform(224, 256), 300, 400),
        ("three crops V1 (upscale)", three_crop_transform(256, 256), 100, 176),
    ],
)
def test_device_path_matches_cpu_path(name, transform, height, width):
    video = noise_video(height, width, frames=2)
    for seed in range(3):
        expected, actual = both_paths(transform, video, seed)
        assert actual.shape == expected.shape and actual.dtype == torch.float32
        torch.testing.assert_close(actual, expected, atol=ONE_LEVEL * 1.05, rtol=0)


def test_upscale_is_float_bilinear_of_the_crop():
    """Without the CPU path's uint8 rounding, the device output is plain float bilinear."""
    video = noise_video(100, 176, frames=2)
    normalize = Normalize()
    deferred = defer_transform(Compose([MultiScaleCrop(224), normalize]))
    for seed in range(4):
        clip = deferred(video, np.random.default_rng(seed))
        crop_h, crop_w = clip.sizes.tolist()
        region = clip.frames[..., :crop_h, :crop_w].float()
        resized = F.interpolate(region, size=(224, 224), mode="bilinear", align_corners=False)
        expected = resized * normalize.scale - normalize.shift
        actual = deferred.device_transform(as_batch(clip))[0].transpose(0, 1)
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_resized_shape_follows_torchvision():
    for height, width in [(100, 176), (100, 133), (133, 100), (240, 427), (256, 256)]:
        video = torch.zeros(1, 3, height, width, dtype=torch.uint8)
        assert resized_shape(height, width, 256) == tuple(
            ResizeShorter(256)(video, None).shape[-2:]
        )


def test_unsupported_pipelines_are_refused():
    with pytest.raises(ValueError, match="got ResizeShorter \\+ Normalize"):
        defer_transform(Compose([ResizeShorter(256), Normalize()]))
    with pytest.raises(ValueError, match="got MultiScaleCrop"):
        defer_transform(MultiScaleCrop(224))


def test_to_model_input_handles_both_modes():
    labels = torch.tensor([3, 1])
    clips = torch.rand(2, 3, 4, 8, 8)
    out_clips, out_labels = to_model_input((clips, labels), torch.device("cpu"))
    assert out_clips is clips and torch.equal(out_labels, labels)
    deferred = DeferredClip(
        torch.full((2, 3, 4, 8, 8), 255, dtype=torch.uint8),
        torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2),
        torch.tensor([[8, 8]] * 2),
    )
    with pytest.raises(ValueError, match="no DeviceTransform"):
        to_model_input((deferred, labels), torch.device("cpu"))
    normalize = Normalize(mean=(0.5,) * 3, std=(0.5,) * 3)
    transform = DeviceTransform(16, normalize.scale, normalize.shift)
    out_clips, _ = to_model_input((deferred, labels), torch.device("cpu"), transform)
    assert out_clips.shape == (2, 3, 4, 16, 16) and out_clips.dtype == torch.float32
    torch.testing.assert_close(out_clips, torch.ones_like(out_clips))


@pytest.fixture(scope="module")
def frame_root(module_tmp_path):
    """Two 10-frame videos of smooth random frames, 100 px tall."""
    root = module_tmp_path
    rng = np.random.default_rng(0)
    for video, width in enumerate((140, 120)):
        (root / f"v{video}").mkdir()
        for number in range(1, 11):
            pixels = rng.integers(0, 256, (25, width // 4, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).resize((width, 100), Image.Resampling.BILINEAR)
            image.save(root / f"v{video}" / f"{number:05d}.jpg", quality=95)
    (root / "list.txt").write_text("v0 10 0\nv1 10 1\n")
    return root


@pytest.mark.parametrize(
    ("transform", "sampling"),
    [
        (train_transform(112), "tsn_train"),
        (val_transform(112, 128), "tsn_val"),
        (three_crop_transform(128, 128), "twice"),
    ],
)
def test_dataset_and_loader_in_device_mode(frame_root, transform, sampling):
    def dataset(device_transform):
        return FrameFolderDataset(
            frame_root,
            frame_root / "list.txt",
            transform,
            num_segments=4,
            sampling=sampling,
            seed=5,
            device_transform=device_transform,
        )

    cpu, device_side = dataset(False), dataset(True)
    assert cpu.device_transform is None and device_side.device_transform is not None
    expected = torch.stack([cpu[i][0] for i in range(2)])
    batch = next(iter(DataLoader(device_side, batch_size=2)))
    assert isinstance(batch[0], DeferredClip) and batch[0].frames.dtype == torch.uint8
    clips, labels = to_model_input(batch, torch.device("cpu"), device_side.device_transform)
    assert labels.tolist() == [0, 1]
    assert clips.shape == expected.shape
    torch.testing.assert_close(clips, expected, atol=ONE_LEVEL * 1.05, rtol=0)


def test_the_config_switch_reaches_the_datasets(tmp_path):
    generate_synthetic_dataset(
        tmp_path,
        videos_per_class_train=1,
        videos_per_class_val=1,
        min_frames=8,
        max_frames=9,
        num_workers=1,
    )
    overrides = [
        f"data.root={tmp_path}",
        "data.device_transform=true",
        "data.input_size=112",
        "data.scale_size=128",
    ]
    for split in ("train", "val"):
        dataset = build_dataset_from_config(overrides, split)
        clip, _ = dataset[0]
        assert isinstance(clip, DeferredClip) and clip.frames.shape == (3, 8, 112, 112)
        assert isinstance(dataset.device_transform, DeviceTransform)
    assert build_dataset_from_config([f"data.root={tmp_path}"], "val").device_transform is None
