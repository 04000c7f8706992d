"""The TSM temporal shift (Lin et al., ICCV 2019), computed out of place."""

import torch
from torch import Tensor, nn


def temporal_shift(x: Tensor, num_segments: int, shift_div: int = 8) -> Tensor:
    """Shift a fraction of the channels one frame along time, within each clip.

    Args:
        x: frames folded into the batch, ``(N*T, C, H, W)`` with ``T = num_segments``.
        num_segments: frames per clip ``T``.
        shift_div: with ``fold = C // shift_div``, channels ``[0, fold)`` take the value of the
            NEXT frame, channels ``[fold, 2*fold)`` the PREVIOUS frame, the rest are unchanged.

    Returns:
        A new ``(N*T, C, H, W)`` tensor, zero where the shift runs past a clip end. ``x`` is
        never modified.
    """
    if x.ndim != 4:
        raise ValueError(f"temporal_shift expects (N*T, C, H, W), got shape {tuple(x.shape)}")
    if num_segments < 1 or x.shape[0] % num_segments != 0:
        raise ValueError(
            f"temporal_shift: batch of {x.shape[0]} frames is not a whole number of "
            f"clips of num_segments={num_segments}"
        )
    clips = x.unflatten(0, (-1, num_segments))  # (N, T, C, H, W)
    fold = x.shape[1] // shift_div
    shifted = torch.zeros_like(clips)
    shifted[:, :-1, :fold] = clips[:, 1:, :fold]
    shifted[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]
    shifted[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return shifted.flatten(0, 1)


class TemporalShift(nn.Module):
    """Module form of :func:`temporal_shift`; no parameters. ``(N*T, C, H, W) -> same``."""

    def __init__(self, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        if num_segments < 1 or shift_div < 1:
            raise ValueError(
                f"TemporalShift needs num_segments >= 1 and shift_div >= 1, "
                f"got num_segments={num_segments}, shift_div={shift_div}"
            )
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.num_segments, self.shift_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}"
