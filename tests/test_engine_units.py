"""Optimiser groups, LR schedule, samplers, metrics and checkpoint helpers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from rnlvideo.checkpoint_format import load_checkpoint
from rnlvideo.engine import training_state as ckpt
from rnlvideo.engine.metrics import classification_metrics, confusion_matrix, topk_correct
from rnlvideo.engine.optim import create_scheduler, create_sgd
from rnlvideo.engine.samplers import ResumableDistributedSampler, ShardedEvalSampler
from rnlvideo.files import save_atomic


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Module()
        self.head.fc = nn.Linear(4, 2)


def group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict:
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_classifier_lr_multipliers_and_weight_decay_groups() -> None:
    net = TinyNet()
    opt = create_sgd(
        net, lr=0.1, weight_decay=1e-3, policy="simple", no_weight_decay_norm_bias=True
    )
    assert group_of(opt, net.head.fc.weight)["lr"] == pytest.approx(0.5)
    assert group_of(opt, net.head.fc.bias)["lr"] == pytest.approx(1.0)
    assert group_of(opt, net.conv.weight)["weight_decay"] == 1e-3
    assert group_of(opt, net.conv.bias)["weight_decay"] == 0.0
    assert group_of(opt, net.bn.weight)["weight_decay"] == 0.0
    default = create_sgd(TinyNet(), lr=0.1, weight_decay=1e-3, policy="simple")
    assert all(g["weight_decay"] == 1e-3 for g in default.param_groups)


def lrs(policy: str, steps_per_epoch: int, epochs: int, **kw) -> list[float]:
    net = TinyNet()
    opt = create_sgd(net, lr=1.0)
    sched = create_scheduler(opt, steps_per_epoch, epochs, policy=policy, **kw)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(group_of(opt, net.conv.weight)["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine() -> None:
    values = lrs("cosine", 10, 5, warmup_epochs=1, warmup_start_factor=0.1)
    assert values[0] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert values[10] == pytest.approx(1.0)
    assert values[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_step_schedule() -> None:
    values = lrs("step", 2, 6, warmup_epochs=0, milestones=[2, 4], gamma=0.1)
    assert values == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


def test_resumable_sampler_matches_distributed_split_and_resumes() -> None:
    full = list(ResumableDistributedSampler(11, shuffle=True, seed=3))
    ranks = [list(ResumableDistributedSampler(11, r, 2, seed=3)) for r in range(2)]
    assert sorted(full) == list(range(11))
    assert len(ranks[0]) == len(ranks[1]) == 6
    assert set(ranks[0]) | set(ranks[1]) == set(range(11))
    sampler = ResumableDistributedSampler(11, seed=3)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != full
    sampler.set_epoch(1, start=4)
    assert list(sampler) == epoch1[4:]
    assert len(sampler) == 7


def test_sharded_eval_sampler_covers_each_index_once() -> None:
    shards = [list(ShardedEvalSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


def test_metrics() -> None:
    logits = torch.tensor([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    labels = torch.tensor([0, 0, 1])
    assert topk_correct(logits, labels, (1, 5)) == [1, 2]
    cm = confusion_matrix(logits.argmax(1), labels, 6)
    assert cm[0, 0] == 1 and cm[0, 5] == 1 and cm[1, 0] == 1
    m = classification_metrics(logits, labels)
    assert m["top1"] == pytest.approx(100 / 3)
    assert m["top5"] == pytest.approx(200 / 3)
    assert m["mean_class_acc"] == pytest.approx(25.0)  # class 0: 1/2, class 1: 0/1
    assert m["num_videos"] == 3


def test_atomic_save_and_weights_only_load(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_atomic({"a": torch.arange(3), "meta": {"epoch": 2}}, path)
    save_atomic({"a": torch.arange(4), "meta": {"epoch": 3}}, path)
    state = load_checkpoint(path)
    assert state["meta"]["epoch"] == 3 and state["a"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_atomic({"rng": ckpt.capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_prune_keeps_the_newest_epoch_checkpoints_this_run_wrote(tmp_path) -> None:
    for epoch in (1, 2, 3, 7, 10):
        (tmp_path / ckpt.epoch_checkpoint_name(epoch)).write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    written = [ckpt.epoch_checkpoint_name(e) for e in (1, 2, 3, 10)]  # epoch 7: another run's
    kept = ckpt.prune_epoch_checkpoints(tmp_path, written, keep=2)
    assert kept == ["epoch_0003.pt", "epoch_0010.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_0003.pt",
        "epoch_0007.pt",
        "epoch_0010.pt",
        "last.pt",
    ]
