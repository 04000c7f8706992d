"""The export formats: ONNX (onnxruntime) and torch.export (``.pt2``).

Both start from the same capture, :func:`capture` (``torch.export.export``, non-strict, with the
batch axis of every input dynamic), so the graph never holds the batch size as a constant (the
temporal shift's ``(N*T, C, H, W) -> (N, T, C, H, W)`` reshapes stay symbolic). Then:

- ``onnx``: the captured program is translated by the current ONNX exporter
  (``torch.onnx.export(..., dynamo=True)``, onnxscript) and run with onnxruntime;
- ``torch_export``: the captured program is saved as it is (``torch.export.save``) and run with
  ``torch.export.load(...).module()``.

Each format can also run a converted program held in memory, which is how a failing part of a
model is checked on its own (:mod:`rnlvideo.deploy.checks`).
"""

from __future__ import annotations

import importlib
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram
from torch.utils._pytree import tree_leaves, tree_map

from rnlvideo.deploy.metadata import ExportMetadata, MetadataError, metadata_from_mapping

Runner = Callable[[Sequence[Tensor]], list[Tensor]]  # flat input tensors -> flat outputs
PT2_METADATA_FILE = "rnlvideo_metadata.json"
DEPLOY_INSTALL_HINT = (
    "install the deploy extra: pip install -c constraints.txt -e '.[deploy]' "
    "(or pip install onnxruntime onnx onnxscript)"
)


class ExportError(RuntimeError):
    """A model cannot be exported exactly; the message names the part that failed and why.

    ``part``: the qualified module name of the failing part ("" for the whole model, None when
    it was not looked for); ``comparisons``: the checked batches
    (:class:`rnlvideo.deploy.checks.Comparison`), when the export ran but did not match.
    """

    def __init__(
        self, message: str, part: str | None = None, comparisons: Sequence[Any] = ()
    ) -> None:
        super().__init__(message)
        self.part = part
        self.comparisons = list(comparisons)


def missing_modules(names: Sequence[str]) -> list[str]:
    """Those of the Python modules ``names`` that cannot be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def capture(module: nn.Module, args: tuple[Any, ...], batch: Any = None) -> ExportedProgram:
    """``torch.export.export`` of ``module`` (eval mode, no grad) at ``args``.

    Axis 0 of every input tensor is dynamic: ``batch`` (default: one ``Dim("batch", min=1)``
    shared by every input; ``Dim.AUTO`` lets export infer it, as for the parts of a model).
    Raises whatever torch.export raises.
    """
    batch = Dim("batch", min=1) if batch is None else batch
    dynamic = tree_map(lambda x: {0: batch} if isinstance(x, Tensor) and x.ndim else None, args)
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)


def flat_tensors(value: Any) -> list[Tensor]:
    """The tensors of a (nested) input or output, in pytree order."""
    return [x for x in tree_leaves(value) if isinstance(x, Tensor)]


class OnnxFormat:
    """ONNX through ``torch.onnx.export(dynamo=True)``; run with onnxruntime on the CPU."""

    name = "onnx"
    suffix = ".onnx"
    requires = ("onnx", "onnxscript", "onnxruntime")

    @property
    def runtime(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def convert(
        self,
        program: ExportedProgram,
        args: tuple[Any, ...],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Any:
        """The ``torch.onnx.ONNXProgram`` of ``program``; its dynamic axes named ``batch``."""
        onnx_program = torch.onnx.export(
            program,
            args,
            dynamo=True,
            verbose=False,
            input_names=list(input_names) if input_names else None,
            output_names=list(output_names) if output_names else None,
        )
        graph = onnx_program.model.graph
        symbols = {
            str(value.shape[0])
            for value in (*graph.inputs, *graph.outputs)
            if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int)
        }
        onnx_program.rename_axes(dict.fromkeys(symbols, "batch"))
        return onnx_program

    def save(self, converted: Any, path: Path, metadata: ExportMetadata) -> None:
        converted.model.metadata_props.update(metadata.as_strings())
        converted.save(path, external_data=False)

    def runner(self, converted: Any) -> Runner:
        return _onnx_runner(converted.model_proto.SerializeToString())

    def load(self, path: Path) -> Runner:
        return _onnx_runner(str(path))

    def read_metadata(self, path: Path) -> ExportMetadata:
        session = onnx_session(str(path))
        return metadata_from_mapping(
            session.get_modelmeta().custom_metadata_map, path, encoded=True
        )


def onnx_session(model: str | bytes) -> Any:
    """An onnxruntime CPU session of an ONNX file (path) or serialized model (bytes)."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"onnxruntime is not installed: {DEPLOY_INSTALL_HINT}") from None
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _onnx_runner(model: str | bytes) -> Runner:
    session = onnx_session(model)
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[Tensor]) -> list[Tensor]:
        feeds = {n: x.detach().cpu().numpy() for n, x in zip(names, inputs, strict=True)}
        return [torch.from_numpy(out) for out in session.run(None, feeds)]

    return run


