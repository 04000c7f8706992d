"""Parameter groups, tensor by tensor, against the RNL release's and TSM's tables.

The expected tables below are written from the releases' rules, not from the implementation:
an ordered list of (parameter-name pattern, lr multiplier, weight decay on?) rows, the first
matching row wins, and every trainable tensor of the model must match one.
"""

import json
import re
from collections import Counter

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from rnlvideo.config import build_model, compose_config
from rnlvideo.engine.optim import create_scheduler, create_sgd
from rnlvideo.engine.param_groups import (
    describe_groups,
    format_groups,
    parameter_groups,
    write_groups,
)

BATCHNORM = r"(backbone\.bn1|.*\.(bn[123]|downsample\.1|W\.1))\.(weight|bias)"
CLASSIFIER = [(r"head\.fc\.weight", 5, True), (r"head\.fc\.bias", 10, False)]

# The release: RNL blocks follow the `nl` rule (first parameter of a layer x1 with decay, second
# x2 without: the region kernel sits behind the release's mask, so it is a "second"); the rest
# follows TSM's rule.
RNL = r"nonlocal_blocks\.(layer2_0\.1|layer2_2\.0|layer3_[024]\.0)"
RELEASE_TABLE = [
    *CLASSIFIER,
    (RNL + r"\.(theta|W\.0|W\.1)\.weight", 1, True),
    (RNL + r"\.(theta\.bias|W\.0\.bias|W\.1\.bias|aggregation\.weight)", 2, False),
    (BATCHNORM, 1, False),  # backbone, downsample and the channel gate's bn1
    (r".*\.bias", 2, False),  # channel gate W_k / W_v1 / W_v2
    (r".*\.weight", 1, True),  # stem, residual and downsample convs, channel gate layers
]
# TSM: every conv / linear weight x1 with decay, every bias x2 without, every BatchNorm (the
# NL block's W.1 included) x1 without.
TSM_TABLE = [
    *CLASSIFIER,
    (BATCHNORM, 1, False),
    (r".*\.bias", 2, False),
    (r".*\.weight", 1, True),
]


def expected_for(name: str, table) -> tuple[float, bool]:
    for pattern, lr_mult, decayed in table:
        if re.fullmatch(pattern, name):
            return lr_mult, decayed
    raise AssertionError(f"{name}: no row of the table covers it")


def r50_model_and_optimizer(overrides: list[str]):
    cfg = compose_config([*overrides, "model.weights=null"])
    with torch.device("meta"):
        model = build_model(cfg)
    return cfg, model, instantiate(cfg.optim, model=model)


