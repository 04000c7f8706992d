"""tools/predict.py: one video (frame folder or video file) classified like the evaluation does."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from rnlvideo.analysis.classify import classify_video
from rnlvideo.analysis.single_video import frame_files
from rnlvideo.data import load_frame, read_categories
from rnlvideo.data.decoders import available_backends
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.evaluation import predict_dataset
from rnlvideo.engine.protocols import build_test_dataset
from rnlvideo.engine.trained_model import load_trained_model
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tools import predict as predict_tool


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    run_dir = module_tmp_path
    return save_checkpoint(run_dir / "last.pt", tiny_run_overrides(tiny_dataset, run_dir))


@pytest.mark.parametrize("protocol", ["1x1", "2x3"])
def test_predict_matches_the_evaluation_of_that_video(checkpoint, tiny_dataset, protocol, capsys):
    ranked = predict_tool.main(
        [f"ckpt={checkpoint}", f"input={tiny_dataset / 'frames' / '4'}", f"protocol={protocol}"]
    )
    printed = capsys.readouterr().out.splitlines()
    names = read_categories(tiny_dataset / "category.txt")
    assert len(ranked) == 5 and len(printed) == 6
    for line, entry in zip(printed[1:], ranked, strict=True):
        assert entry.name == names[entry.index] and entry.name in line

    trained = load_trained_model(checkpoint, [f"protocol={protocol}"])
    dataset = build_test_dataset(trained.cfg)
    assert dataset.records[0].path == "4"
    first_video = Subset(dataset, [0])
    preds = predict_dataset(trained.model, first_video, init_distributed("cpu"), 1, 0)
    expected = preds.scores[0].softmax(0).topk(5)
    assert [e.index for e in ranked] == expected.indices.tolist()
    torch.testing.assert_close(
        torch.tensor([e.probability for e in ranked]), expected.values, rtol=0, atol=1e-5
    )


def test_predict_reads_a_video_file(checkpoint: Path, tiny_dataset: Path, tmp_path: Path):
    frames = [load_frame(p) for p in frame_files(tiny_dataset / "frames" / "4")]
    video = tmp_path / "clip.mp4"
    height, width = frames[0].shape[1:]
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = width // 2 * 2, height // 2 * 2, "yuv420p"
        for frame in frames:
            image = frame.permute(1, 2, 0)[: stream.height, : stream.width].numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    trained = load_trained_model(checkpoint)
    from_file, views = classify_video(trained, video, topk=3)
    from_folder, _ = classify_video(trained, tiny_dataset / "frames" / "4", topk=3)
    assert views == 1 and len(from_file) == 3
    assert from_file[0].index == from_folder[0].index  # compression barely changes the pixels
    for backend in available_backends():  # data.video_backend chooses the decoder
        chosen = load_trained_model(checkpoint, [f"data.video_backend={backend}"])
        assert classify_video(chosen, video, topk=3)[0] == from_file
