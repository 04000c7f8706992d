"""Crop grids and sizes, the video transforms and the two pipeline builders."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from rnlvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    FrameSizeError,
    MultiScaleCrop,
    Normalize,
    ResizeShorter,
    ThreeCrop,
    crop_sizes,
    fixed_crop_offsets,
    three_crop_transform,
    train_transform,
    val_transform,
)

# Sides for a 100 px short side: int(100 * s) for s in (1, .875, .75, .66) = 100, 87, 75, 66.
PAIRS_224 = [
    (100, 100), (87, 100),
    (100, 87), (87, 87), (75, 87),
    (87, 75), (75, 75), (66, 75),
    (75, 66), (66, 66),
]  # fmt: skip
# With a 64 px output, 66 is within 3 px of 64 and snaps to it.
PAIRS_64 = [(w if w != 66 else 64, h if h != 66 else 64) for w, h in PAIRS_224]


def random_video(t=3, h=100, w=176, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("image_w", [176, 132])
def test_crop_sizes(image_w):
    assert crop_sizes(image_w, 100, 224) == PAIRS_224
    assert crop_sizes(image_w, 100, 64) == PAIRS_64
    assert crop_sizes(100, image_w, 224) == PAIRS_224  # base is the shorter side
    assert crop_sizes(image_w, 100, 224, max_distort=0) == [(s, s) for s in (100, 87, 75, 66)]


def test_crop_sizes_snap_is_strictly_within_3px():
    assert crop_sizes(100, 100, 98, scales=(1,), max_distort=0) == [(98, 98)]
    assert crop_sizes(100, 100, 102, scales=(1,), max_distort=0) == [(102, 102)]
    assert crop_sizes(100, 100, 97, scales=(1,), max_distort=0) == [(100, 100)]
    assert crop_sizes(100, 100, 103, scales=(1,), max_distort=0) == [(100, 100)]


def test_fixed_crop_offsets_176x100():
    # w_step = (176 - 87) // 4 = 22, h_step = (100 - 75) // 4 = 6
    assert fixed_crop_offsets(176, 100, 87, 75) == [
        (0, 0), (88, 0), (0, 24), (88, 24), (44, 12),
        (0, 12), (88, 12), (44, 24), (44, 0),
        (22, 6), (66, 6), (22, 18), (66, 18),
    ]  # fmt: skip
    assert fixed_crop_offsets(176, 100, 87, 75, more_fix_crop=False) == [
        (0, 0), (88, 0), (0, 24), (88, 24), (44, 12),
    ]  # fmt: skip


def test_fixed_crop_offsets_132x100():
    # w_step = (132 - 66) // 4 = 16, h_step = (100 - 100) // 4 = 0
    assert fixed_crop_offsets(132, 100, 66, 100) == [
        (0, 0), (64, 0), (0, 0), (64, 0), (32, 0),
        (0, 0), (64, 0), (32, 0), (32, 0),
        (16, 0), (48, 0), (16, 0), (48, 0),
    ]  # fmt: skip


@pytest.mark.parametrize(("image_w", "output_size"), [(176, 224), (132, 64)])
def test_multiscale_crop_cuts_the_drawn_grid_crop(image_w, output_size):
    video = random_video(w=image_w)
    crop = MultiScaleCrop(output_size)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        pairs = crop_sizes(image_w, 100, output_size)
        w, h = pairs[rng.integers(len(pairs))]
        corners = fixed_crop_offsets(image_w, 100, w, h)
        x, y = corners[rng.integers(len(corners))]
        expected = F.resize(video[:, :, y : y + h, x : x + w], [output_size] * 2, antialias=True)
        got = crop(video, np.random.default_rng(seed))
        assert got.dtype == torch.uint8
        assert got.shape == (3, 3, output_size, output_size)
        assert torch.equal(got, expected)


def test_resize_shorter_and_center_crop():
    video = random_video(h=100, w=140)
    resized = ResizeShorter(256)(video, None)
    assert resized.shape == (3, 3, 256, 358) and resized.dtype == torch.uint8
    assert ResizeShorter(50)(video.transpose(-1, -2), None).shape == (3, 3, 70, 50)
    cropped = CenterCrop(224)(resized, None)
    top, left = round((256 - 224) / 2), round((358 - 224) / 2)
    assert torch.equal(cropped, resized[..., top : top + 224, left : left + 224])


def test_three_crop_landscape_and_portrait():
    video = random_video(t=2, h=256, w=358)
    views = ThreeCrop(256)(video, None)
    assert views.shape == (3, 2, 3, 256, 256)
    step = (358 - 256) // 4  # 25
    for view, x in zip(views, (0, 2 * step, 4 * step), strict=True):
        assert torch.equal(view, video[..., :, x : x + 256])
    portrait = video.transpose(-1, -2).contiguous()
    views = ThreeCrop(256)(portrait, None)
    for view, y in zip(views, (0, 2 * step, 4 * step), strict=True):
        assert torch.equal(view, portrait[..., y : y + 256, :])
    with pytest.raises(ValueError, match="at least"):
        ThreeCrop(300)(video, None)


def test_normalize_values():
    video = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 1, 2)
    out = Normalize()(video, None)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 1, 2)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[0, :, 0, 1], (1 - mean) / std)
    with pytest.raises(TypeError, match="uint8"):
        Normalize()(out, None)


def test_compose_threads_the_generator():
    seen = []
    record = lambda video, rng: seen.append(rng) or video + 1
    rng = np.random.default_rng(0)
    assert torch.equal(Compose([record, record])(torch.zeros(1), rng), torch.full((1,), 2.0))
    assert seen == [rng, rng]


def test_builders_shapes_and_determinism():
    video = random_video(t=4, h=100, w=140)
    train = train_transform(input_size=112, scales=[1, 0.875], mean=[0.5] * 3, std=[0.5] * 3)
    out = train(video, np.random.default_rng(1))
    assert out.shape == (4, 3, 112, 112) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, train(video, np.random.default_rng(1)))
    assert val_transform()(video, None).shape == (4, 3, 224, 224)
    assert three_crop_transform()(video, None).shape == (3, 4, 3, 256, 256)


def test_frames_too_small_for_a_crop_raise_frame_size_errors():
    video = random_video(h=30, w=40)
    # 30 px is within 3 px of 32: the full-frame crop snaps to 32 px, beyond the frame.
    with pytest.raises(
        FrameSizeError, match=r"frames of 30x40 px are too small for MultiScaleCrop"
    ):
        MultiScaleCrop(32)(video, np.random.default_rng(0))
    with pytest.raises(FrameSizeError, match="too small for MultiScaleCrop"):
        MultiScaleCrop(8)(random_video(h=1, w=40), np.random.default_rng(0))  # 0 px crops
    assert MultiScaleCrop(24)(video, np.random.default_rng(0)).shape == (3, 3, 24, 24)
    with pytest.raises(FrameSizeError, match="CenterCrop\\(32\\) needs frames at least that big"):
        CenterCrop(32)(video, np.random.default_rng(0))
    with pytest.raises(FrameSizeError, match="ThreeCrop\\(32\\) needs frames at least that big"):
        ThreeCrop(32)(video, np.random.default_rng(0))
    for make in (val_transform, three_crop_transform):
        with pytest.raises(ValueError, match="crop size 300 exceeds scale_size 256"):
            make(input_size=300, scale_size=256)
