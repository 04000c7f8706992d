"""Writing video files (H.264 mp4, VP9 webm) with PyAV: synthetic videos, tests, benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rnlvideo.files import write_atomic

# Container suffix -> (encoder, its options). H.264 as most mp4 files (Kinetics); VP9 as
# Something-Something V2's webm files. Both with B-frames / alt-ref frames and a keyframe every
# 12 frames, so decoding a frame in the middle needs a seek and frames before it.
ENCODERS = {
    ".mp4": ("libx264", {"preset": "veryfast", "crf": "23", "g": "12", "bf": "2"}),
    ".webm": ("libvpx-vp9", {"crf": "32", "b": "0", "g": "12", "deadline": "realtime"}),
}


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 12) -> None:
    """Encode RGB uint8 frames ``(H, W, 3)`` (even H and W) into ``path``, atomically.

    The codec follows the suffix (:data:`ENCODERS`); the file appears only once complete.
    """
    import av

    path = Path(path)
    if path.suffix not in ENCODERS:
        raise ValueError(f"{path}: expected a suffix of {', '.join(ENCODERS)}")
    codec, options = ENCODERS[path.suffix]

    def encode(file) -> None:
        with av.open(file, "w", format=path.suffix[1:]) as container:
            stream = None
            for pixels in frames:
                if stream is None:
                    stream = container.add_stream(codec, rate=fps, options=dict(options))
                    stream.height, stream.width = pixels.shape[:2]
                    stream.pix_fmt = "yuv420p"
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                container.mux(stream.encode(frame))
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            container.mux(stream.encode())

    write_atomic(path, encode)
