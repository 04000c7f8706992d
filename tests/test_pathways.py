"""SlowFast's two-pathway input: made by the data option, moved and view-averaged generically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from rnlvideo.config import build_dataset, compose_config
from rnlvideo.data import to_model_input
from rnlvideo.data.pathways import check_slowfast_alpha, slowfast_pathways
from rnlvideo.engine.evaluation import view_scores
from rnlvideo.engine.protocols import build_test_dataset
from tests.conftest import tiny_run_overrides


def test_slow_pathway_takes_evenly_spaced_frames_of_every_view() -> None:
    frames = torch.arange(32.0).view(1, 32, 1, 1).expand(3, 32, 2, 2)  # (C, T, H, W)
    slow, fast = slowfast_pathways(frames, 4)
    assert fast is frames
    assert slow.shape == (3, 8, 2, 2)
    assert slow[0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # the zoos' linspace
    views = torch.stack([frames, frames + 100])  # (V, C, T, H, W)
    slow, _ = slowfast_pathways(views, 4)
    assert slow[1, 2, :, 1, 1].tolist() == [100, 104, 108, 113, 117, 122, 126, 131]


@pytest.mark.parametrize("alpha", [0, 3, 2.0])
def test_an_alpha_that_does_not_divide_the_frames_is_refused(alpha) -> None:
    with pytest.raises(ValueError, match=r"data\.slowfast_alpha=.*data\.num_segments=8"):
        check_slowfast_alpha(alpha, 8)


@pytest.mark.parametrize("device_transform", [False, True])
def test_data_option_makes_pathways_that_the_engine_moves(
    tiny_dataset: Path, tmp_path: Path, device_transform: bool
) -> None:
    """``model=slowfast_r50`` switches ``data.slowfast_alpha`` on; a loader batch becomes a list
    ``[slow, fast]`` whose fast part is the plain clip and whose slow part is its frames."""
    common = [f"data.device_transform={device_transform}", "protocol=2x3"]
    plain_cfg = compose_config(tiny_run_overrides(tiny_dataset, tmp_path, *common))
    cfg = compose_config(tiny_run_overrides(tiny_dataset, tmp_path, *common, "model=slowfast_r50"))
    assert plain_cfg.data.slowfast_alpha is None
    assert cfg.data.slowfast_alpha == 4
    for build in (lambda c: build_dataset(c, "train"), build_test_dataset):
        dataset, plain = build(cfg), build(plain_cfg)
        batch = next(iter(DataLoader(dataset, batch_size=3)))
        clips, labels = to_model_input(batch, torch.device("cpu"), dataset.device_transform)
        reference, _ = to_model_input(
            next(iter(DataLoader(plain, batch_size=3))),
            torch.device("cpu"),
            plain.device_transform,
        )
        assert isinstance(clips, list) and len(clips) == 2 and labels.shape == (3,)
        torch.testing.assert_close(clips[1], reference)
        torch.testing.assert_close(clips[0], reference[..., [0], :, :])  # 4 frames: slow = 1


class PathwayModel(nn.Module):
    """A linear classifier of ``[slow, fast]`` clips that records its input types."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * (1 + 4) * 4 * 4, 5)
        self.inputs: list[type] = []

    def forward(self, clips: list[torch.Tensor]) -> torch.Tensor:
        self.inputs.append(type(clips))
        return self.fc(torch.cat([clip.flatten(1) for clip in clips], dim=1))


def test_view_scores_average_the_views_of_pathway_lists() -> None:
    model = PathwayModel()
    slow, fast = torch.randn(3, 6, 3, 1, 4, 4), torch.randn(3, 6, 3, 4, 4, 4)  # (B, V, ...)
    per_view = model([slow.flatten(0, 1), fast.flatten(0, 1)]).view(3, 6, 5)
    for max_clips in (None, 4):
        scores = view_scores(model, [slow, fast], softmax=False, max_clips=max_clips)
        torch.testing.assert_close(scores, per_view.mean(1))
    single = view_scores(model, [slow[:, 0], fast[:, 0]], softmax=True)  # (B, C, T, H, W)
    torch.testing.assert_close(single, per_view[:, 0].softmax(-1))
    assert set(model.inputs) == {list}
