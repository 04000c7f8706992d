"""The frame-index formulas against straightforward re-implementations of the TSM text."""

import numpy as np
import pytest

from rnlvideo.data.sampling import (
    SAMPLING_MODES,
    clips_per_sample,
    dense_offsets,
    sample_offsets,
    tsn_test_offsets,
    tsn_train_offsets,
    tsn_val_offsets,
    twice_sample_offsets,
)

SEGMENTS = [1, 3, 8, 16]


def frame_counts(t):
    return sorted({1, 2, t - 1, t, t + 1, t + 2, 2 * t - 1, 2 * t, 2 * t + 1, 37, 64, 65, 300})


CASES = [(n, t) for t in SEGMENTS for n in frame_counts(t) if n >= 1]


def reference_train(n, t, rng):
    avg = n // t
    if avg > 0:
        return [x * avg + int(r) for x, r in zip(range(t), rng.integers(avg, size=t), strict=True)]
    if n > t:
        return sorted(int(r) for r in rng.integers(n, size=t))
    return [0] * t


def reference_val(n, t):
    if n > t:
        tick = n / t
        return [int(tick / 2 + tick * x) for x in range(t)]
    return [0] * t


def reference_test(n, t):
    tick = n / t  # test mode: no fallback for short videos
    return [int(tick / 2 + tick * x) for x in range(t)]


def reference_twice(n, t):
    tick = n / t
    return reference_test(n, t) + [int(tick * x) for x in range(t)]


def reference_dense(n, t, starts):
    stride = 64 // t
    return [(start + i * stride) % n for start in starts for i in range(t)]


@pytest.mark.parametrize(("n", "t"), CASES)
def test_tsn_train_matches_formula(n, t):
    for seed in range(5):
        got = tsn_train_offsets(n, t, np.random.default_rng(seed))
        assert got.dtype == np.int64 and got.shape == (t,)
        assert got.tolist() == reference_train(n, t, np.random.default_rng(seed))
        assert got.min() >= 0 and got.max() < n


@pytest.mark.parametrize(("n", "t"), CASES)
def test_val_test_and_twice_match_formula(n, t):
    val = tsn_val_offsets(n, t)
    test = tsn_test_offsets(n, t)
    twice = twice_sample_offsets(n, t)
    assert val.dtype == test.dtype == twice.dtype == np.int64
    assert val.tolist() == reference_val(n, t)
    assert test.tolist() == reference_test(n, t)
    assert twice.tolist() == reference_twice(n, t)
    assert twice.max() < n


@pytest.mark.parametrize("t", [8, 16])
def test_test_modes_follow_the_test_formula_for_every_length(t):
    """Segment x of n frames: centre floor((2x + 1) n / 2T), start floor(x n / T), any n."""
    for n in range(1, 81):
        centres = [(2 * x + 1) * n // (2 * t) for x in range(t)]
        starts = [x * n // t for x in range(t)]
        assert tsn_test_offsets(n, t).tolist() == centres, n
        assert sample_offsets("tsn_test", n, t).tolist() == centres, n
        assert twice_sample_offsets(n, t).tolist() == centres + starts, n
        assert sample_offsets("twice", n, t, num_clips=2).tolist() == centres + starts, n


def test_known_values():
    assert tsn_val_offsets(10, 4).tolist() == [1, 3, 6, 8]
    assert twice_sample_offsets(10, 4).tolist() == [1, 3, 6, 8, 0, 2, 5, 7]
    assert tsn_val_offsets(8, 8).tolist() == [0] * 8  # validation: frame 1 for every segment
    assert tsn_test_offsets(8, 8).tolist() == list(range(8))  # test: frames 1..8
    assert twice_sample_offsets(8, 8).tolist() == list(range(8)) * 2
    assert tsn_test_offsets(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # n < T repeats frames
    assert tsn_train_offsets(8, 8, np.random.default_rng(0)).tolist() == list(range(8))


@pytest.mark.parametrize(("n", "t"), CASES)
def test_dense_test_matches_formula(n, t):
    sample_pos = max(1, 1 + n - 64)
    starts = [int(s) for s in np.linspace(0, sample_pos - 1, num=10)]
    got = dense_offsets(n, t, num_clips=10)
    assert got.dtype == np.int64 and got.shape == (10 * t,)
    assert got.tolist() == reference_dense(n, t, starts)


@pytest.mark.parametrize(("n", "t"), CASES)
def test_dense_train_matches_formula(n, t):
    sample_pos = max(1, 1 + n - 64)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        start = 0 if sample_pos == 1 else int(rng.integers(0, sample_pos - 1))
        got = dense_offsets(n, t, rng=np.random.default_rng(seed))
        assert got.tolist() == reference_dense(n, t, [start])


def test_dense_wraps_short_videos_and_never_draws_last_start():
    assert dense_offsets(20, 8, num_clips=1).tolist() == [0, 8, 16, 4, 12, 0, 8, 16]
    starts = {int(dense_offsets(66, 8, rng=np.random.default_rng(s))[0]) for s in range(200)}
    assert starts == {0, 1}  # sample_pos = 3; TSM's randint(0, 2) excludes start 2


def test_dispatcher_equals_functions():
    n, t = 50, 8
    assert sample_offsets("tsn_val", n, t).tolist() == tsn_val_offsets(n, t).tolist()
    assert sample_offsets("twice", n, t).tolist() == twice_sample_offsets(n, t).tolist()
    assert (
        sample_offsets("tsn_train", n, t, np.random.default_rng(3)).tolist()
        == tsn_train_offsets(n, t, np.random.default_rng(3)).tolist()
    )
    assert (
        sample_offsets("dense_train", 200, t, np.random.default_rng(3)).tolist()
        == dense_offsets(200, t, rng=np.random.default_rng(3)).tolist()
    )
    assert sample_offsets("dense_test", 200, t, num_clips=4).shape == (32,)


def test_dispatcher_errors():
    with pytest.raises(ValueError, match="valid modes: tsn_train, tsn_val, tsn_test, twice"):
        sample_offsets("uniform", 10, 4)
    with pytest.raises(ValueError, match="needs a random generator"):
        sample_offsets("tsn_train", 10, 4)
    with pytest.raises(ValueError, match="num_clips=3"):
        sample_offsets("twice", 10, 4, num_clips=3)
    with pytest.raises(ValueError, match="num_frames must be positive"):
        tsn_val_offsets(0, 4)


def test_clips_per_sample():
    assert [clips_per_sample(m) for m in SAMPLING_MODES] == [1, 1, 1, 2, 1, 1]
    assert clips_per_sample("twice", 2) == 2
    assert clips_per_sample("dense_test", 10) == 10
