import pytest
import torch

from rnlvideo.models import TemporalShift, temporal_shift


def _expected_shift(x: torch.Tensor, num_segments: int, shift_div: int) -> torch.Tensor:
    """Frame-by-frame loop version of the TSM shift."""
    clips = x.reshape(-1, num_segments, *x.shape[1:])
    fold = x.shape[1] // shift_div
    out = torch.zeros_like(clips)
    for t in range(num_segments):
        if t + 1 < num_segments:
            out[:, t, :fold] = clips[:, t + 1, :fold]
        if t > 0:
            out[:, t, fold : 2 * fold] = clips[:, t - 1, fold : 2 * fold]
        out[:, t, 2 * fold :] = clips[:, t, 2 * fold :]
    return out.reshape(x.shape)


@pytest.mark.parametrize(("channels", "shift_div"), [(8, 4), (8, 8), (10, 3)])
def test_shift_moves_channels_and_pads_clip_ends_with_zeros(channels, shift_div):
    x = torch.randn(2 * 3, channels, 2, 2) + 5.0  # no zeros in the input
    out = temporal_shift(x, num_segments=3, shift_div=shift_div)
    torch.testing.assert_close(out, _expected_shift(x, 3, shift_div), rtol=0, atol=0)
    fold = channels // shift_div
    clips = out.reshape(2, 3, channels, 2, 2)
    assert (clips[:, -1, :fold] == 0).all()  # last frame has no next frame
    assert (clips[:, 0, fold : 2 * fold] == 0).all()  # first frame has no previous frame
    assert (clips[:, 1, :fold] == x.reshape(2, 3, channels, 2, 2)[:, 2, :fold]).all()


def test_shift_does_not_mutate_input_and_is_differentiable():
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    before = x.detach().clone()
    out = temporal_shift(x, num_segments=2, shift_div=4)
    assert torch.equal(x.detach(), before)
    assert out.data_ptr() != x.data_ptr()
    out.sum().backward()
    # Every input value reaches the output once, except those pushed past a clip end.
    expected = torch.ones(2, 2, 8, 3, 3)
    expected[:, 0, :2] = 0  # frame 0, channels [0, fold): would go to frame -1
    expected[:, 1, 2:4] = 0  # last frame, channels [fold, 2*fold): would go past the end
    expected = expected.flatten(0, 1)
    torch.testing.assert_close(x.grad, expected)


def test_module_matches_function_and_has_no_parameters():
    module = TemporalShift(num_segments=4, shift_div=8)
    x = torch.randn(8, 16, 2, 2)
    assert list(module.parameters()) == []
    assert module.state_dict() == {}
    torch.testing.assert_close(module(x), temporal_shift(x, 4, 8))


def test_shift_rejects_batch_that_is_not_whole_clips():
    with pytest.raises(ValueError, match="num_segments=4"):
        temporal_shift(torch.randn(6, 8, 2, 2), num_segments=4)
