"""Which code a config may name: the allow-list of ``_target_`` builders and their signatures.

A config node with a ``_target_`` is turned into a call of that function or class
(:func:`rnlvideo.config.build.instantiate`). Configs and checkpoints can come from someone
else, so a ``_target_`` must be one of the project's own builders (:data:`ALLOWED_TARGETS`);
anything else is refused with the key named unless the caller trusts the config's code
(``--trust-code``). Every other key of a target node must be a keyword argument of the
builder, and simple annotated types (``int``, ``float``, ``bool``, ``str``, optional and
sequence forms of them) are checked, so a typo or a wrong value fails before anything is
built. Hydra's instantiate options (``_partial_``, ``_args_``, ``_recursive_``,
``_convert_``) are not part of rnlvideo's configs and are refused like any unknown key.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from hydra.utils import get_object

from rnlvideo.config.errors import ConfigError, UntrustedTargetError

ALLOWED_TARGETS = frozenset(
    {
        "rnlvideo.models.create_tsm_resnet",
        "rnlvideo.models.pytorchvideo_adapter.create_x3d",
        "rnlvideo.models.pytorchvideo_adapter.create_slow",
        "rnlvideo.models.pytorchvideo_adapter.create_slowfast",
        "rnlvideo.data.FrameFolderDataset",
        "rnlvideo.data.VideoFileDataset",
        "rnlvideo.data.transforms.train_transform",
        "rnlvideo.data.transforms.val_transform",
        "rnlvideo.data.transforms.three_crop_transform",
        "rnlvideo.engine.optim.create_sgd",
        "rnlvideo.engine.optim.create_adamw",
        "rnlvideo.engine.optim.create_scheduler",
    }
)
# The dataset builders: their ``num_classes`` must be ``data.num_classes`` (label checks).
DATASET_TARGETS = frozenset({"rnlvideo.data.FrameFolderDataset", "rnlvideo.data.VideoFileDataset"})


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every mapping with a ``_target_`` key in a plain container, with its dotted path."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from target_nodes(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from target_nodes(value, f"{path}[{index}]")


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def resolve_target(node: Mapping[str, Any], path: str, trust_code: bool = False) -> Callable:
    """The builder a target node names, imported only once the allow-list admits it.

    Raises:
        UntrustedTargetError: the ``_target_`` is not one of the project's builders.
        ConfigError: it is not a dotted name, or cannot be imported.
    """
    where = _where(path, "_target_")
    target = node["_target_"]
    if not isinstance(target, str):
        raise ConfigError(f"{where}={target!r}: expected the dotted name of a builder")
    if target not in ALLOWED_TARGETS and not trust_code:
        raise UntrustedTargetError(
            f"{where}={target!r}: not one of rnlvideo's builders, so the config may not "
            f"run it. A config or checkpoint can come from anyone; if you wrote this one, "
            f"allow its code with --trust-code (Python: trust_code=True)."
        )
    try:
        return get_object(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the config's fault
        raise ConfigError(f"{where}={target!r}: cannot be imported ({err})") from None


def check_target_node(node: Mapping[str, Any], path: str, trust_code: bool = False) -> Callable:
    """The builder of one target node, after checking its name and keyword arguments."""
    builder = resolve_target(node, path, trust_code)
    check_arguments(builder, node, path)
    return builder


def check_target_nodes(container: Any, trust_code: bool = False) -> None:
    """Refuse targets outside :data:`ALLOWED_TARGETS` and keys their builders do not take.

    ``container`` is a resolved plain config. Every target is checked against the allow-list
    before any is imported. With ``trust_code`` any importable target is allowed; its keys are
    still checked.

    Raises:
        UntrustedTargetError: a ``_target_`` is not one of the project's builders.
        ConfigError: a key is not an argument of its builder, or its value has the wrong type.
    """
    nodes = list(target_nodes(container))
    for path, node in nodes:
        target = node["_target_"]
        if isinstance(target, str) and target not in ALLOWED_TARGETS and not trust_code:
            resolve_target(node, path)  # raises UntrustedTargetError
    for path, node in nodes:
        check_target_node(node, path, trust_code)


def _signature_parameters(builder: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    parameters = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        name: p
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, takes_any


def _type_hints(builder: Callable) -> dict[str, Any]:
    function = builder.__init__ if inspect.isclass(builder) else builder
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not type-checked
        return {}


def check_arguments(builder: Callable, node: Mapping[str, Any], path: str) -> None:
    """Every non-instantiate key of ``node`` is a keyword argument of ``builder``, well typed."""
    parameters, takes_any = _signature_parameters(builder)
    hints = _type_hints(builder)
    name = getattr(builder, "__qualname__", str(builder))
    for key, value in node.items():
        if key == "_target_":
            continue
        where = _where(path, str(key))
        if not isinstance(key, str) or (key.startswith("_") and key.endswith("_")):
            raise ConfigError(
                f"{where}: not a keyword argument of {name}; instantiate options "
                "(_partial_, _args_, _recursive_, _convert_) are not accepted"
            )
        if key not in parameters:
            if takes_any:
                continue
            raise ConfigError(f"{where}: unknown key; {name} takes {', '.join(sorted(parameters))}")
        if isinstance(value, Mapping) and "_target_" in value:
            continue  # checked as a target node of its own
        expected = hints.get(key)
        if expected is not None and not matches_type(value, expected):
            raise ConfigError(f"{where}={value!r}: expected {describe_type(expected)}")


def matches_type(value: Any, expected: Any) -> bool:
    """Whether a plain config value fits a simple annotation (unknown forms always fit)."""
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        return any(matches_type(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected in (str, Path):
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, list | tuple):
            return False
        arguments = [a for a in typing.get_args(expected) if a is not Ellipsis]
        return all(matches_type(v, arguments[0]) for v in value) if arguments else True
    if origin in (dict, Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    return True


def describe_type(expected: Any) -> str:
    """A readable form of an annotation for error messages."""
    if expected is type(None):
        return "null"
    if typing.get_origin(expected) in (Union, types.UnionType):
        return " or ".join(describe_type(option) for option in typing.get_args(expected))
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
