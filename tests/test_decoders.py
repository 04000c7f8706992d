"""Video decoders: every installed backend counts the same frames and returns frame i for index i.

The test videos (H.264 mp4 and VP9 webm, with B-frames / alt-ref frames and a keyframe every
12 frames) show their own frame index as 8 large black or white blocks, which survive lossy
compression; a decoded frame is read back to its index.
"""

import sys

import numpy as np
import pytest
import torch

from rnlvideo.config.schema import FRAME_STORES as SCHEMA_FRAME_STORES
from rnlvideo.config.schema import VIDEO_BACKENDS as SCHEMA_BACKENDS
from rnlvideo.data import decoders
from rnlvideo.data.decoders import (
    AUTO_ORDER,
    VIDEO_BACKENDS,
    available_backends,
    count_frames,
    open_video,
    read_video_frames,
    resolve_backend,
)
from rnlvideo.data.encode import write_video
from rnlvideo.data.frames import FRAME_STORES, VideoDataError
from rnlvideo.data.synthetic import RenderSettings, class_names, plan_video, render_video

NUM_FRAMES = 75
HEIGHT, WIDTH = 64, 96
# Largest difference between two backends' pixels that the tests accept (grey levels). Measured:
# 0 (bit-identical) on these files and on 176x100, 170x100, 320x240 and 426x240 synthetic videos,
# mp4 and webm, with torchcodec 0.17 (FFmpeg 5.1), PyAV 18.1 (its own FFmpeg) and decord 0.6.
# One level leaves room for a rounding difference in another FFmpeg's YUV -> RGB conversion.
PIXEL_TOLERANCE = 1

BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            decoders.backend_problem(name) is not None,
            reason=f"{name} is not usable here: {decoders.backend_problem(name)}",
        ),
    )
    for name in VIDEO_BACKENDS
]


