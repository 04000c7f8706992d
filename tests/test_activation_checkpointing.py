"""Activation checkpointing: same gradients and BatchNorm statistics, recompute in backward only."""

from __future__ import annotations

import copy
import os
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils._python_dispatch import TorchDispatchMode

from rnlvideo import build_model_from_config
from rnlvideo.models import TSMResNet, create_tsm_resnet
from rnlvideo.models.nonlocal_blocks import ChannelGate, NLBlock, RNLBlock
from rnlvideo.models.tsm_resnet import TSMBasicBlock
from tests.test_training import train_in_process

MODES = ("nonlocal", "all")
BLOCKS = [
    {"stage": "layer2", "block": 0, "kind": "cg+rnl", "kernel_size": [3, 3, 3]},
    {"stage": "layer3", "block": 1, "kind": "nl"},
]


def _model(**kwargs) -> TSMResNet:
    """A tiny RNL/NL TSM-R18 whose video blocks are not the identity (so they get gradients)."""
    torch.manual_seed(0)
    options = {"depth": 18, "num_classes": 5, "num_segments": 4, "nonlocal_blocks": BLOCKS}
    model = create_tsm_resnet(**{**options, **kwargs})
    for module in model.nonlocal_blocks.modules():
        if isinstance(module, nn.BatchNorm3d):
            nn.init.normal_(module.weight, std=0.5)
        if isinstance(module, ChannelGate):
            nn.init.normal_(module.W_v2.weight, std=0.1)
    return model.train()


def _batches(count: int, clips: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(clips, 3, 4, 32, 32, generator=generator),
            torch.randint(5, (clips,), generator=generator),
        )
        for _ in range(count)
    ]


def _train_steps(model: nn.Module, batches: list, amp: bool = False) -> list[torch.Tensor]:
    """Forward + backward on each batch, gradients accumulating; returns the losses."""
    losses = []
    for clips, labels in batches:
        torch.manual_seed(2)  # the head's dropout draws the same mask for both models
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            logits = model(clips)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        losses.append(loss.detach())
    return losses


def _assert_same_state(checked: nn.Module, unchecked: nn.Module) -> None:
    for (name, param), expected in zip(
        checked.named_parameters(), unchecked.parameters(), strict=True
    ):
        assert (param.grad is None) == (expected.grad is None), name
        if param.grad is not None:
            torch.testing.assert_close(param.grad, expected.grad, rtol=0, atol=1e-6, msg=name)
    for (name, buffer), expected in zip(checked.named_buffers(), unchecked.buffers(), strict=True):
        torch.testing.assert_close(buffer, expected, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("steps", "amp", "extra"),
    [
        (1, False, {}),
        (2, False, {}),  # gradient accumulation: two backward passes before an update
        (1, True, {}),  # bf16 autocast
        (1, False, {"partial_bn": True}),  # frozen BatchNorms in eval mode
    ],
    ids=["one-step", "accumulation", "bf16", "partial-bn"],
)
def test_gradients_and_batchnorm_statistics_match_the_unchecked_model(mode, steps, amp, extra):
    unchecked = _model(dropout=0.5, **extra)
    checked = copy.deepcopy(unchecked)
    checked.activation_checkpointing = mode
    batches = _batches(steps)

    expected = _train_steps(unchecked, batches, amp)
    losses = _train_steps(checked, batches, amp)

    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-6)
    _assert_same_state(checked, unchecked)
    tracked = {n: b for n, b in checked.named_buffers() if n.endswith("num_batches_tracked")}
    gate_bn = "nonlocal_blocks.layer2_0.0.bn1.num_batches_tracked"
    assert tracked[gate_bn] == steps  # once per forward, not again in the recompute
    assert all(count in (0, steps) for count in tracked.values())  # 0: frozen by partial BN


@pytest.mark.parametrize("mode", MODES)
def test_sync_batchnorm_statistics_update_once(mode):
    unchecked = nn.SyncBatchNorm.convert_sync_batchnorm(_model())
    checked = copy.deepcopy(unchecked)
    checked.activation_checkpointing = mode
    batches = _batches(1)
    _train_steps(unchecked, batches)
    _train_steps(checked, batches)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in checked.modules())
    _assert_same_state(checked, unchecked)


