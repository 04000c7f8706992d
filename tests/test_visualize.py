"""Attention maps: capture of the block input, a constructed moving-object case, the PNG tool."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import Tensor, nn

from rnlvideo.analysis.attention import attention_maps, capture_input
from rnlvideo.analysis.attention_plot import CELL_INCHES, DPI, TITLE_INCHES
from rnlvideo.config import build_model, compose_config
from rnlvideo.models.nonlocal_blocks import ChannelGate, NLBlock, RNLBlock
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tools import visualize_attention

FRAMES, HEIGHT, WIDTH, SIDE = 4, 10, 14, 3  # the object: a SIDE x SIDE square


def object_box(t: int) -> tuple[slice, slice]:
    """Rows and columns of the moving object in frame ``t``: 3 px to the right per frame."""
    return slice(4, 4 + SIDE), slice(1 + 3 * t, 1 + 3 * t + SIDE)


STATIC_BOX = (slice(0, SIDE), slice(WIDTH - SIDE, WIDTH))  # a static distractor, top right


class ToyVideoModel(nn.Module):
    """A "model" with one ``cg+<attention>`` entry: red -> channel 0, green -> channel 1."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, kernel_size=1, bias=False)
        with torch.no_grad():
            self.stem.weight.zero_()
            self.stem.weight[0, 0] = 1.0
            self.stem.weight[1, 1] = 1.0
        self.nonlocal_blocks = nn.ModuleDict({"layer2_0": nn.Sequential(ChannelGate(4), attention)})

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlocal_blocks["layer2_0"](self.stem(x)).mean(dim=(2, 3, 4))


def colour_embedding(conv: nn.Conv3d) -> None:
    """A 1x1 conv C=4 -> C'=2 that copies the red and green channels, scaled by 10."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0] = 10.0
        conv.weight[1, 1] = 10.0


def rnl_block() -> RNLBlock:
    block = RNLBlock(4, kernel_size=(1, 3, 3), ratio=2)
    colour_embedding(block.theta)
    with torch.no_grad():
        block.aggregation.weight.fill_(1 / 9)  # P: the mean over a 3x3 region
    return block


def nl_block() -> NLBlock:
    block = NLBlock(4, ratio=2, sub_sample=False)
    colour_embedding(block.theta)
    colour_embedding(block.phi)
    return block


def moving_object_clip() -> Tensor:
    """``(3, T, H, W)``: a red square moving right, a static green one, noise elsewhere."""
    clip = 0.05 * torch.randn(3, FRAMES, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    for t in range(FRAMES):
        rows, cols = object_box(t)
        clip[0, t, rows, cols] = 1.0
        clip[1, t, STATIC_BOX[0], STATIC_BOX[1]] = 1.0
    return clip


@pytest.mark.parametrize("make_block", [rnl_block, nl_block], ids=["rnl", "nl"])
def test_query_on_moving_object_attends_to_it_in_every_frame(make_block) -> None:
    model = ToyVideoModel(make_block())
    rows, cols = object_box(0)
    query = (0, (rows.start + 1.5) / HEIGHT, (cols.start + 1.5) / WIDTH)  # the object's centre
    maps = attention_maps(model, moving_object_clip(), block="layer2_0", queries=[query])

    affinity = maps.affinity[0]  # (T, H, W)
    assert maps.query_cells.tolist() == [[0, rows.start + 1, cols.start + 1]]
    assert affinity.shape == (FRAMES, HEIGHT, WIDTH)
    assert float(affinity.sum()) == pytest.approx(1.0, abs=1e-5)
    on_object = 0.0
    for t in range(FRAMES):
        rows, cols = object_box(t)
        peak = divmod(int(affinity[t].argmax()), WIDTH)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop, t
        on_object += float(affinity[t, rows, cols].sum())
    assert on_object > 0.9
    assert float(affinity[:, STATIC_BOX[0], STATIC_BOX[1]].sum()) < 0.01


def test_capture_gives_the_rnl_the_channel_gate_output() -> None:
    cfg = compose_config(["+experiment=demo", "data.num_segments=4"])
    model = build_model(cfg).eval()
    gate, rnl = model.nonlocal_blocks["layer2_0"]  # placement rnl_r18: cg+rnl
    nn.init.normal_(gate.W_v2.weight)  # a gate that is not the identity
    outputs = []
    gate.register_forward_hook(lambda module, args, output: outputs.append(output))
    captured = capture_input(model, rnl, torch.randn(1, 3, 4, 32, 32))
    assert torch.equal(captured, outputs[0])
    assert captured.shape == (1, 128, 4, 4, 4)


def test_nl_attention_maps_cover_the_subsampled_keys() -> None:
    cfg = compose_config(["+experiment=demo", "placement=nl_r18", "data.num_segments=4"])
    maps = attention_maps(build_model(cfg), torch.randn(3, 4, 32, 32), queries=[(3, 0.0, 1.0)])
    assert maps.kind == "NLBlock"
    assert maps.query_cells.tolist() == [[3, 0, 3]]
    assert maps.affinity.shape == (1, 4, 2, 2)  # (Q, T, H/2, W/2): keys max-pooled
    assert maps.heatmaps().shape == (1, 4, 32, 32)
    assert float(maps.affinity.sum()) == pytest.approx(1.0, abs=1e-5)


def test_visualize_tool_writes_the_grid(tiny_dataset: Path, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "last.pt", tiny_run_overrides(tiny_dataset, tmp_path))
    video = tiny_dataset / "frames" / "4"
    out = visualize_attention.main(
        [f"ckpt={ckpt}", f"video={video}", "queries=[[1,0.5,0.5],[3,0.25,0.75]]"]
    )
    assert out == tmp_path / "attention_4_layer2_0.png"
    height = round((2 * CELL_INCHES + TITLE_INCHES) * DPI)
    width = round(FRAMES * CELL_INCHES * DPI)
    assert matplotlib.image.imread(out).shape[:2] == (height, width)