class TorchExportFormat:
    """``torch.export`` programs saved with ``torch.export.save`` (``.pt2``).

    ``torch.export.load`` unpickles parts of the file: load only ``.pt2`` files you trust.
    :meth:`read_metadata` reads the metadata without loading the program.
    """

    name = "torch_export"
    suffix = ".pt2"
    requires: tuple[str, ...] = ()
    runtime = f"torch.export.load (torch {torch.__version__})"

    def convert(
        self,
        program: ExportedProgram,
        args: tuple[Any, ...],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> ExportedProgram:
        return program

    def save(self, converted: ExportedProgram, path: Path, metadata: ExportMetadata) -> None:
        torch.export.save(
            converted, path, extra_files={PT2_METADATA_FILE: json.dumps(metadata.as_dict())}
        )

    def runner(self, converted: ExportedProgram) -> Runner:
        module = converted.module()

        def run(inputs: Sequence[Tensor]) -> list[Tensor]:
            spec = converted.call_spec.in_spec
            args, kwargs = torch.utils._pytree.tree_unflatten(list(inputs), spec)
            with torch.no_grad():
                return flat_tensors(module(*args, **kwargs))

        return run

    def load(self, path: Path) -> Runner:
        return self.runner(torch.export.load(path))

    def read_metadata(self, path: Path) -> ExportMetadata:
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(f"/extra/{PT2_METADATA_FILE}")]
                if not names:
                    raise MetadataError(f"{path}: holds no rnlvideo metadata ({PT2_METADATA_FILE})")
                values = json.loads(archive.read(names[0]))
        except (zipfile.BadZipFile, ValueError) as err:
            if isinstance(err, MetadataError):
                raise
            raise MetadataError(f"{path}: not a readable .pt2 archive ({err})") from None
        if not isinstance(values, dict):
            raise MetadataError(f"{path}: {PT2_METADATA_FILE} is not a JSON object")
        return metadata_from_mapping(values, path)


FORMATS: dict[str, OnnxFormat | TorchExportFormat] = {
    "onnx": OnnxFormat(),
    "torch_export": TorchExportFormat(),
}


def format_for(name: str | None, path: str | Path) -> OnnxFormat | TorchExportFormat:
    """The format called ``name``, or (``name`` None) the one whose suffix ``path`` has."""
    if name is None:
        by_suffix = {f.suffix: f for f in FORMATS.values()}
        suffix = Path(path).suffix
        if suffix not in by_suffix:
            raise ValueError(
                f"{path}: give format= ({' or '.join(FORMATS)}) or a file name ending in "
                f"{' or '.join(by_suffix)}"
            )
        return by_suffix[suffix]
    if name not in FORMATS:
        raise ValueError(f"format={name!r}: expected one of {list(FORMATS)}")
    return FORMATS[name]


def read_metadata(path: str | Path) -> ExportMetadata:
    """The metadata of an exported file (``.onnx`` or ``.pt2``), checked; nothing is run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    return format_for(None, path).read_metadata(path)
