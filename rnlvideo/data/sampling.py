"""Frame-index formulas of the TSM code base (TSN segments, twice sampling, dense sampling).

Every function returns 0-based frame offsets as an int64 array; the dataset adds the index of
the first frame file (1 for Something-Something V1). ``num_frames`` is the number of frames of
the video (``n``), ``num_segments`` the number of frames per clip (``T``).

Validation during training ("tsn_val") and the test protocols ("tsn_test", "twice") differ for
short videos, as in TSM: validation takes frame 0 for every segment when ``n <= T``, the test
modes apply their formula for every ``n`` (at ``n = T`` they take every frame once).
"""

from __future__ import annotations

import numpy as np

from rnlvideo.config.schema import TEST_SAMPLINGS

DENSE_WINDOW = 64
SAMPLING_MODES = ("tsn_train", "tsn_val", "tsn_test", "twice", "dense_train", "dense_test")
# The modes that draw random frames: training only.
RANDOM_MODES = ("tsn_train", "dense_train")


def _check_counts(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be positive, got {num_segments}")


def tsn_train_offsets(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """One random frame in each of ``T`` equal segments; shape ``(T,)``.

    ``avg = n // T``; if ``avg > 0``: ``arange(T) * avg + rng.integers(avg, size=T)``;
    elif ``n > T``: ``sort(rng.integers(n, size=T))``; else all zeros.
    """
    _check_counts(num_frames, num_segments)
    average_duration = num_frames // num_segments
    if average_duration > 0:
        offsets = np.arange(num_segments) * average_duration + rng.integers(
            average_duration, size=num_segments
        )
    elif num_frames > num_segments:
        offsets = np.sort(rng.integers(num_frames, size=num_segments))
    else:
        offsets = np.zeros(num_segments)
    return offsets.astype(np.int64)


def _segment_centres(num_frames: int, num_segments: int) -> list[int]:
    tick = num_frames / num_segments
    return [int(tick / 2 + tick * x) for x in range(num_segments)]


def _segment_starts(num_frames: int, num_segments: int) -> list[int]:
    tick = num_frames / num_segments
    return [int(tick * x) for x in range(num_segments)]


def tsn_val_offsets(num_frames: int, num_segments: int) -> np.ndarray:
    """The centre frame of each of ``T`` equal segments; shape ``(T,)``.

    If ``n > T``: ``tick = n / T``, offsets ``int(tick / 2 + tick * x)``; else all zeros.
    """
    _check_counts(num_frames, num_segments)
    if num_frames <= num_segments:
        return np.zeros(num_segments, dtype=np.int64)
    return np.array(_segment_centres(num_frames, num_segments), dtype=np.int64)


def tsn_test_offsets(num_frames: int, num_segments: int) -> np.ndarray:
    """Test mode: the centre frame of each of ``T`` equal segments, for every ``n``; ``(T,)``.

    ``tick = n / T``, offsets ``int(tick / 2 + tick * x)``; unlike :func:`tsn_val_offsets` there
    is no fallback for ``n <= T`` (``n = T`` gives ``0 .. T-1``; ``n < T`` repeats frames).
    """
    _check_counts(num_frames, num_segments)
    return np.array(_segment_centres(num_frames, num_segments), dtype=np.int64)


def twice_sample_offsets(num_frames: int, num_segments: int) -> np.ndarray:
    """Two clips: the segment centres, then the segment starts; shape ``(2 * T,)``.

    ``[int(tick / 2 + tick * x)] + [int(tick * x)]`` with ``tick = n / T``, for every ``n``
    (TSM's test mode has no fallback for short videos).
    """
    _check_counts(num_frames, num_segments)
    offsets = _segment_centres(num_frames, num_segments) + _segment_starts(num_frames, num_segments)
    return np.array(offsets, dtype=np.int64)


def dense_offsets(
    num_frames: int,
    num_segments: int,
    rng: np.random.Generator | None = None,
    num_clips: int = 1,
    window: int = DENSE_WINDOW,
) -> np.ndarray:
    """Kinetics-style dense sampling: ``T`` frames ``window // T`` apart; shape ``(num_clips*T,)``.

    TSM convention: ``sample_pos = max(1, 1 + n - window)``.
    Training (``rng`` given, one clip): start ``0`` if ``sample_pos == 1`` else
    ``rng.integers(0, sample_pos - 1)`` (the upper bound is exclusive, as ``randint`` in TSM, so
    the last possible start ``n - window`` is never drawn).
    Test (``rng`` is None): starts ``linspace(0, sample_pos - 1, num=num_clips)`` truncated to
    int (TSM uses 10 clips). Offsets ``(start + i * stride) % n`` wrap around short videos.
    """
    _check_counts(num_frames, num_segments)
    if num_clips < 1:
        raise ValueError(f"num_clips must be positive, got {num_clips}")
    sample_pos = max(1, 1 + num_frames - window)
    stride = window // num_segments
    if rng is not None:
        if num_clips != 1:
            raise ValueError(f"random dense sampling draws one clip, got num_clips={num_clips}")
        starts = np.array([0 if sample_pos == 1 else rng.integers(0, sample_pos - 1)])
    else:
        starts = np.linspace(0, sample_pos - 1, num=num_clips, dtype=int)
    offsets = starts[:, None] + np.arange(num_segments) * stride
    return (offsets % num_frames).reshape(-1).astype(np.int64)


def clips_per_sample(mode: str, num_clips: int = 1) -> int:
    """How many ``T``-frame clips ``sample_offsets(mode, ..., num_clips=num_clips)`` returns.

    ``num_clips`` only chooses the count for "dense_test"; the other modes have a fixed count
    (2 for "twice", else 1) and accept ``num_clips`` equal to 1 or to that count.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(
            f"unknown sampling mode {mode!r}; valid modes: {', '.join(SAMPLING_MODES)}"
        )
    if num_clips < 1:
        raise ValueError(f"num_clips must be positive, got {num_clips}")
    if mode == "dense_test":
        return num_clips
    fixed = 2 if mode == "twice" else 1
    if num_clips not in (1, fixed):
        raise ValueError(f"sampling mode {mode!r} gives {fixed} clip(s), got num_clips={num_clips}")
    return fixed


def sample_offsets(
    mode: str,
    num_frames: int,
    num_segments: int,
    rng: np.random.Generator | None = None,
    num_clips: int = 1,
) -> np.ndarray:
    """Dispatch to the formula named by ``mode`` (one of ``SAMPLING_MODES``).

    Shape ``(clips_per_sample(mode, num_clips) * T,)``: ``(T,)`` for "tsn_train", "tsn_val",
    "tsn_test", "dense_train"; ``(2*T,)`` for "twice"; ``(num_clips*T,)`` for "dense_test".
    The random modes (``RANDOM_MODES``: "tsn_train", "dense_train") need ``rng``.
    """
    clips_per_sample(mode, num_clips)
    if mode in RANDOM_MODES and rng is None:
        raise ValueError(f"sampling mode {mode!r} needs a random generator")
    if mode == "tsn_train":
        return tsn_train_offsets(num_frames, num_segments, rng)
    if mode == "tsn_val":
        return tsn_val_offsets(num_frames, num_segments)
    if mode == "tsn_test":
        return tsn_test_offsets(num_frames, num_segments)
    if mode == "twice":
        return twice_sample_offsets(num_frames, num_segments)
    if mode == "dense_train":
        return dense_offsets(num_frames, num_segments, rng=rng)
    return dense_offsets(num_frames, num_segments, num_clips=num_clips)


def resolve_sampling(sampling: str, clips: int, val_sampling: str = "tsn_val") -> str:
    """The test-time sampling mode that yields ``clips`` clips per video.

    ``"auto"`` follows the data's validation sampling ``val_sampling``: dense data (Kinetics,
    ``dense_*``) keeps ``dense_test``; TSN-style data (Something-Something) gets ``tsn_test``
    for 1 clip, ``twice`` for 2 and ``dense_test`` for more. An explicit mode (one of
    :data:`rnlvideo.config.schema.TEST_SAMPLINGS`) must give exactly ``clips`` clips;
    ``tsn_val`` (validation during training: frame 0 for every segment of a video with
    ``n <= T`` frames) reproduces the validation figures.
    """
    if sampling == "auto":
        tsn_modes = {1: "tsn_test", 2: "twice"}
        dense = val_sampling.startswith("dense")
        sampling = "dense_test" if dense else tsn_modes.get(clips, "dense_test")
    if sampling not in TEST_SAMPLINGS:
        raise ValueError(
            f"protocol.sampling={sampling!r}: expected 'auto' or one of {TEST_SAMPLINGS}"
        )
    if clips_per_sample(sampling, clips) != clips:
        raise ValueError(
            f"protocol.sampling={sampling!r} does not give protocol.clips={clips} clips"
        )
    return sampling
