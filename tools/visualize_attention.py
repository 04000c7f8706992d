"""Render RNL / NL attention maps of query points over a video's frames as a PNG grid.

    python tools/visualize_attention.py ckpt=PATH video=FRAME_FOLDER_OR_VIDEO \
        [block=layer2_0] [queries=[[4,0.5,0.5],[2,0.3,0.7]]] [out=attention.png]

``block``: key of ``model.nonlocal_blocks`` (default: the first with an RNL / NL block).
``queries``: ``(t, y, x)`` points: frame index, then the position as fractions of the frame
height and width (default: the centre of the middle frame). The clip is the validation view
(one clip, centre crop) of the checkpoint's data config; further ``key=value`` arguments are
Hydra overrides. Rows of the image are queries, columns frames; each query's own frame marks
the query point. ``out`` defaults to ``<ckpt dir>/attention_<video>_<block>.png``.
"""

import logging
import sys
from pathlib import Path

from rnlvideo.analysis.attention import attention_maps
from rnlvideo.analysis.attention_plot import save_attention_png
from rnlvideo.analysis.single_video import config_views
from rnlvideo.cli import (
    TOOL_ERRORS,
    TRUST_FLAG,
    split_tool_args,
)
from rnlvideo.engine.trained_model import load_trained_model
from rnlvideo.text import printable

USAGE = (
    "usage: python tools/visualize_attention.py ckpt=PATH video=PATH [block=layer2_0] "
    "[queries=[[t,y,x],...]] [out=PNG] [key=value ...]"
)


def main(argv: list[str]) -> Path:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        own, overrides = split_tool_args(argv, ("ckpt", "video", "block", "queries", "out"))
        if "ckpt" not in own or "video" not in own:
            raise ValueError(USAGE)
        trained = load_trained_model(own["ckpt"], overrides, trust_code=TRUST_FLAG in own)
        clip = config_views(own["video"], trained.cfg, single_view=True)[0]  # (C, T, H, W)
        queries = own.get("queries")
        maps = attention_maps(trained.model, clip, block=own.get("block"), queries=queries)
        video = Path(own["video"])
        default_out = trained.path.parent / f"attention_{video.stem}_{maps.block}.png"
        title = f"{maps.kind} attention, {maps.block}: {printable(video.name)}"
        path = save_attention_png(maps, own.get("out", default_out), title)
    except TOOL_ERRORS as err:
        logging.getLogger("visualize_attention").error(
            "%s", printable(str(err), keep_newlines=True)
        )
        sys.exit(2)
    print(f"wrote {printable(str(path))}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
