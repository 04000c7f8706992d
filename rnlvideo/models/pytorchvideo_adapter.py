"""pytorchvideo's 3D-CNN builders (X3D, Slow, SlowFast) behind the keys every model config has.

Every model config of rnlvideo has ``num_classes``, ``dropout`` and ``weights`` and takes its clip
shape from the data config (``num_segments`` frames of ``input_size`` pixels), so experiments and
tools treat every model alike (the demo's ``model.dropout``; ``model.weights=null`` when a
checkpoint is rebuilt). These functions map those keys onto pytorchvideo's builder arguments and
pass every other keyword to the builder unchanged, adding only the glue the builders need:

- the head's pooling kernel follows the clip shape: ``(T, ceil(S / 32), ceil(S / 32))`` for the
  ResNets, one per pathway for SlowFast (X3D's builder derives its own from the same keys);
- the heads return logits (pytorchvideo's X3D head defaults to a softmax);
- SlowFast fuses with a temporal stride of ``slowfast_alpha`` and takes ``[slow, fast]`` clips,
  which the data option ``data.slowfast_alpha`` makes (:mod:`rnlvideo.data.pathways`);
- ``weights``: a local weights file; nothing is downloaded.

The models are pytorchvideo ``Net``s taking ``(N, 3, T, H, W)`` (SlowFast: ``[(N, 3, T / alpha,
H, W), (N, 3, T, H, W)]``) and returning ``(N, num_classes)`` logits. ``blocks.0`` is the stem and
``blocks.<last>.proj`` the classifier, named by the model's ``classifier_prefix`` attribute (the
optimiser's parameter groups read it).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast as ptv_create_slowfast
from pytorchvideo.models.x3d import create_x3d as ptv_create_x3d
from torch import Tensor, nn

from rnlvideo.models.weights import load_refitting_classifier, read_state_dict

logger = logging.getLogger(__name__)


def create_x3d(
    num_classes: int,
    num_segments: int,
    input_size: int,
    dropout: float = 0.5,
    weights: str | None = None,
    **builder_kwargs: Any,
) -> nn.Module:
    """X3D from ``pytorchvideo.models.x3d.create_x3d`` (X3D-S / X3D-M: the same network).

    Input ``(N, 3, num_segments, input_size, input_size)``, output ``(N, num_classes)`` logits.
    ``builder_kwargs`` (``width_factor``, ``depth_factor``, ...) go to the builder unchanged.
    """
    net = _build(
        ptv_create_x3d,
        builder_kwargs,
        num_classes,
        dropout,
        input_clip_length=num_segments,
        input_crop_size=input_size,
    )
    return _finish(net, weights)


def create_slow(
    num_classes: int,
    num_segments: int,
    input_size: int,
    dropout: float = 0.5,
    weights: str | None = None,
    **builder_kwargs: Any,
) -> nn.Module:
    """A 3D ResNet (Slow-only R50 with the zoo's kernels) from ``pytorchvideo.models.resnet``.

    Input ``(N, 3, num_segments, input_size, input_size)``, output ``(N, num_classes)`` logits;
    the head averages the ``(T, ceil(S / 32), ceil(S / 32))`` features of that clip shape.
    ``builder_kwargs`` (``model_depth``, ``stem_conv_kernel_size``, ...) go to ``create_resnet``.
    """
    temporal, spatial = _resnet_strides(_as_tuples(builder_kwargs))
    net = _build(
        create_resnet,
        builder_kwargs,
        num_classes,
        dropout,
        head_pool_kernel_size=_pool_kernel(num_segments, input_size, temporal, spatial),
    )
    return _finish(net, weights)


def create_slowfast(
    num_classes: int,
    num_segments: int,
    input_size: int,
    slowfast_alpha: int = 4,
    dropout: float = 0.5,
    weights: str | None = None,
    **builder_kwargs: Any,
) -> nn.Module:
    """SlowFast from ``pytorchvideo.models.slowfast.create_slowfast``.

    ``num_segments`` is the fast pathway's frame count ``T``; the slow pathway sees
    ``T / slowfast_alpha`` frames and the fast-to-slow fusion convolutions have that temporal
    stride. Input ``[(N, 3, T / alpha, S, S), (N, 3, T, S, S)]`` (``data.slowfast_alpha``),
    output ``(N, num_classes)`` logits. ``builder_kwargs`` go to the builder unchanged.
    """
    if slowfast_alpha < 1 or num_segments % slowfast_alpha:
        raise ValueError(
            f"model.slowfast_alpha={slowfast_alpha}: expected a positive divisor of the fast "
            f"pathway's frame count data.num_segments={num_segments}"
        )
    kwargs = _as_tuples(builder_kwargs)
    frames = (num_segments // slowfast_alpha, num_segments)
    kernels = tuple(
        _pool_kernel(frames[pathway], input_size, *_slowfast_strides(kwargs, pathway))
        for pathway in (0, 1)
    )
    net = _build(
        ptv_create_slowfast,
        builder_kwargs,
        num_classes,
        dropout,
        slowfast_fusion_conv_stride=(slowfast_alpha, 1, 1),
        head_pool_kernel_sizes=kernels,
    )
    net.register_forward_pre_hook(_pathway_check(slowfast_alpha))
    return _finish(net, weights)


# ----------------------------------------------------------------------------------- glue
def _build(
    builder: Callable[..., nn.Module],
    builder_kwargs: Mapping[str, Any],
    num_classes: int,
    dropout: float,
    **owned: Any,
) -> nn.Module:
    """``builder(**owned, **builder_kwargs)`` with a logits head of ``num_classes`` after
    ``dropout``; a key the builder lacks, or one the adapter sets itself (``owned``), is refused
    naming the config key."""
    owned.update(model_num_class=num_classes, dropout_rate=dropout, head_activation=None)
    accepted = set(inspect.signature(builder).parameters) - set(owned)
    for key in builder_kwargs:
        if key not in accepted:
            raise TypeError(
                f"model.{key}: expected a keyword of {builder.__module__}.{builder.__name__} "
                f"other than those the adapter sets itself ({', '.join(sorted(owned))})"
            )
    return builder(**owned, **_as_tuples(builder_kwargs))


def _as_tuples(value: Any) -> Any:
    """Lists from YAML as the tuples pytorchvideo's builders are written for (recursively)."""
    if isinstance(value, Mapping):
        return {key: _as_tuples(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    return value


def _argument(builder: Callable[..., Any], kwargs: Mapping[str, Any], name: str) -> Any:
    """``kwargs[name]`` if given, else the builder's default for it."""
    if name in kwargs:
        return kwargs[name]
    return inspect.signature(builder).parameters[name].default


def _resnet_strides(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """Total ``(temporal, spatial)`` stride of ``create_resnet``'s stem and stages."""
    stem_conv, stem_pool, temporal, spatial = (
        _argument(create_resnet, kwargs, name)
        for name in (
            "stem_conv_stride",
            "stem_pool_stride",
            "stage_temporal_stride",
            "stage_spatial_h_stride",
        )
    )
    return (
        stem_conv[0] * stem_pool[0] * math.prod(temporal),
        stem_conv[1] * stem_pool[1] * math.prod(spatial),
    )


def _slowfast_strides(kwargs: Mapping[str, Any], pathway: int) -> tuple[int, int]:
    """Total ``(temporal, spatial)`` stride of one pathway of ``create_slowfast``."""
    stem_conv, stem_pool, temporal, spatial = (
        _argument(ptv_create_slowfast, kwargs, name)[pathway]
        for name in (
            "stem_conv_strides",
            "stem_pool_strides",
            "stage_temporal_strides",
            "stage_spatial_strides",
        )
    )
    return (
        stem_conv[0] * stem_pool[0] * math.prod(temporal),
        stem_conv[1] * stem_pool[1] * math.prod(spatial),
    )


def _pool_kernel(frames: int, size: int, temporal: int, spatial: int) -> tuple[int, int, int]:
    """The head's average-pool kernel: the whole final feature map of a training clip."""
    side = math.ceil(size / spatial)
    return (max(frames // temporal, 1), side, side)


def _pathway_check(alpha: int) -> Callable[[nn.Module, tuple[Any, ...]], tuple[list[Tensor]]]:
    """A forward pre-hook: the input must be ``[slow, fast]`` clips ``alpha`` frames apart.

    It hands the network a new list (pytorchvideo's multi-pathway blocks write into their
    input list, which would change the caller's).
    """

    def check(module: nn.Module, args: tuple[Any, ...]) -> tuple[list[Tensor]]:
        clips = args[0]
        if not isinstance(clips, list | tuple) or len(clips) != 2:
            raise TypeError(
                f"SlowFast takes a [slow, fast] list of clips, got {type(clips).__name__}: "
                f"set data.slowfast_alpha={alpha} (the default follows model.slowfast_alpha)"
            )
        slow, fast = clips
        if fast.shape[2] != alpha * slow.shape[2]:
            raise ValueError(
                f"SlowFast with model.slowfast_alpha={alpha} got {slow.shape[2]} slow and "
                f"{fast.shape[2]} fast frames: set data.slowfast_alpha={alpha}"
            )
        return (list(clips),)

    return check


def _finish(net: nn.Module, weights: str | None) -> nn.Module:
    """Name the classifier (``classifier_prefix``) and load ``weights`` if given."""
    net.classifier_prefix = f"blocks.{len(net.blocks) - 1}.proj."
    if weights is not None:
        load_weights(net, weights)
    return net


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``net`` (see :func:`read_state_dict`).

    Every tensor must fit, except a classifier of another number of classes (fine-tuning, e.g.
    Kinetics-400 weights for Something-Something), which keeps its initialisation.
    """
    refit, missing, unexpected = load_refitting_classifier(net, read_state_dict(path))
    if missing or unexpected:
        raise ValueError(
            f"model.weights={str(path)!r} do not fit the configured model: "
            f"missing {_listing(missing)}, unexpected {_listing(unexpected)}"
        )
    logger.info(
        "loaded %s%s", path, f" (classifier re-initialised: {', '.join(refit)})" if refit else ""
    )


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"
