"""Running an exported ONNX file with onnxruntime: clips to logits, and one video to classes.

A video becomes clips exactly as for the checkpoint the file came from
(:func:`rnlvideo.analysis.single_video.video_views` with the sampling, sizes and protocol stored
in the file's metadata), and the views' scores are averaged and ranked by the same code
(:func:`rnlvideo.analysis.classify.rank_classes`). Nothing in the file chooses code to run:
onnxruntime executes the graph's standard ONNX operators, and the metadata is checked
(:mod:`rnlvideo.deploy.metadata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnlvideo.analysis.classify import ClassScore, rank_classes
from rnlvideo.analysis.single_video import video_views
from rnlvideo.config import PROTOCOL_PRESETS
from rnlvideo.deploy.formats import onnx_session
from rnlvideo.deploy.metadata import ExportMetadata, MetadataError, metadata_from_mapping
from rnlvideo.engine.protocols import TestProtocol

PROTOCOL_KEYS = ("clips", "crops", "sampling", "crop_size")
BACKEND_KEY = "data.video_backend"


class ExportedClassifier:
    """An exported ONNX model run with onnxruntime on the CPU.

    ``metadata``: the file's :class:`ExportMetadata`; calling it maps float32 clips
    ``(N, 3, T, S, S)`` to ``(N, num_classes)`` logits, any ``N``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model not found: {self.path}")
        try:
            self.session = onnx_session(str(self.path))
        except ImportError:
            raise
        except Exception as error:  # onnxruntime's own exception types, for a file it cannot load
            raise MetadataError(f"{self.path}: not a loadable ONNX model ({error})") from None
        self.metadata = metadata_from_mapping(
            self.session.get_modelmeta().custom_metadata_map, self.path, encoded=True
        )
        meta = self.metadata
        self._check_graph("inputs", meta.input_name, list(meta.input_shape(1)[1:]))
        self._check_graph("outputs", meta.output_name, [meta.num_classes])

    def _check_graph(self, side: str, name: str, shape: list[int]) -> None:
        """The graph has one input (output) ``name`` of shape ``[batch, *shape]``, as the
        metadata says (the outputs: one logit per class name)."""
        ports = getattr(self.session, f"get_{side}")()
        if len(ports) != 1 or ports[0].name != name or list(ports[0].shape[1:]) != shape:
            found = [(p.name, p.shape) for p in ports]
            raise MetadataError(
                f"{self.path}: the graph's {side} {found} are not the metadata's "
                f"{name} = [batch, *{shape}] (input {self.metadata.input_layout}, one logit "
                "per class name)"
            )

    def __call__(self, clips: Tensor) -> Tensor:
        if tuple(clips.shape[1:]) != self.metadata.input_shape(1)[1:]:
            raise ValueError(
                f"{self.path} takes clips {self.metadata.input_layout} = "
                f"(N, *{self.metadata.input_shape(1)[1:]}), got {tuple(clips.shape)}"
            )
        feeds = {self.metadata.input_name: clips.detach().float().cpu().numpy()}
        (logits,) = self.session.run([self.metadata.output_name], feeds)
        return torch.from_numpy(logits)


def _protocol_value(key: str, text: str) -> Any:
    if key == "sampling":
        return text
    if key == "crop_size" and text in ("null", "None"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"protocol.{key}={text!r}: expected an integer") from None


def exported_settings(
    metadata: ExportMetadata, protocol: str | None = None, overrides: Sequence[str] = ()
) -> tuple[TestProtocol, str]:
    """The test protocol and video decoder for an exported model: the stored protocol, or the
    preset ``protocol`` (``1x1``, ``2x3``, ``10x3``), changed by ``overrides``.

    ``overrides``: ``protocol=NAME``, ``protocol.clips|crops|sampling|crop_size=VALUE`` and
    ``data.video_backend=NAME``, as for a checkpoint. The crops must have the exported crop
    size (``H = W`` of the file's input).

    Raises:
        ValueError: any other override, a value out of range, or another crop size.
    """
    if protocol is not None and protocol not in PROTOCOL_PRESETS:
        raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOL_PRESETS)}")
    settings = asdict(PROTOCOL_PRESETS[protocol]) if protocol else dict(metadata.protocol)
    video_backend = "auto"
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.removeprefix("protocol.")
        if key == "protocol" and value in PROTOCOL_PRESETS:
            settings = asdict(PROTOCOL_PRESETS[value])
        elif key.startswith("protocol.") and name in PROTOCOL_KEYS:
            settings[name] = _protocol_value(name, value)
        elif key == BACKEND_KEY:
            video_backend = value
        else:
            raise ValueError(
                f"{override}: an exported model takes only protocol=NAME "
                f"({', '.join(PROTOCOL_PRESETS)}), protocol.clips|crops|sampling|crop_size="
                f"VALUE and {BACKEND_KEY}=NAME; its data settings are fixed at export"
            )
    if settings["clips"] < 1:
        raise ValueError(f"protocol.clips={settings['clips']}: expected a value >= 1")
    resolved = TestProtocol.resolve(
        clips=settings["clips"],
        crops=settings["crops"],
        input_size=metadata.crop_size,
        scale_size=metadata.scale_size,
        sampling=settings["sampling"],
        crop_size=settings["crop_size"],
        val_sampling=metadata.val_sampling,
    )
    if resolved.crop_size != metadata.crop_size:
        size = resolved.crop_size
        raise ValueError(
            f"this protocol crops {size}x{size} pixels but the exported model takes "
            f"{metadata.crop_size}x{metadata.crop_size}: add protocol.crop_size="
            f"{metadata.crop_size}, or export the checkpoint again with data.input_size={size}"
        )
    return resolved, video_backend


@torch.no_grad()
def classify_exported(
    model: str | Path | ExportedClassifier,
    video: str | Path | Tensor,
    topk: int = 5,
    protocol: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[list[ClassScore], int]:
    """The ``topk`` most probable classes of ``video`` and the number of views.

    ``model``: an exported ONNX file or its :class:`ExportedClassifier`; ``video``: a frame
    folder, a packed frame file, a video file or uint8 frames ``(num_frames, 3, H, W)``;
    ``protocol``, ``overrides``: see :func:`exported_settings`.
    """
    classifier = model if isinstance(model, ExportedClassifier) else ExportedClassifier(model)
    metadata = classifier.metadata
    protocol, video_backend = exported_settings(metadata, protocol, overrides)
    views = video_views(video, metadata.num_segments, protocol, video_backend)
    ranked = rank_classes(
        classifier, views.unsqueeze(0), metadata.class_names, topk, metadata.softmax
    )
    return ranked, views.shape[0]
