"""Deployment: exact exports to ONNX and torch.export, and running an exported ONNX file.

- :func:`export_model` (and :func:`rnlvideo.export` over a checkpoint): export with a dynamic
  batch axis, check the file against the eager model at batch 1 and 3, write it with its
  :class:`ExportMetadata`;
- :class:`ExportedClassifier` / :func:`classify_exported`: an exported ONNX file run with
  onnxruntime, a video classified with the checkpoint's sampling and transforms;
- :func:`read_metadata`: what an exported file says about itself, checked.
"""

from rnlvideo.deploy.checks import TOLERANCE
from rnlvideo.deploy.exporting import ExportReport, export_model
from rnlvideo.deploy.formats import FORMATS, ExportError, read_metadata
from rnlvideo.deploy.metadata import ExportMetadata, MetadataError, metadata_for
from rnlvideo.deploy.runtime import ExportedClassifier, classify_exported, exported_settings

__all__ = [
    "FORMATS",
    "TOLERANCE",
    "ExportError",
    "ExportMetadata",
    "ExportReport",
    "ExportedClassifier",
    "MetadataError",
    "classify_exported",
    "export_model",
    "exported_settings",
    "metadata_for",
    "read_metadata",
]
