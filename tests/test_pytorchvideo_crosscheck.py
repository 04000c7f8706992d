"""Independent cross-checks against pytorchvideo: our NL block against its NonLocal, our FLOP
counter on its builders against the model zoos' published figures."""

from __future__ import annotations

import pytest
import torch
from pytorchvideo.layers.nonlocal_net import NonLocal, create_nonlocal
from torch import nn

from rnlvideo.config import build_model, compose_config
from rnlvideo.models import NLBlock
from rnlvideo.models.cost import count_macs, count_parameters
from tools.flops import one_view

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
# pytorchvideo NonLocal submodule -> ours
PARAMETER_NAMES = {
    "conv_theta": "theta",
    "conv_phi": "phi",
    "conv_g": "g",
    "conv_out": "W.0",
    "norm": "W.1",
}


def randomised(block: NonLocal) -> NonLocal:
    """Random weights everywhere, including the output BatchNorm (it is usually zero-init)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0.0, 0.2)
        block.norm.running_mean.normal_(0.0, 0.1)
        block.norm.running_var.uniform_(0.5, 1.5)
    return block


def ours_from(theirs: NonLocal) -> NLBlock:
    """Our NL block holding pytorchvideo's weights (scaled softmax: its "softmax" form)."""
    inner = theirs.conv_theta.out_channels
    ours = NLBlock(theirs.conv_theta.in_channels, ratio=2, sub_sample=False, scale=inner**-0.5)
    state = {
        f"{mine}.{key}": value
        for their, mine in PARAMETER_NAMES.items()
        for key, value in getattr(theirs, their).state_dict().items()
    }
    ours.load_state_dict(state)
    return ours


def outputs_and_gradients(block: nn.Module, x: torch.Tensor, weights: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = block(x)
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("pooled", [False, True], ids=["all-keys", "pooled-keys"])
def test_nl_block_matches_pytorchvideo_nonlocal(pooled: bool) -> None:
    """Same weights, same outputs (training and test mode) and gradients, at 1e-5 in float32.

    Gradients are compared with the BatchNorm on its running statistics: with batch statistics
    the gradients of the g and output-conv biases are zero in exact arithmetic (a constant
    shift the normalisation removes), so both sides would only hold rounding noise. The phi
    bias gradient is zero in both modes (the softmax ignores a shift shared by all keys) and
    is compared as such.
    """
    theirs = randomised(create_nonlocal(dim_in=16, dim_inner=8, instantiation="softmax"))
    ours = ours_from(theirs)
    if pooled:
        # pytorchvideo pools the block's input before phi and g, TSM pools phi(x) and g(x):
        # the two placements agree for a linear pooling, so both get the same average pool.
        theirs.pool = nn.AvgPool3d((1, 2, 2))
        ours.pool = nn.AvgPool3d((1, 2, 2))
    torch.manual_seed(1)
    x = torch.randn(2, 16, 4, 6, 6)
    weights = torch.randn(2, 16, 4, 6, 6)
    with torch.no_grad():  # batch statistics, as in training
        torch.testing.assert_close(ours.train()(x), theirs.train()(x), **TOLERANCE)

    out_ours, dx_ours, grads_ours = outputs_and_gradients(ours.eval(), x, weights)
    out_theirs, dx_theirs, grads_theirs = outputs_and_gradients(theirs.eval(), x, weights)
    torch.testing.assert_close(out_ours, out_theirs, **TOLERANCE)
    torch.testing.assert_close(dx_ours, dx_theirs, **TOLERANCE)
    assert len(grads_theirs) == len(grads_ours) == 10
    for name, grad in grads_theirs.items():
        module, _, param = name.partition(".")
        torch.testing.assert_close(
            grads_ours[f"{PARAMETER_NAMES[module]}.{param}"], grad, **TOLERANCE
        )


def test_max_pooled_nl_blocks_differ_between_the_code_bases() -> None:
    """TSM's sub-sampled NL max-pools phi(x) and g(x); pytorchvideo's max-pools x first: the
    same weights give another function, so one's checkpoints are not the other's."""
    theirs = randomised(create_nonlocal(dim_in=16, dim_inner=8, pool_size=(1, 2, 2)))
    ours = ours_from(theirs)
    ours.pool = nn.MaxPool3d((1, 2, 2))
    x = torch.randn(2, 16, 4, 6, 6)
    with torch.no_grad():
        gap = (ours.eval()(x) - theirs.eval()(x)).abs().max()
    assert gap > 1e-2


# Published per-view figures (fvcore counts a multiply-add as one FLOP, i.e. these are GMACs),
# Kinetics-400 heads (400 classes): X3D-S 13 x 160^2 (PySlowFast model zoo's X3D table: 1.96 G,
# 3.8 M); Slow-R50 8x8 and SlowFast-R50 8x8 at their 256^2 test crops (pytorchvideo model zoo:
# 54.52 G / 32.45 M and 65.71 G / 34.57 M).
PUBLISHED = [
    ("x3d_s", 13, 160, 1.96, 3.79e6, 0.005),
    ("slow_r50", 8, 256, 54.52, 32.45e6, 0.001),
    ("slowfast_r50", 32, 256, 65.71, 34.57e6, 0.001),
]


@pytest.mark.parametrize(("model", "frames", "size", "gmacs", "params", "rel"), PUBLISHED)
def test_flop_counter_gives_the_published_figures(model, frames, size, gmacs, params, rel):
    cfg = compose_config(
        [
            f"model={model}",
            "data.num_classes=400",
            f"data.num_segments={frames}",
            f"data.input_size={size}",
        ]
    )
    with torch.device("meta"):
        net = build_model(cfg).eval()
    assert count_macs(net, one_view(cfg, "meta")) / 1e9 == pytest.approx(gmacs, rel=rel)
    assert count_parameters(net) == pytest.approx(params, abs=5e3)