def actual_settings(optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    return {
        name: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for name in group["param_names"]
    }


@pytest.mark.parametrize(
    ("overrides", "policy", "table", "tensors", "per_class"),
    [
        (
            ["+experiment=rnl_sthv1"],
            "release",
            RELEASE_TABLE,
            204,
            {(1, True): 71, (2, False): 23, (1, False): 108, (5, True): 1, (10, False): 1},
        ),
        (
            ["+experiment=tsm_sthv1"],
            "tsm",
            TSM_TABLE,
            161,
            {(1, True): 53, (1, False): 106, (5, True): 1, (10, False): 1},
        ),
        (
            ["+experiment=nl_sthv1"],
            "tsm",
            TSM_TABLE,
            211,
            {(1, True): 73, (2, False): 20, (1, False): 116, (5, True): 1, (10, False): 1},
        ),
        (
            ["+experiment=rnl_sthv1", "optim.policy=tsm"],
            "tsm",
            TSM_TABLE,
            204,
            {(1, True): 71, (2, False): 13, (1, False): 118, (5, True): 1, (10, False): 1},
        ),
    ],
    ids=["rnl_r50-release", "tsm_r50-tsm", "nl_r50-tsm", "rnl_r50-tsm"],
)
def test_every_trainable_tensor_has_the_tables_lr_and_decay(
    overrides, policy, table, tensors, per_class
):
    cfg, model, optimizer = r50_model_and_optimizer(overrides)
    assert cfg.optim.policy == policy
    lr, weight_decay = cfg.optim.lr, cfg.optim.weight_decay
    actual = actual_settings(optimizer)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert sorted(actual) == sorted(trainable) and len(trainable) == tensors
    classes = Counter()
    for name in trainable:
        lr_mult, decayed = expected_for(name, table)
        classes[lr_mult, decayed] += 1
        expected = (lr * lr_mult, weight_decay if decayed else 0.0)
        assert actual[name] == pytest.approx(expected), name
    assert classes == per_class


def test_release_groups_are_named_and_the_region_kernel_is_in_nl_bias():
    _, _, optimizer = r50_model_and_optimizer(["+experiment=rnl_sthv1"])
    rows = {row["name"]: row for row in describe_groups(optimizer)}
    assert list(rows) == ["weight", "bias", "bn", "nl_weight", "nl_bias", "fc_weight", "fc_bias"]
    assert rows["nl_bias"]["tensors"] == 20 and rows["nl_weight"]["tensors"] == 15
    assert "nonlocal_blocks.layer2_0.1.aggregation.weight" in rows["nl_bias"]["param_names"]
    # Region kernels: 256 channels x 3x7x7 (two res3 blocks), 512 x 3x3x3 (three res4 blocks).
    kernels = 2 * 256 * 147 + 3 * 512 * 27
    biases = 2 * (256 + 512 + 512) + 3 * (512 + 1024 + 1024)
    assert rows["nl_bias"]["elements"] == kernels + biases
    assert rows["fc_bias"]["lr"] == pytest.approx(0.2) and rows["fc_bias"]["weight_decay"] == 0
    table = format_groups(describe_groups(optimizer))
    assert table.splitlines()[-1].split()[:2] == ["total", "204"]


def test_policies_refuse_what_they_do_not_cover():
    with pytest.raises(ValueError, match="optim.policy='lars'"):
        parameter_groups(nn.Linear(2, 2), 0.1, 1e-4, policy="lars")
    with pytest.raises(ValueError, match="no_weight_decay_norm_bias=true only applies"):
        parameter_groups(
            nn.Linear(2, 2), 0.1, 1e-4, policy="release", no_weight_decay_norm_bias=True
        )
    with_layer_norm = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    with pytest.raises(ValueError, match=r"parameter 1\.weight of a LayerNorm.*policy=simple"):
        parameter_groups(with_layer_norm, 0.1, 1e-4, policy="tsm")
    simple = parameter_groups(with_layer_norm, 0.1, 1e-4, "simple", no_weight_decay_norm_bias=True)
    assert {g["name"]: len(g["params"]) for g in simple} == {"decay": 1, "no_decay": 3}


def test_frozen_tensors_belong_to_no_group():
    cfg = compose_config(["+experiment=rnl_sthv1", "model.weights=null", "model.partial_bn=true"])
    with torch.device("meta"):
        model = build_model(cfg)
    names = {n for g in parameter_groups(model, 0.02, 1e-3, "release") for n, _ in g["params"]}
    assert "backbone.bn1.weight" in names and "backbone.layer1.0.bn1.weight" not in names


def test_schedule_rescales_every_group_by_its_own_multiplier():
    _, model, _ = r50_model_and_optimizer(["+experiment=rnl_sthv1"])
    optimizer = create_sgd(model, lr=0.02, policy="release")
    scheduler = create_scheduler(optimizer, steps_per_epoch=4, epochs=3, warmup_epochs=1)
    for step in range(7):
        factor = scheduler.lr_lambdas[0](step)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(0.02 * group["lr_mult"] * factor), group["name"]
        optimizer.step()
        scheduler.step()


def test_groups_are_recorded_as_json(tmp_path):
    optimizer = create_sgd(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), policy="tsm")
    write_groups(tmp_path / "param_groups.json", describe_groups(optimizer), "tsm")
    written = json.loads((tmp_path / "param_groups.json").read_text())
    assert written["policy"] == "tsm"
    assert [(g["name"], g["tensors"], g["elements"]) for g in written["groups"]] == [
        ("weight", 1, 108),
        ("bias", 1, 4),
        ("bn", 2, 8),
    ]
    assert written["groups"][1]["lr"] == pytest.approx(0.04)
    assert written["groups"][1]["param_names"] == ["0.bias"]
