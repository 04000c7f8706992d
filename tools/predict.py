"""Classify one video with a checkpoint or an exported ONNX model.

    python tools/predict.py ckpt=PATH input=VIDEO_OR_FRAME_FOLDER [topk=5] [key=value ...]
    python tools/predict.py model=FILE.onnx input=VIDEO_OR_FRAME_FOLDER [topk=5] [protocol=...]

With ``ckpt``, the model, its data settings and class names come from the checkpoint; other
``key=value`` arguments change keys of its stored config (e.g. ``protocol=2x3`` to average the
paper's 6 views instead of one centre-cropped clip). With ``model``, an ONNX file written by
tools/export.py runs with onnxruntime (the ``deploy`` extra); the sampling, transforms and class
names come from its metadata, the same as for the checkpoint it came from (``protocol=...``,
``protocol.*=...`` and ``data.video_backend=...`` are the arguments it takes). ``input`` is a
folder of frames (sorted ``.jpg`` files), a packed frame file (``.pack``) or a video file
(decoded by ``data.video_backend``: ``auto``, ``pyav``, ``torchcodec`` or ``decord``).
``--trust-code``: see tools/test.py.
This is a thin wrapper over :func:`rnlvideo.classify`.
"""

import logging
import sys
from pathlib import Path

import rnlvideo
from rnlvideo.analysis.classify import ClassScore
from rnlvideo.cli import (
    TOOL_ERRORS,
    TRUST_FLAG,
    exit_refused,
    split_tool_args,
)
from rnlvideo.text import printable

USAGE = (
    "usage: python tools/predict.py ckpt=PATH|model=FILE.onnx input=PATH [topk=5] "
    "[--trust-code] [key=value ...]"
)


def main(argv: list[str]) -> list[ClassScore]:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    try:
        own, overrides = split_tool_args(argv, ("ckpt", "model", "input", "topk"))
        if ("ckpt" in own) == ("model" in own) or "input" not in own:
            raise ValueError(USAGE)
        source = own.get("ckpt", own.get("model"))
        if "model" in own and Path(source).suffix != ".onnx":
            raise ValueError(
                f"model={source}: expected an ONNX file (.onnx) written by tools/export.py"
            )
        ranked = rnlvideo.classify(
            source,
            own["input"],
            topk=int(own.get("topk", 5)),
            overrides=overrides,
            trust_code=TRUST_FLAG in own,
        )
    except TOOL_ERRORS as err:
        exit_refused(logging.getLogger("predict"), err)
    # Class names come from the checkpoint or the ONNX file: escaped, so that they cannot fake
    # this output.
    print(f"{printable(str(own['input']))}:")
    for rank, entry in enumerate(ranked, start=1):
        print(f"{rank:2d}. {entry.probability:6.3f}  {printable(entry.name)}  [{entry.index}]")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
