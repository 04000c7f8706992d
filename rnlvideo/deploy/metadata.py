"""What an exported model file says about itself: classes, input, preprocessing, provenance.

Stored in the ONNX file's ``metadata_props`` (one entry per key: strings as they are, every
other value as JSON) and in a ``.pt2`` file as the extra file ``rnlvideo_metadata.json`` (one
JSON object). Exported files may come from someone else: :func:`metadata_from_mapping` checks
every key's type and range and names the file and key it rejects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnlvideo.checkpoint_format import software_versions
from rnlvideo.config.schema import TEST_CROPS, TEST_SAMPLINGS
from rnlvideo.data.sampling import SAMPLING_MODES
from rnlvideo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rnlvideo.engine.protocols import TestProtocol

METADATA_FORMAT = 1
INPUT_NAME = "clips"
OUTPUT_NAME = "logits"
INPUT_LAYOUT = "(N, 3, T, H, W)"
NORMALIZATION = "(pixel / 255 - mean) / std per RGB channel"


class MetadataError(ValueError):
    """An exported file's metadata is missing or invalid; the message names the file and key."""


@dataclass(frozen=True)
class ExportMetadata:
    """The metadata of an exported model (the README's "Deploying a model" lists it).

    Input: ``input_name`` holds float32 clips ``input_layout`` = ``(N, 3, T, H, W)`` with
    ``T = num_segments`` and ``H = W = crop_size``, normalised as ``normalization`` says with
    ``mean`` / ``std``; output ``output_name``: ``(N, len(class_names))`` logits. A video becomes
    clips as the checkpoint's test protocol does: ``sampling`` (the frame sampling of one view,
    e.g. ``tsn_test``: the centre frame of each of T segments), ``protocol`` (its ``clips``,
    ``crops``, ``sampling``, ``crop_size``), ``val_sampling`` (what ``"auto"`` sampling follows),
    shorter side resized to ``scale_size``; ``softmax``: views are averaged as probabilities
    rather than logits.
    """

    class_names: list[str]
    num_segments: int
    crop_size: int
    scale_size: int
    sampling: str
    protocol: dict[str, Any]
    val_sampling: str
    softmax: bool
    mean: list[float]
    std: list[float]
    model_name: str
    rnlvideo_version: str
    git_commit: str | None
    torch_version: str
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_layout: str = INPUT_LAYOUT
    normalization: str = NORMALIZATION
    format: int = METADATA_FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def input_shape(self, batch: int) -> tuple[int, int, int, int, int]:
        """The shape of ``batch`` clips: ``(batch, 3, T, crop_size, crop_size)``."""
        return (batch, 3, self.num_segments, self.crop_size, self.crop_size)

    def as_dict(self) -> dict[str, Any]:
        """Every key with a JSON-compatible value."""
        return asdict(self)

    def as_strings(self) -> dict[str, str]:
        """Every key as a string (ONNX ``metadata_props``): strings as they are, else JSON."""
        return {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in self.as_dict().items()
        }


def metadata_for(cfg: DictConfig, class_names: list[str]) -> ExportMetadata:
    """The metadata of a model trained with ``cfg`` (a validated config) and ``class_names``."""
    protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
    val_sampling = str(cfg.data.val.sampling)
    versions = software_versions()
    return ExportMetadata(
        class_names=list(class_names),
        num_segments=int(cfg.data.num_segments),
        crop_size=int(cfg.data.input_size),
        scale_size=int(cfg.data.scale_size),
        sampling=TestProtocol.of(cfg).sampling,
        protocol=protocol,
        val_sampling=val_sampling,
        softmax=bool(cfg.eval.softmax),
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        model_name=str(cfg.name),
        rnlvideo_version=str(versions["rnlvideo"]),
        git_commit=versions["git_commit"],
        torch_version=str(versions["torch"]),
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number_triple(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def _protocol(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"clips", "crops", "sampling", "crop_size"}
        and _positive_int(value["clips"])
        and value["crops"] in TEST_CROPS
        and value["sampling"] in ("auto", *TEST_SAMPLINGS)
        and (value["crop_size"] is None or _positive_int(value["crop_size"]))
    )


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


# key -> (check of the decoded value, what is expected)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "class_names": (_string_list, "a non-empty list of strings"),
    "num_segments": (_positive_int, "a positive integer"),
    "crop_size": (_positive_int, "a positive integer"),
    "scale_size": (_positive_int, "a positive integer"),
    "sampling": (lambda v: v in TEST_SAMPLINGS, f"one of {TEST_SAMPLINGS}"),
    "protocol": (_protocol, "{clips: int >= 1, crops: 1 or 3, sampling, crop_size: int or null}"),
    "val_sampling": (lambda v: v in SAMPLING_MODES, f"one of {SAMPLING_MODES}"),
    "softmax": (lambda v: isinstance(v, bool), "true or false"),
    "mean": (_number_triple, "3 numbers"),
    "std": (lambda v: _number_triple(v) and all(s > 0 for s in v), "3 positive numbers"),
    "model_name": (lambda v: isinstance(v, str), "a string"),
    "rnlvideo_version": (lambda v: isinstance(v, str), "a string"),
    "git_commit": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "torch_version": (lambda v: isinstance(v, str), "a string"),
    "input_name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "output_name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "input_layout": (lambda v: v == INPUT_LAYOUT, repr(INPUT_LAYOUT)),
    "normalization": (lambda v: isinstance(v, str), "a string"),
    "format": (lambda v: v == METADATA_FORMAT, f"{METADATA_FORMAT} (this rnlvideo's format)"),
}
_STRING_KEYS = {f.name for f in fields(ExportMetadata) if f.type == "str"}


def _decode(source: str | Path, key: str, text: Any) -> Any:
    """A ``metadata_props`` string back as the value :meth:`ExportMetadata.as_strings` encoded."""
    if not isinstance(text, str):
        raise MetadataError(f"{source}: metadata {key}={text!r}: expected a string")
    if key in _STRING_KEYS:
        return text
    if key == "git_commit":
        return None if text == "null" else text
    try:
        return json.loads(text)
    except ValueError:
        raise MetadataError(f"{source}: metadata {key}={text!r} is not valid JSON") from None


def metadata_from_mapping(
    values: Mapping[str, Any], source: str | Path, encoded: bool = False
) -> ExportMetadata:
    """Check and read the metadata of the exported file ``source``.

    ``values``: decoded values, or with ``encoded`` the strings of :meth:`ExportMetadata.as_strings`
    (ONNX ``metadata_props``). Keys other than rnlvideo's are ignored.

    Raises:
        MetadataError: a key is missing or its value is not what rnlvideo writes.
    """
    missing = sorted(set(_RULES) - set(values))
    if missing:
        raise MetadataError(
            f"{source}: not an rnlvideo export, or from an incompatible version: metadata keys "
            f"{missing} are missing (export the checkpoint again with tools/export.py)"
        )
    decoded: dict[str, Any] = {}
    for key, (check, expected) in _RULES.items():
        value = _decode(source, key, values[key]) if encoded else values[key]
        if not check(value):
            raise MetadataError(f"{source}: metadata {key}={value!r}: expected {expected}")
        decoded[key] = value
    return ExportMetadata(**decoded)
