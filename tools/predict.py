"""Classify one video with a checkpoint or an exported ONNX model.

    python tools/predict.py ckpt=PATH input=VIDEO_OR_FRAME_FOLDER [topk=5] [key=value ...]
    python tools/predict.py model=FILE.onnx input=VIDEO_OR_FRAME_FOLDER [topk=5] [protocol=...]

With ``ckpt``, the model, its data settings and class names come from the checkpoint; other
``key=value`` arguments change keys of its stored config (e.g. ``protocol=2x3`` to average the
paper's 6 views instead of one centre-cropped clip). With ``model``, an ONNX file written by
tools/export.py runs with onnxruntime (the ``deploy`` extra); the sampling, transforms and class
names come from its metadata, the same as for the checkpoint it came from (``protocol=...`` and
``protocol.*=...`` change the views). ``input`` is a folder of frames (sorted ``.jpg`` files) or
a video file (decoded with decord). ``--trust-code``: see tools/test.py.
This is a thin wrapper over :func:`rnlvideo.classify`.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnlvideo  # noqa: E402
from rnlvideo.analysis.classify import ClassScore  # noqa: E402
from rnlvideo.analysis.tool_args import TRUST_FLAG, split_tool_args  # noqa: E402
from rnlvideo.checkpoint import CheckpointError  # noqa: E402
from rnlvideo.config import ConfigError  # noqa: E402
from rnlvideo.deploy import MetadataError  # noqa: E402

USAGE = (
    "usage: python tools/predict.py ckpt=PATH|model=FILE.onnx input=PATH [topk=5] "
    "[--trust-code] [key=value ...]"
)


def main(argv: list[str]) -> list[ClassScore]:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    own, overrides = split_tool_args(argv, ("ckpt", "model", "input", "topk"))
    if ("ckpt" in own) == ("model" in own) or "input" not in own:
        sys.exit(USAGE)
    source = own.get("ckpt", own.get("model"))
    if "model" in own and Path(source).suffix != ".onnx":
        sys.exit(f"model={source}: expected an ONNX file (.onnx) written by tools/export.py")
    try:
        ranked = rnlvideo.classify(
            source,
            own["input"],
            topk=int(own.get("topk", 5)),
            overrides=overrides,
            trust_code=TRUST_FLAG in own,
        )
    except (CheckpointError, ConfigError, MetadataError, FileNotFoundError, ImportError) as err:
        logging.getLogger("predict").error("%s", err)
        sys.exit(2)
    except ValueError as err:  # an exported model's protocol override
        if "model" not in own:
            raise
        logging.getLogger("predict").error("%s", err)
        sys.exit(2)
    print(f"{own['input']}:")
    for rank, entry in enumerate(ranked, start=1):
        print(f"{rank:2d}. {entry.probability:6.3f}  {entry.name}  [{entry.index}]")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
