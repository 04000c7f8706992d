"""Straightforward reference forms of the RNL and NL blocks, computed as the official release does.

They materialise the full ``THW x THW`` affinity matrix and, for RNL, run the region aggregation
as the release's masked grouped "penta" conv; their state-dict layout is the release's
(``theta``, ``penta.weight``, ``penta.mask``, ``W.0``, ``W.1``; NL: ``g``, ``theta``, ``phi``,
``W``). They exist to check :mod:`rnlvideo.models.nonlocal_blocks` and to benchmark against it.
All blocks take and return ``(N, C, T, H, W)``.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnlvideo.models.nonlocal_blocks import NLBlock, RNLBlock


def _output_projection(inter_channels: int, out_channels: int) -> nn.Sequential:
    bn = nn.BatchNorm3d(out_channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(nn.Conv3d(inter_channels, out_channels, kernel_size=1), bn)


def _key_pool(sub_sample: bool) -> nn.Module:
    return nn.MaxPool3d(kernel_size=(1, 2, 2)) if sub_sample else nn.Identity()


def _softmax_affinity(query: Tensor, key: Tensor, scale: float) -> Tensor:
    """``softmax over keys of scale * Q^T K``: ``(N, C, THW...)`` x2 -> ``(N, L_q, L_k)``."""
    return torch.softmax(query.flatten(2).transpose(1, 2) @ key.flatten(2) * scale, dim=-1)


def _aggregate_values(affinity: Tensor, value: Tensor, like: Tensor) -> Tensor:
    """``y = f v`` reshaped to the query's ``(N, C_v, T, H, W)`` grid."""
    n, _, t, h, w = like.shape
    y = affinity @ value.flatten(2).transpose(1, 2)  # (N, L_q, C_v)
    return y.transpose(1, 2).reshape(n, -1, t, h, w)


class MaskedGroupedConv3d(nn.Module):
    """The release's "penta" conv: grouped Conv3d whose weight is multiplied by a fixed 0/1 mask.

    ``groups = max(C // 32, 1)``; ``weight`` and ``mask`` are ``(C, C // groups, kt, kh, kw)``
    with ``mask[i, i % (C // groups)] = 1``, so it is a depthwise conv that costs a grouped one.
    """

    def __init__(self, channels: int, kernel_size: Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.padding = tuple((k - 1) // 2 for k in self.kernel_size)
        self.groups = max(channels // 32, 1)
        per_group = channels // self.groups
        self.weight = nn.Parameter(torch.empty(channels, per_group, *self.kernel_size))
        nn.init.xavier_uniform_(self.weight)
        mask = torch.zeros_like(self.weight)
        mask[torch.arange(channels), torch.arange(channels) % per_group] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv3d(x, self.weight * self.mask, padding=self.padding, groups=self.groups)


class ReferenceRNLBlock(nn.Module):
    """RNL block as in the release: masked grouped ``penta`` conv, materialised affinity.

    As in the release, a kernel of all ones builds no ``penta`` (None): queries and keys are
    ``theta_x`` itself.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: Sequence[int] = (3, 7, 7),
        ratio: int = 2,
        sub_sample: bool = False,
    ) -> None:
        super().__init__()
        inter_channels = in_channels // ratio
        self.theta = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.penta: MaskedGroupedConv3d | None = None
        if any(k != 1 for k in kernel_size):
            self.penta = MaskedGroupedConv3d(inter_channels, kernel_size)
        self.pool = _key_pool(sub_sample)
        self.W = _output_projection(inter_channels, in_channels)

    @classmethod
    def from_block(cls, block: RNLBlock) -> "ReferenceRNLBlock":
        """A reference holding the same weights as ``block`` (same dtype and device)."""
        in_channels, inter_channels = block.theta.in_channels, block.theta.out_channels
        reference = cls(
            in_channels,
            kernel_size=block.kernel_size,
            ratio=in_channels // inter_channels,
            sub_sample=isinstance(block.pool, nn.MaxPool3d),
        ).to(block.theta.weight)
        reference.theta.load_state_dict(block.theta.state_dict())
        reference.W.load_state_dict(block.W.state_dict())
        if block.aggregation is not None:
            with torch.no_grad():
                reference.penta.weight.copy_(block.aggregation.grouped_weight())
        return reference

    def _regions(self, theta_x: Tensor) -> Tensor:
        return theta_x if self.penta is None else self.penta(theta_x)

    def affinity_matrix(self, x: Tensor) -> Tensor:
        """The full softmax affinity ``(N, THW, L_keys)``."""
        regions = self._regions(self.theta(x))
        return _softmax_affinity(regions, self.pool(regions), scale=1.0)

    def forward(self, x: Tensor) -> Tensor:
        theta_x = self.theta(x)
        regions = self._regions(theta_x)
        affinity = _softmax_affinity(regions, self.pool(regions), scale=1.0)
        return x + self.W(_aggregate_values(affinity, self.pool(theta_x), like=theta_x))


class ReferenceNLBlock(nn.Module):
    """TSM's embedded-Gaussian non-local block with the affinity matrix materialised.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        ratio: int = 2,
        sub_sample: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        inter_channels = in_channels // ratio
        self.scale = 1.0 if scale is None else float(scale)
        self.g = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.theta = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.pool = _key_pool(sub_sample)
        self.W = _output_projection(inter_channels, in_channels)

    @classmethod
    def from_block(cls, block: NLBlock) -> "ReferenceNLBlock":
        """A reference holding the same weights as ``block`` (same dtype and device)."""
        in_channels, inter_channels = block.theta.in_channels, block.theta.out_channels
        reference = cls(
            in_channels,
            ratio=in_channels // inter_channels,
            sub_sample=isinstance(block.pool, nn.MaxPool3d),
            scale=block.scale,
        ).to(block.theta.weight)
        reference.load_state_dict(block.state_dict())
        return reference

    def affinity_matrix(self, x: Tensor) -> Tensor:
        """The full softmax affinity ``(N, THW, L_keys)``."""
        return _softmax_affinity(self.theta(x), self.pool(self.phi(x)), self.scale)

    def forward(self, x: Tensor) -> Tensor:
        theta_x = self.theta(x)
        affinity = _softmax_affinity(theta_x, self.pool(self.phi(x)), self.scale)
        return x + self.W(_aggregate_values(affinity, self.pool(self.g(x)), like=theta_x))