def _count_forwards(model: nn.Module) -> Counter:
    """Counts the forward calls of residual blocks and video blocks, by kind."""
    calls: Counter = Counter()
    for module in model.modules():
        if isinstance(module, (TSMBasicBlock, RNLBlock, NLBlock, ChannelGate)):
            module.register_forward_pre_hook(
                lambda m, *_: calls.update([type(m).__name__])  # noqa: B023
            )
    return calls


class _AttentionKernelRuns(TorchDispatchMode):
    """Counts the executions of the fused attention kernel (cached results do not reach it)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.runs += func is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("mode", "residual_runs", "video_runs"), [("none", 1, 1), ("nonlocal", 1, 2), ("all", 2, 2)]
)
def test_backward_reruns_exactly_the_checkpointed_blocks(mode, residual_runs, video_runs):
    model = _model(activation_checkpointing=mode)
    calls = _count_forwards(model)
    with _AttentionKernelRuns() as attention:
        _train_steps(model, _batches(1))
    assert calls["TSMBasicBlock"] == 8 * residual_runs
    assert calls["RNLBlock"] == calls["NLBlock"] == calls["ChannelGate"] == video_runs
    assert attention.runs == 2  # RNL and NL: the recompute keeps the attention's outputs


@pytest.mark.parametrize("mode", MODES)
def test_no_recompute_in_eval_mode_or_without_gradients(mode):
    model = _model(activation_checkpointing=mode)
    calls = _count_forwards(model)
    clips, _ = _batches(1)[0]
    with torch.no_grad():
        model(clips)
    model.eval()(clips).sum().backward()  # eval mode with gradients (e.g. attention maps)
    assert calls["TSMBasicBlock"] == 2 * 8 and calls["RNLBlock"] == calls["NLBlock"] == 2


def test_config_key_builds_the_checkpointed_model_and_rejects_unknown_modes():
    demo = ["+experiment=demo", "data.num_segments=4"]
    model = build_model_from_config([*demo, "model.activation_checkpointing=all"])
    assert model.activation_checkpointing == "all"
    assert build_model_from_config(demo).activation_checkpointing == "none"
    with pytest.raises(Exception, match=r"activation_checkpointing='some'.*'none', 'nonlocal'"):
        build_model_from_config([*demo, "model.activation_checkpointing=some"])
    with pytest.raises(ValueError, match=r"activation_checkpointing='every'"):
        model.activation_checkpointing = "every"


def test_32_frame_experiment_is_the_16_frame_recipe_with_checkpointing():
    model = build_model_from_config(["+experiment=rnl_sthv1_32f", "model.weights=null"])
    assert model.num_segments == 32 and model.activation_checkpointing == "all"
    assert set(model.nonlocal_blocks) == {
        "layer2_0",
        "layer2_2",
        "layer3_0",
        "layer3_2",
        "layer3_4",
    }


def test_training_run_with_checkpointing_matches_the_plain_run(tiny_dataset: Path, tmp_path):
    common = ("model.dropout=0", "train.eval_every_epochs=0", "train.total_batch_size=8")
    plain = train_in_process(tiny_dataset, tmp_path / "plain", *common)
    checked = train_in_process(
        tiny_dataset, tmp_path / "checked", *common, "model.activation_checkpointing=all"
    )
    assert plain.progress.global_step == checked.progress.global_step == 3
    expected = plain.bare_model.state_dict()
    for key, value in checked.bare_model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)


def _ddp_worker(rank: int, world_size: int, port: int, mode: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        unchecked = _model()
        checked = copy.deepcopy(unchecked)
        checked.activation_checkpointing = mode
        batches = [
            (clips[rank::world_size], labels[rank::world_size])
            for clips, labels in _batches(2, clips=2 * world_size)
        ]
        for model in (unchecked, checked):
            ddp = DistributedDataParallel(model)
            with ddp.no_sync():  # accumulation: the first backward pass does not all-reduce
                _train_steps(ddp, batches[:1])
            _train_steps(ddp, batches[1:])
        _assert_same_state(checked, unchecked)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", MODES)
def test_ddp_with_accumulation_matches_the_unchecked_model(mode):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, mode), nprocs=2, join=True)
