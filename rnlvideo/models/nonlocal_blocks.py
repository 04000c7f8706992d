"""Video attention blocks: region-based non-local (RNL), non-local (NL) and the channel gate.

All blocks take and return clips shaped ``(N, C, T, H, W)`` and are the identity at
initialisation (their last normalisation / linear layer starts at zero). RNL and NL compute
attention with :func:`torch.nn.functional.scaled_dot_product_attention`, so the
``THW x THW`` affinity matrix is never materialised.

Under autocast, ``attention_precision`` chooses the precision of the attention path (the
projections that make queries, keys and values, the dot products and the softmax):

- ``"fp32"``: autocast is switched off there and the path runs in float32 from the block's
  input; the output projection ``W`` runs under autocast again.
- ``"amp"``: the autocast dtype, like the rest of the network.
- ``"auto"``: float32 under float16 autocast (the unscaled dot products of a trained model can
  exceed float16's range), the autocast dtype under bfloat16.

Without autocast the setting changes nothing. Measurements behind the default:
docs/benchmarks.md, "Mixed precision".
"""

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_PRECISIONS = ("auto", "fp32", "amp")


def check_attention_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`ATTENTION_PRECISIONS`, else a ``ValueError``."""
    if precision not in ATTENTION_PRECISIONS:
        choices = ", ".join(repr(p) for p in ATTENTION_PRECISIONS)
        raise ValueError(f"attention_precision={precision!r}: expected one of {choices}")
    return precision


def attention_in_fp32(precision: str, x: Tensor) -> bool:
    """Whether a block with ``attention_precision=precision`` runs its attention path on ``x``
    in float32 with autocast off (only ever under autocast; a device without autocast, such as
    ``meta`` for FLOP counting, never is)."""
    device = x.device.type
    if (
        precision == "amp"
        or not torch.amp.is_autocast_available(device)
        or not torch.is_autocast_enabled(device)
    ):
        return False
    return precision == "fp32" or torch.get_autocast_dtype(device) == torch.float16


def set_attention_precision(model: nn.Module, precision: str) -> nn.Module:
    """Set ``attention_precision`` of every RNL / NL block in ``model``; returns ``model``."""
    check_attention_precision(precision)
    for module in model.modules():
        if isinstance(module, (RNLBlock, NLBlock)):
            module.attention_precision = precision
    return model


def _in_precision(precision: str, function: Callable[..., Tensor], x: Tensor, *args) -> Tensor:
    """``function(x, *args)``, in float32 with autocast off where :func:`attention_in_fp32`."""
    if not attention_in_fp32(precision, x):
        return function(x, *args)
    with torch.autocast(x.device.type, enabled=False):
        return function(x.float(), *args)


def _inter_channels(in_channels: int, ratio: int) -> int:
    if ratio < 1 or in_channels % ratio != 0:
        raise ValueError(f"ratio={ratio} must be a positive divisor of in_channels={in_channels}")
    return in_channels // ratio


def _output_projection(inter_channels: int, out_channels: int) -> nn.Sequential:
    """``W``: Conv3d(C', C, 1) then BatchNorm3d(C) with zero weight and bias (identity block)."""
    bn = nn.BatchNorm3d(out_channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(nn.Conv3d(inter_channels, out_channels, kernel_size=1), bn)


def _key_pool(sub_sample: bool) -> nn.Module:
    return nn.MaxPool3d(kernel_size=(1, 2, 2)) if sub_sample else nn.Identity()


def _as_sequence(x: Tensor) -> Tensor:
    """``(N, C, T, H, W) -> (N, 1, THW, C)``: one attention head over all positions."""
    # The fused SDPA kernels need a unit stride on the channel axis, else they fall back to
    # the math kernel, which materialises the affinity matrix.
    return x.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()


def _attend(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    """``y_i = sum_j softmax_j(scale * q_i . k_j) v_j``.

    Args:
        query: ``(N, C, T, H, W)``.
        key: ``(N, C, T', H', W')``.
        value: ``(N, C_v, T', H', W')``.

    Returns:
        ``(N, C_v, T, H, W)``.
    """
    n, _, t, h, w = query.shape
    y = F.scaled_dot_product_attention(
        _as_sequence(query), _as_sequence(key), _as_sequence(value), scale=scale
    )
    return y.squeeze(1).transpose(1, 2).reshape(n, -1, t, h, w)


def _affinity_rows(query: Tensor, key: Tensor, query_index: Tensor, scale: float) -> Tensor:
    """Rows of ``softmax(scale * Q^T K)`` for the chosen query positions only.

    Args:
        query: ``(N, C, T, H, W)``.
        key: ``(N, C, T', H', W')``.
        query_index: ``(Q,)`` integer flat positions into ``T*H*W`` of ``query``.

    Returns:
        ``(N, Q, T'*H'*W')``, each row summing to 1.
    """
    if query_index.ndim != 1 or query_index.is_floating_point():
        raise ValueError(
            f"query_index must be a 1-D integer tensor of flat THW positions, "
            f"got dtype {query_index.dtype} and shape {tuple(query_index.shape)}"
        )
    positions = query.shape[2:].numel()
    if query_index.numel() and (query_index.min() < 0 or query_index.max() >= positions):
        raise ValueError(f"query_index values must lie in [0, {positions}) (T*H*W of the input)")
    queries = query.flatten(2)[:, :, query_index.to(query.device)]  # (N, C, Q)
    # Dot products and softmax in float32, as the fused attention kernels accumulate them
    # whatever the input dtype (a float16 product here could overflow).
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        logits = queries.transpose(1, 2).to(dtype) @ key.flatten(2).to(dtype)
        return torch.softmax(logits * scale, dim=-1)


def _full_precision_on_cpu(x: Tensor) -> bool:
    """Whether a convolution of ``x`` runs on the CPU in float32 / float64 (no autocast)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


def _region_kernel(kernel_size: Sequence[int]) -> tuple[int, int, int]:
    """``kernel_size`` as a tuple ``(kt, kh, kw)`` of positive odd integers, else ValueError."""
    kernel = tuple(kernel_size)
    if len(kernel) != 3 or any(k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel_size={kernel}: expected 3 positive odd integers")
    return kernel


class RegionAggregation(nn.Module):
    """Sum of each channel over the cuboid region around every position (the RNL "penta" conv).

    A per-channel (depthwise) Conv3d without bias and with "same" padding. The kernel is stored
    once, in its canonical depthwise shape, as the parameter ``weight`` ``(C, 1, kt, kh, kw)``.

    ``form`` only selects how the convolution runs; both give the same result:

    - ``"depthwise"``: ``conv3d(groups=C)`` with ``weight``.
    - ``"grouped"``: the official release's form, a grouped conv with
      ``groups = max(C // 32, 1)`` whose block-diagonal weight ``(C, C // groups, kt, kh, kw)``
      is built on the fly from ``weight`` (output channel ``i`` reads only input channel ``i``).
      Slower in FLOPs, but can be the faster kernel on some devices.
    - ``"auto"``: depthwise, run in the channels-last-3d layout on CPU (oneDNN's fast depthwise
      path; at 3x7x7 on the res3 shape its forward+backward is 3-5x faster than
      ``"depthwise"`` and faster than ``"grouped"``, see docs/benchmarks.md) and as
      ``"depthwise"`` on other devices (not measured there yet: ``tools/benchmark.py rnl
      --device cuda`` compares the forms). Only in float32 / float64 without autocast: in
      bf16, torch 2.14's CPU kernel gets the weight gradient of this layout wrong.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    forms = ("depthwise", "grouped", "auto")

    def __init__(
        self, channels: int, kernel_size: Sequence[int] = (3, 7, 7), form: str = "depthwise"
    ) -> None:
        super().__init__()
        kernel_size = _region_kernel(kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = tuple((k - 1) // 2 for k in kernel_size)
        self.groups = max(channels // 32, 1)
        self.form = form
        self.weight = nn.Parameter(torch.empty(channels, 1, *kernel_size))
        self.reset_parameters()

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        if form not in self.forms:
            raise ValueError(f"aggregation form {form!r}: expected one of {self.forms}")
        if form == "grouped" and self.channels % self.groups != 0:
            raise ValueError(
                f"grouped aggregation needs channels={self.channels} divisible by "
                f"groups=max(channels // 32, 1)={self.groups}"
            )
        self._form = form

    def reset_parameters(self) -> None:
        # The release xavier-initialises the grouped weight (C, C // groups, k...), whose fan-in
        # counts C // groups input channels; use the same bound to keep its initial scale.
        fan_sum = (self.channels // self.groups + self.channels) * math.prod(self.kernel_size)
        bound = math.sqrt(6.0 / fan_sum)
        nn.init.uniform_(self.weight, -bound, bound)

    def grouped_weight(self) -> Tensor:
        """The block-diagonal ``(C, C // groups, kt, kh, kw)`` weight of the grouped form."""
        per_group = self.channels // self.groups
        # Row i of the stacked identities selects input channel i % per_group of its group.
        mask = torch.eye(per_group, dtype=self.weight.dtype, device=self.weight.device)
        return self.weight * mask.repeat(self.groups, 1)[:, :, None, None, None]

    def forward(self, x: Tensor) -> Tensor:
        if self.form == "grouped":
            return F.conv3d(x, self.grouped_weight(), padding=self.padding, groups=self.groups)
        weight = self.weight
        if self.form == "auto" and _full_precision_on_cpu(x):
            x = x.contiguous(memory_format=torch.channels_last_3d)
            weight = weight.contiguous(memory_format=torch.channels_last_3d)
        return F.conv3d(x, weight, padding=self.padding, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, form={self.form!r}"


class RNLBlock(nn.Module):
    """Region-based non-local block (Huang & Bors, ICPR 2020).

    With ``C' = in_channels // ratio``: ``theta_x = theta(x)``; ``P = aggregation(theta_x)``;
    ``f = softmax over keys of P^T P`` (unscaled); ``y = f theta_x``; ``z = W(y) + x``.
    Queries and keys are the region-aggregated ``P``, values the plain ``theta_x``.
    ``sub_sample`` max-pools keys and values by ``(1, 2, 2)``.
    ``aggregation`` picks how the region sum runs (:class:`RegionAggregation` ``form``:
    ``"depthwise"``, ``"grouped"`` or ``"auto"``); the weights and the result are the same.

    A ``kernel_size`` of all ones means no region: as in the release, the block then has no
    aggregation at all (``aggregation`` is None, no ``aggregation.weight``) and ``P = theta_x``,
    a non-local block whose query, key and value share ``theta``.
    ``attention_precision`` (``"auto"``, ``"fp32"``, ``"amp"``) chooses the precision of
    ``theta``, the aggregation and the attention under autocast (module docstring; change it
    on a built model with :func:`set_attention_precision`).

    Submodules (state-dict keys): ``theta`` Conv3d(C, C', 1) (``theta.weight|bias``);
    ``aggregation`` :class:`RegionAggregation` (``aggregation.weight`` ``(C', 1, kt, kh, kw)``)
    or None; ``W`` = Sequential(Conv3d(C', C, 1), BatchNorm3d(C)) (``W.0.*``, ``W.1.*``),
    BN zero-init.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: Sequence[int] = (3, 7, 7),
        ratio: int = 2,
        sub_sample: bool = False,
        aggregation: str = "auto",
        attention_precision: str = "auto",
    ) -> None:
        super().__init__()
        inter_channels = _inter_channels(in_channels, ratio)
        self.kernel_size = _region_kernel(kernel_size)
        self.attention_precision = check_attention_precision(attention_precision)
        if aggregation not in RegionAggregation.forms:
            raise ValueError(
                f"aggregation={aggregation!r}: expected one of {RegionAggregation.forms}"
            )
        self.theta = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.aggregation: RegionAggregation | None = None
        if any(k != 1 for k in self.kernel_size):
            self.aggregation = RegionAggregation(inter_channels, kernel_size, form=aggregation)
        self.pool = _key_pool(sub_sample)
        self.W = _output_projection(inter_channels, in_channels)

    def regions(self, theta_x: Tensor) -> Tensor:
        """``P``: ``theta_x`` summed over each position's region (itself for a 1x1x1 kernel)."""
        return theta_x if self.aggregation is None else self.aggregation(theta_x)

    def _attention(self, x: Tensor) -> Tensor:
        theta_x = self.theta(x)
        regions = self.regions(theta_x)
        return _attend(regions, self.pool(regions), self.pool(theta_x), scale=1.0)

    def _rows(self, x: Tensor, query_index: Tensor) -> Tensor:
        regions = self.regions(self.theta(x))
        return _affinity_rows(regions, self.pool(regions), query_index, scale=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.W(_in_precision(self.attention_precision, self._attention, x))

    def affinity(self, x: Tensor, query_index: Tensor) -> Tensor:
        """Attention rows ``(N, Q, L_keys)`` for flat THW positions ``query_index`` ``(Q,)``.

        ``L_keys = T*H*W``, or ``T*(H//2)*(W//2)`` with ``sub_sample``. Only ``Q`` rows are
        computed, never the full matrix: the dot products and softmax in float32 (float64 for
        a float64 block), the projections in the forward pass's precision.
        """
        return _in_precision(self.attention_precision, self._rows, x, query_index)


class NLBlock(nn.Module):
    """Embedded-Gaussian non-local block as used in TSM (Wang et al., CVPR 2018).

    With ``C' = in_channels // ratio``: ``f = softmax over keys of scale * theta(x)^T phi(x)``;
    ``y = f g(x)``; ``z = W(y) + x``. ``sub_sample`` max-pools ``phi(x)`` and ``g(x)`` by
    ``(1, 2, 2)``. ``scale=None`` means 1.0 (unscaled, as TSM); pass ``C' ** -0.5`` for the
    scaled variant.
    ``attention_precision`` as for :class:`RNLBlock` (``g``, ``theta``, ``phi`` and the
    attention).

    Submodules (state-dict keys): ``g``, ``theta``, ``phi`` Conv3d(C, C', 1) with bias;
    ``W`` = Sequential(Conv3d(C', C, 1), BatchNorm3d(C)) (``W.0.*``, ``W.1.*``), BN zero-init.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        ratio: int = 2,
        sub_sample: bool = True,
        scale: float | None = None,
        attention_precision: str = "auto",
    ) -> None:
        super().__init__()
        inter_channels = _inter_channels(in_channels, ratio)
        self.scale = 1.0 if scale is None else float(scale)
        self.attention_precision = check_attention_precision(attention_precision)
        self.g = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.theta = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv3d(in_channels, inter_channels, kernel_size=1)
        self.pool = _key_pool(sub_sample)
        self.W = _output_projection(inter_channels, in_channels)

    def _attention(self, x: Tensor) -> Tensor:
        keys, values = self.pool(self.phi(x)), self.pool(self.g(x))
        return _attend(self.theta(x), keys, values, scale=self.scale)

    def _rows(self, x: Tensor, query_index: Tensor) -> Tensor:
        return _affinity_rows(self.theta(x), self.pool(self.phi(x)), query_index, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.W(_in_precision(self.attention_precision, self._attention, x))

    def affinity(self, x: Tensor, query_index: Tensor) -> Tensor:
        """Attention rows ``(N, Q, L_keys)`` for flat THW positions ``query_index`` ``(Q,)``."""
        return _in_precision(self.attention_precision, self._rows, x, query_index)


class ChannelGate(nn.Module):
    """GCNet-style global-context channel gate (the release's "cg"), additive.

    ``a = softmax over THW of W_k(x)``; ``context = sum_j a_j x_j`` ``(N, C)``;
    ``out = x + W_v2(relu(bn1(W_v1(context))))`` broadcast over T, H, W.

    Submodules (state-dict keys): ``W_k`` Conv3d(C, 1, 1); ``W_v1`` Linear(C, C/2);
    ``bn1`` BatchNorm1d(C/2, eps=1e-5, momentum=0.01); ``W_v2`` Linear(C/2, C), zero-init.
    Like any BatchNorm1d, ``bn1`` needs a batch of more than one clip in training mode.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        hidden = _inter_channels(in_channels, 2)
        self.W_k = nn.Conv3d(in_channels, 1, kernel_size=1)
        self.W_v1 = nn.Linear(in_channels, hidden)
        self.bn1 = nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.01)
        self.relu = nn.ReLU(inplace=True)
        self.W_v2 = nn.Linear(hidden, in_channels)
        nn.init.zeros_(self.W_v2.weight)
        nn.init.zeros_(self.W_v2.bias)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.W_k(x).flatten(2), dim=-1)  # (N, 1, THW)
        context = (x.flatten(2) @ weights.transpose(1, 2)).squeeze(-1)  # (N, C)
        gate = self.W_v2(self.relu(self.bn1(self.W_v1(context))))
        return x + gate[:, :, None, None, None]
