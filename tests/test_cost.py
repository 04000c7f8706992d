"""Parameter and MAC counts: TSM-R50 and the release's RNL-R50 figures, the RNL block formula."""

import pytest
import torch

from rnlvideo.config import build_model, compose_config
from rnlvideo.models import RNLBlock
from rnlvideo.models.cost import count_macs, release_form, rnl_block_macs, tsm_resnet_cost
from rnlvideo.models.reference import ReferenceRNLBlock


def _r50_cost_rows(placement: str, release: bool = False) -> dict[str, tuple[int, int]]:
    """``{part: (params, MACs)}`` of the R50 experiment, 8 frames at 224, counted on meta."""
    cfg = compose_config(["+experiment=rnl_sthv1", f"placement={placement}", "model.weights=null"])
    with torch.device("meta"):
        model = build_model(cfg).eval()
    rows = tsm_resnet_cost(release_form(model) if release else model, input_size=224)
    return {row.name: (row.params, row.macs) for row in rows}


def test_tsm_r50_matches_the_official_figures():
    params, macs = _r50_cost_rows("none")["total"]
    assert params == 23_864_558
    assert macs / 1e9 == pytest.approx(32.7, rel=0.01)


def test_release_form_of_rnl_r50_matches_the_official_figures():
    ours = _r50_cost_rows("rnl_official")
    release = _r50_cost_rows("rnl_official", release=True)
    assert release["total"][0] == 31_548_399  # stored, masked zeros included
    assert release["total"][1] / 1e9 == pytest.approx(106.0, rel=0.005)
    # Only the aggregation conv differs: 256 x 147 (res3) and 512 x 27 (res4) real weights.
    assert release["total"][0] - ours["total"][0] == 2 * 256 * 31 * 147 + 3 * 512 * 31 * 27
    # The RNL block at res3, 8 x 28 x 28 positions, by the closed form.
    assert ours["layer2_2.0 RNLBlock"][1] == rnl_block_macs(512, (8, 28, 28), (3, 7, 7))
    grouped = rnl_block_macs(512, (8, 28, 28), (3, 7, 7), grouped=True)
    assert release["layer2_2.0 ReferenceRNLBlock"][1] == grouped


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize(
    ("kernel", "sub_sample"), [((3, 7, 7), False), ((1, 3, 3), True), ((1, 1, 1), False)]
)
def test_rnl_block_macs_match_the_formula(device, kernel, sub_sample):
    # C = 128, C' = 64: the release's grouped conv has 2 groups of 32 channels.
    torch.manual_seed(0)
    block = RNLBlock(128, kernel, sub_sample=sub_sample).to(device)
    x = torch.randn(2, 128, 3, 6, 4, device=device)
    positions, keys = 3 * 6 * 4, (3 * 3 * 2 if sub_sample else 3 * 6 * 4)
    # A 1x1x1 kernel builds no aggregation conv (the release's "no region" block).
    taps = kernel[0] * kernel[1] * kernel[2] if kernel != (1, 1, 1) else 0
    convolutions = 2 * (2 * 128 * 64 + 64 * taps) * positions
    attention = 2 * 2 * positions * keys * 64  # Q K^T and P V, on the CPU's fused kernel too
    formula = rnl_block_macs(128, (3, 6, 4), kernel, sub_sample=sub_sample)
    assert count_macs(block, x) == convolutions + attention == 2 * formula

    reference = ReferenceRNLBlock.from_block(block)
    grouped = rnl_block_macs(128, (3, 6, 4), kernel, sub_sample=sub_sample, grouped=True)
    assert count_macs(reference, x) == 2 * grouped == 2 * formula + 2 * 64 * 31 * taps * positions