def index_frame(index: int) -> np.ndarray:
    """An RGB frame showing ``index`` (0..255) as 8 blocks, bit b at row b // 4, column b % 4."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    for bit in range(8):
        row, column = divmod(bit, 4)
        level = 230 if (index >> bit) & 1 else 25
        pixels[row * 32 : (row + 1) * 32, column * 24 : (column + 1) * 24] = level
    return pixels


def read_index(frame: torch.Tensor) -> int:
    """The index a decoded ``(3, H, W)`` frame of :func:`index_frame` shows."""
    grey = frame.float().mean(0)
    index = 0
    for bit in range(8):
        row, column = divmod(bit, 4)
        block = grey[row * 32 + 4 : (row + 1) * 32 - 4, column * 24 + 4 : (column + 1) * 24 - 4]
        index |= int(block.mean() > 128) << bit
    return index


@pytest.fixture(scope="module", params=[".mp4", ".webm"])
def indexed_video(request, module_tmp_path):
    path = module_tmp_path / f"indexed{request.param}"
    write_video(path, (index_frame(i) for i in range(NUM_FRAMES)))
    return path


@pytest.fixture(scope="module", params=[".mp4", ".webm"])
def natural_video(request, module_tmp_path):
    """A synthetic Something-Something-like video (objects, noise) at V1's frame size."""
    settings = RenderSettings(min_width=176, max_width=176, min_frames=24, max_frames=24)
    frames = render_video(plan_video(class_names()[3], 0, 7, settings))
    path = module_tmp_path / f"natural{request.param}"
    write_video(path, frames)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_index_sets_decode_to_their_frames(indexed_video, backend):
    rng = np.random.default_rng(0)
    with open_video(indexed_video, backend) as reader:
        assert reader.num_frames == NUM_FRAMES
        sets = [sorted(set(rng.integers(0, NUM_FRAMES, size).tolist())) for size in (1, 3, 8, 16)]
        sets += [[NUM_FRAMES - 1], [0, NUM_FRAMES - 1], list(range(NUM_FRAMES))]
        sets += [sorted(set(rng.integers(0, NUM_FRAMES, 8).tolist())) for _ in range(20)]
        for indices in sets:  # one reader: later sets seek backwards too
            frames, times = reader.read(indices)
            assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 3, HEIGHT, WIDTH)
            assert [read_index(frame) for frame in frames] == indices
            np.testing.assert_allclose(times, np.array(indices) / 12, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_offsets_in_any_order_with_repeats(indexed_video, backend):
    offsets = np.array([40, 3, 3, 74, 0, 12, 11, 40])
    frames = read_video_frames(indexed_video, lambda n: offsets, backend)
    assert [read_index(frame) for frame in frames] == offsets.tolist()
    assert count_frames(indexed_video, backend) == NUM_FRAMES


def test_backends_agree_on_pixels(natural_video):
    usable = available_backends()
    if len(usable) < 2:
        pytest.skip(f"one video backend installed ({usable}): nothing to compare")
    decoded = {}
    for backend in usable:
        with open_video(natural_video, backend) as reader:
            decoded[backend] = reader.read(list(range(reader.num_frames)))[0].int()
    reference = decoded[usable[0]]
    for backend in usable[1:]:
        assert decoded[backend].shape == reference.shape
        difference = (decoded[backend] - reference).abs().max().item()
        assert difference <= PIXEL_TOLERANCE, f"{backend} vs {usable[0]}: {difference} levels"


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_files_raise_video_errors_naming_them(tmp_path, indexed_video, backend):
    data = indexed_video.read_bytes()
    broken = {
        "garbage.mp4": b"\x00not a video" * 50,
        "empty.webm": b"",
        "truncated.mp4": data[: len(data) // 2] if indexed_video.suffix == ".mp4" else b"",
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(VideoDataError, match=f"cannot open video .*{name} \\({backend}\\)"):
            read_video_frames(tmp_path / name, np.arange, backend)
    with pytest.raises(VideoDataError, match="video not found: .*gone.mp4"):
        read_video_frames(tmp_path / "gone.mp4", np.arange, backend)
    with pytest.raises(VideoDataError, match="fewer than min_frames=76: .*indexed"):
        read_video_frames(indexed_video, np.arange, backend, min_frames=NUM_FRAMES + 1)


def test_auto_takes_the_first_usable_backend_in_order(monkeypatch):
    assert set(AUTO_ORDER) == set(VIDEO_BACKENDS)
    assert available_backends() == [b for b in AUTO_ORDER if decoders.backend_problem(b) is None]
    assert AUTO_ORDER == ("pyav", "torchcodec", "decord")
    problems = {"pyav": "ImportError: no module named av", "torchcodec": None, "decord": None}
    monkeypatch.setattr(decoders, "backend_problem", problems.get)
    assert resolve_backend("auto") == "torchcodec"
    assert resolve_backend("decord") == "decord"
    with pytest.raises(RuntimeError, match="video_backend='pyav' is not usable here"):
        resolve_backend("pyav")
    monkeypatch.setattr(decoders, "backend_problem", lambda name: "ImportError: absent")
    with pytest.raises(RuntimeError, match="no video decoder is installed: pip install av"):
        resolve_backend("auto")
    with pytest.raises(ValueError, match="video_backend='ffmpeg': expected 'auto' or one of"):
        resolve_backend("ffmpeg")


def test_torchcodec_without_ffmpeg_is_not_usable(monkeypatch):
    """torchcodec 0.17 imports without the system's FFmpeg and fails at the first decode: the
    check asks it whether it loaded FFmpeg, so ``auto`` passes it over."""
    pytest.importorskip("torchcodec.decoders")
    monkeypatch.setattr(sys.modules["torchcodec"], "ffmpeg_major_version", None)
    decoders.backend_problem.cache_clear()
    try:
        assert "cannot load the system's FFmpeg" in decoders.backend_problem("torchcodec")
        assert "torchcodec" not in available_backends()
        with pytest.raises(RuntimeError, match="video_backend='torchcodec' is not usable here"):
            resolve_backend("torchcodec")
    finally:
        decoders.backend_problem.cache_clear()


def test_the_config_schema_knows_every_backend_and_store():
    assert SCHEMA_BACKENDS == ("auto", *VIDEO_BACKENDS)
    assert SCHEMA_FRAME_STORES == FRAME_STORES
