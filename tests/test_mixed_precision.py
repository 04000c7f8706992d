"""Mixed precision: the blocks' attention precision, the fp16 overflow guard, the comparison."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from rnlvideo.analysis.precision import (
    REFERENCE,
    SETTINGS,
    attention_rows,
    eval_logits,
    gradient_errors,
    logit_errors,
    row_errors,
    step_gradients,
)
from rnlvideo.config import build_model, compose_config
from rnlvideo.models import NLBlock, RNLBlock, create_tsm_resnet
from rnlvideo.models.nonlocal_blocks import RegionAggregation, set_attention_precision
from rnlvideo.models.reference import ReferenceRNLBlock
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tools import benchmark_amp

FP16 = torch.float16


def activated(block: nn.Module) -> nn.Module:
    """A non-zero output BN, so that the attention path reaches the block's output."""
    nn.init.ones_(block.W[1].weight)
    return block


def projection_dtype(block: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype ``theta`` computes in when ``block`` runs on ``x`` under ``dtype`` autocast."""
    seen = []
    handle = block.theta.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        block(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("make", [lambda: RNLBlock(16, (3, 3, 3)), lambda: NLBlock(16)])
def test_attention_precision_chooses_the_dtype_of_the_attention_path(make):
    x = torch.randn(2, 16, 2, 4, 4)
    block = make()
    expected = {
        ("auto", torch.bfloat16): torch.bfloat16,
        ("auto", FP16): torch.float32,  # the overflow guard
        ("fp32", torch.bfloat16): torch.float32,
        ("fp32", FP16): torch.float32,
        ("amp", torch.bfloat16): torch.bfloat16,
        ("amp", FP16): FP16,
    }
    for (precision, dtype), want in expected.items():
        set_attention_precision(block, precision)
        assert projection_dtype(block, x, dtype) == want, (precision, dtype)
    outputs = []
    for precision in ("auto", "fp32", "amp"):  # without autocast the setting changes nothing
        set_attention_precision(block, precision)
        assert projection_dtype(block, x, None) == torch.float32
        outputs.append(block(x))
    assert all(torch.equal(out, outputs[0]) for out in outputs)


def test_a_naive_fp16_attention_overflows_where_ours_stays_finite():
    torch.manual_seed(0)
    block = activated(RNLBlock(64, (3, 3, 3)))  # C' = 32 channels per dot product
    naive = ReferenceRNLBlock.from_block(block)  # materialises Q^T K, as the release does
    x = torch.randn(2, 64, 2, 4, 4)
    scale = 1.0
    while True:  # scale the activations up until the naive fp16 attention overflows
        with torch.autocast("cpu", dtype=FP16):
            if not torch.isfinite(naive(x * scale)).all():
                break
        scale *= 2
        assert scale < 2**16, "the naive attention never overflowed"
    inputs = (x * scale).requires_grad_(True)
    with torch.autocast("cpu", dtype=FP16):
        ours = block(inputs)  # attention_precision="auto": fp32 attention under fp16
    ours.float().square().mean().backward()
    assert torch.isfinite(ours).all() and torch.isfinite(inputs.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
    exact = copy.deepcopy(block).double()(x.double() * scale)
    assert ((ours.double() - exact).norm() / exact.norm()) < 1e-2

    rows = block.affinity(x * scale, torch.arange(4))  # the analysis path is guarded too
    assert torch.isfinite(rows).all() and torch.allclose(rows.sum(-1), torch.ones(2, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, FP16])
def test_region_aggregation_gradients_under_autocast_on_cpu(dtype):
    # torch 2.14's CPU kernel returns a wrong bf16 weight gradient for the channels-last-3d
    # depthwise conv that "auto" uses in float32; under autocast "auto" runs it as "depthwise".
    torch.manual_seed(0)
    aggregation = RegionAggregation(64, (3, 3, 3), form="auto")
    exact = copy.deepcopy(aggregation).double()
    x = torch.randn(3, 64, 2, 4, 4)
    with torch.autocast("cpu", dtype=dtype):
        aggregation(x).float().square().sum().backward()
    exact(x.double()).square().sum().backward()
    error = (aggregation.weight.grad.double() - exact.weight.grad).norm() / exact.weight.grad.norm()
    assert error < 1e-2


def test_the_model_config_key_reaches_every_block():
    cfg = compose_config(["+experiment=demo", "model.attention_precision=fp32"])
    model = build_model(cfg, load_weights=False)
    precisions = {m.attention_precision for m in model.modules() if isinstance(m, RNLBlock)}
    assert precisions == {"fp32"}
    with pytest.raises(ValueError, match="attention_precision='fp64'"):
        create_tsm_resnet(depth=18, attention_precision="fp64")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    blocks = [
        {"stage": "layer2", "block": 0, "kind": "rnl", "kernel_size": [3, 3, 3]},
        {"stage": "layer3", "block": 0, "kind": "nl"},
    ]
    model = create_tsm_resnet(depth=18, num_classes=5, num_segments=2, nonlocal_blocks=blocks)
    for block in model.modules():
        if isinstance(block, (RNLBlock, NLBlock)):
            activated(block)
    return model


def test_the_precision_comparison_measures_against_float64():
    model = tiny_model()
    clips = torch.randn(3, 3, 2, 32, 32)
    labels = torch.tensor([0, 1, 2])
    fp32, bf16 = SETTINGS[0], SETTINGS[1]
    assert (fp32.name, bf16.name) == ("fp32", "bf16")

    reference = eval_logits(model, [clips], REFERENCE)
    errors = {
        s.name: logit_errors(eval_logits(model, [clips], s), reference, labels)
        for s in (fp32, bf16)
    }
    assert errors["fp32"]["max_abs"] < 1e-5 < errors["bf16"]["max_abs"] < 1.0
    assert errors["fp32"]["flips"] == 0

    loss, grads = step_gradients(model, clips, labels, REFERENCE)
    _, fp32_grads = step_gradients(model, clips, labels, fp32)
    _, bf16_grads = step_gradients(model, clips, labels, bf16)
    assert loss > 0 and set(grads) == set(dict(model.named_parameters()))
    assert gradient_errors(fp32_grads, grads, "nonlocal_blocks.")["rel_l2"] < 1e-4
    # (A random deep net with 3 clips in training-mode BatchNorm is ill-conditioned: its bf16
    # gradient is far off; trained models: docs/benchmarks.md.)
    bf16_error = gradient_errors(bf16_grads, grads)
    assert bf16_error["finite"] and gradient_errors(fp32_grads, grads)["rel_l2"] < 1e-4
    assert bf16_error["rel_l2"] > 1e-3 and bf16_error["cosine"] < 1

    rows = attention_rows(model, clips, REFERENCE, chunk=5)
    assert set(rows) == {"layer2_0", "layer3_0"}
    assert rows["layer2_0"].shape == (3, 2 * 4 * 4, 2 * 4 * 4)  # every query, every key
    assert rows["layer3_0"].shape == (3, 2 * 2 * 2, 2 * 1 * 1)  # NL keys are max-pooled
    bf16_rows = attention_rows(model, clips, bf16)
    same = row_errors(rows["layer2_0"], rows["layer2_0"])
    assert same["tv_max"] == 0 and same["argmax_agree"] == 1
    assert 0 < row_errors(bf16_rows["layer2_0"], rows["layer2_0"])["tv_mean"] < 0.5


def test_the_amp_benchmark_tool_reports_every_setting(tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    checkpoint = save_checkpoint(run_dir / "last.pt", tiny_run_overrides(tiny_dataset, run_dir))
    figures = tmp_path / "amp.json"
    benchmark_amp.main(
        [str(checkpoint), "--val-clips", "3", "--grad-clips", "2", "--row-clips", "1"]
        + ["--settings", "fp32", "bf16", "--json", str(figures)]
    )
    printed = capsys.readouterr().out
    assert "Val logits against float64" in printed and "Attention rows" in printed
    (result,) = json.loads(figures.read_text())
    assert result["val_videos"] == 3 and set(result["settings"]) == {"float64", "fp32", "bf16"}
    bf16 = result["settings"]["bf16"]
    assert bf16["logits"]["finite"] and set(bf16["rows"]) == {"layer2_0", "layer3_0"}
    assert result["settings"]["fp32"]["gradient"]["rel_l2"] < 1e-3
    assert result["max_logit"]["layer2_0"] > 0
