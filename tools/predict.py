"""Classify one video: python tools/predict.py ckpt=PATH input=VIDEO_OR_FRAME_FOLDER [topk=5]

The model, its data settings and class names come from the checkpoint; other ``key=value``
arguments change keys of its stored config (e.g. ``protocol=2x3`` to average the paper's 6
views instead of one centre-cropped clip). ``input`` is a folder of frames (sorted ``.jpg``
files), a packed frame file (``.pack``) or a video file (decoded by ``data.video_backend``:
``auto``, ``pyav``, ``torchcodec`` or ``decord``). ``--trust-code``: see tools/test.py.
This is a thin wrapper over :func:`rnlvideo.classify`.
"""

import logging
import sys

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
    "usage: python tools/predict.py ckpt=PATH input=PATH [topk=5] [--trust-code] [key=value ...]"
)


def main(argv: list[str]) -> list[ClassScore]:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    try:
        own, overrides = split_tool_args(argv, ("ckpt", "input", "topk"))
        if "ckpt" not in own or "input" not in own:
            raise ValueError(USAGE)
        ranked = rnlvideo.classify(
            own["ckpt"],
            own["input"],
            topk=int(own.get("topk", 5)),
            overrides=overrides,
            trust_code=TRUST_FLAG in own,
        )
    except TOOL_ERRORS as err:
        exit_refused(logging.getLogger("predict"), err)
    # Class names come from the checkpoint: escaped, so that they cannot fake this output.
    print(f"{printable(str(own['input']))}:")
    for rank, entry in enumerate(ranked, start=1):
        print(f"{rank:2d}. {entry.probability:6.3f}  {printable(entry.name)}  [{entry.index}]")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
