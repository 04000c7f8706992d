"""Classify one video: python tools/predict.py ckpt=PATH input=VIDEO_OR_FRAME_FOLDER [topk=5]

The model and its data settings come from the checkpoint's stored overrides, then the command
line's (e.g. ``protocol=2x3`` to average the paper's 6 views instead of one centre-cropped
clip). ``input`` is a folder of frames (sorted ``.jpg`` files) or a video file
(decoded with decord). Class names come from ``category.txt`` next to the dataset's list files
(or ``+data.category_file=PATH``); without one, classes are shown by index.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnlvideo.analysis.checkpoints import load_trained_model  # noqa: E402
from rnlvideo.analysis.classify import ClassScore, classify_video  # noqa: E402
from rnlvideo.analysis.tool_args import split_tool_args  # noqa: E402

USAGE = "usage: python tools/predict.py ckpt=PATH input=PATH [topk=5] [key=value ...]"


def main(argv: list[str]) -> list[ClassScore]:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    own, overrides = split_tool_args(argv, ("ckpt", "input", "topk"))
    if "ckpt" not in own or "input" not in own:
        sys.exit(USAGE)
    trained = load_trained_model(own["ckpt"], overrides)
    ranked, num_views = classify_video(trained, own["input"], topk=int(own.get("topk", 5)))
    print(f"{own['input']}: {num_views} view(s), {trained.cfg.data.num_segments} frames each")
    for rank, entry in enumerate(ranked, start=1):
        print(f"{rank:2d}. {entry.probability:6.3f}  {entry.name}  [{entry.index}]")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
