import pytest
import torch
import torchvision
from torch import nn

from rnlvideo.models import (
    ChannelGate,
    NLBlock,
    RNLBlock,
    TemporalShift,
    TSMResNet,
    create_tsm_resnet,
    temporal_shift,
)
from rnlvideo.models.nonlocal_blocks import RegionAggregation
from rnlvideo.models.tsm_resnet import TSMBasicBlock, TSMBottleneck, conv_on_map


def _torchvision_backbone_state(depth: int) -> dict[str, torch.Tensor]:
    model = getattr(torchvision.models, f"resnet{depth}")()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


GOOD = {"stage": "layer2", "block": 0, "kind": "rnl"}


def _tiny_model(**kwargs) -> TSMResNet:
    options = {"depth": 18, "num_classes": 5, "num_segments": 2}
    return create_tsm_resnet(**{**options, **kwargs})


# ---------------------------------------------------------------- temporal shift in the blocks


def _basic_block(place: str) -> TSMBasicBlock:
    block = TSMBasicBlock(8, 8)
    block.set_temporal_shift(num_segments=2, shift_div=4, shift_place=place)
    return block.eval()


def test_blockres_shift_leaves_identity_path_unshifted():
    block = _basic_block("blockres")
    nn.init.zeros_(block.bn2.weight)  # residual branch outputs zero
    nn.init.zeros_(block.bn2.bias)
    x = torch.randn(4, 8, 3, 3)
    assert torch.equal(block(x), torch.relu(x))


def test_block_shift_shifts_both_paths():
    block = _basic_block("block")
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    x = torch.randn(4, 8, 3, 3)
    assert torch.equal(block(x), torch.relu(temporal_shift(x, 2, 4)))


def test_blockres_shift_feeds_conv1_with_shifted_input():
    block = _basic_block("blockres")
    x = torch.randn(4, 8, 3, 3)
    shifted = temporal_shift(x, 2, 4)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(shifted)))))
    torch.testing.assert_close(block(x), torch.relu(branch + x))


def test_unshifted_bottleneck_equals_torchvision():
    downsample = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    ours = TSMBottleneck(16, 8, stride=2, downsample=downsample).eval()
    theirs = torchvision.models.resnet.Bottleneck(16, 8, stride=2, downsample=downsample).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 16, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("place", ["blockres", "block"])
def test_every_residual_block_shifts(place):
    model = _tiny_model(shift_place=place, shift_div=4)
    blocks = [b for stage in ("layer1", "layer4") for b in getattr(model.backbone, stage)]
    assert all(isinstance(b.temporal_shift, TemporalShift) for b in blocks)
    assert all(b.shift_place == place and b.temporal_shift.shift_div == 4 for b in blocks)


def test_resnet101_shifts_every_other_block_as_tsm():
    # TSM: when the third stage has >= 23 blocks, blockres shifts blocks 0, 2, 4... of every stage.
    with torch.device("meta"):
        model = create_tsm_resnet(depth=101, num_segments=2)
    for stage, blocks in zip(("layer1", "layer2", "layer3", "layer4"), (3, 4, 23, 3), strict=True):
        places = [b.shift_place for b in getattr(model.backbone, stage)]
        assert places == ["blockres" if i % 2 == 0 else "none" for i in range(blocks)], stage
        shifts = [
            isinstance(b.temporal_shift, TemporalShift) for b in getattr(model.backbone, stage)
        ]
        assert shifts == [i % 2 == 0 for i in range(blocks)], stage
    with torch.device("meta"):
        block_shift = create_tsm_resnet(depth=101, num_segments=2, shift_place="block")
    assert all(b.shift_place == "block" for b in block_shift.backbone.layer3)


def test_no_shift_model_is_a_per_frame_torchvision_resnet():
    model = _tiny_model(shift_place="none").eval()
    resnet = torchvision.models.resnet18().eval()
    resnet.fc = nn.Identity()
    resnet.load_state_dict(model.backbone.state_dict())
    x = torch.randn(2, 3, 2, 32, 32)
    frames = x.transpose(1, 2).reshape(4, 3, 32, 32)
    expected = resnet(frames).view(2, 2, -1)
    torch.testing.assert_close(model.forward_features(x), expected)


# ---------------------------------------------------------------- torchvision weights


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_strictly_into_backbone(depth):
    model = create_tsm_resnet(depth=depth, num_segments=2)
    state = _torchvision_backbone_state(depth)
    assert set(model.backbone.state_dict()) == set(state)
    result = model.backbone.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert not any(".net." in key for key in model.state_dict())


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_weights_from_local_file(tmp_path, wrapper):
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()  # with fc, which must be dropped
    path = tmp_path / "resnet18.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)

    model = _tiny_model(weights=str(path))

    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_with_missing_keys_fail_with_key_list(tmp_path):
    state = _torchvision_backbone_state(18)
    del state["layer3.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer3\.1\.conv2\.weight") as error:
        _tiny_model(weights=str(path))
    assert "extra.weight" in str(error.value) and "resnet18" in str(error.value)


def test_weights_neither_file_nor_torchvision_name():
    with pytest.raises(ValueError, match="no such file"):
        _tiny_model(weights="/nonexistent/resnet18.pth")


# ---------------------------------------------------------------- non-local placement


def test_nonlocal_blocks_are_built_in_order():
    model = _tiny_model(
        nonlocal_blocks=[
            {"stage": "layer2", "block": 0, "kind": "cg+rnl", "kernel_size": [3, 7, 7]},
            {"stage": "layer3", "block": 1, "kind": "rnl", "kernel_size": [1, 3, 5]},
            {"stage": "layer1", "block": 1, "kind": "nl", "sub_sample": False},
            {"stage": "layer4", "block": 0, "kind": "cg"},
        ]
    )
    blocks = model.nonlocal_blocks
    assert set(blocks) == {"layer2_0", "layer3_1", "layer1_1", "layer4_0"}
    assert [type(b) for b in blocks["layer2_0"]] == [ChannelGate, RNLBlock]
    assert blocks["layer2_0"][1].aggregation.weight.shape == (64, 1, 3, 7, 7)
    assert blocks["layer3_1"][0].aggregation.kernel_size == (1, 3, 5)
    assert isinstance(blocks["layer3_1"][0].pool, nn.Identity)
    nl = blocks["layer1_1"][0]
    assert isinstance(nl, NLBlock) and isinstance(nl.pool, nn.Identity)
    assert nl.theta.in_channels == 64 and nl.theta.out_channels == 32
    assert blocks["layer4_0"][0].W_k.in_channels == 512
    assert "nonlocal_blocks.layer2_0.1.aggregation.weight" in model.state_dict()


OFFICIAL_RNL_PLACEMENT = [
    {"stage": "layer2", "block": 0, "kind": "cg+rnl", "kernel_size": [3, 7, 7]},
    {"stage": "layer2", "block": 2, "kind": "rnl", "kernel_size": [3, 7, 7]},
    {"stage": "layer3", "block": 0, "kind": "rnl", "kernel_size": [3, 3, 3]},
    {"stage": "layer3", "block": 2, "kind": "rnl", "kernel_size": [3, 3, 3]},
    {"stage": "layer3", "block": 4, "kind": "rnl", "kernel_size": [3, 3, 3]},
]


def test_official_rnl_resnet50_has_the_release_parameter_count():
    model = create_tsm_resnet(depth=50, num_classes=174, nonlocal_blocks=OFFICIAL_RNL_PLACEMENT)
    params = sum(p.numel() for p in model.parameters())
    # The release stores the aggregation as a masked grouped weight: add its masked-out zeros.
    masked_zeros = sum(
        m.weight.numel() * (m.channels // m.groups - 1)
        for m in model.modules()
        if isinstance(m, RegionAggregation)
    )
    assert params + masked_zeros == 31_548_399  # counted on the release's own model
    plain = create_tsm_resnet(depth=50, num_classes=174)
    assert sum(p.numel() for p in plain.parameters()) == 23_864_558  # TSM-R50


def test_blocks_at_initialisation_leave_the_model_unchanged():
    torch.manual_seed(0)
    with_blocks = _tiny_model(nonlocal_blocks=[GOOD, {**GOOD, "stage": "layer3", "kind": "nl"}])
    without = _tiny_model()
    without.load_state_dict(with_blocks.state_dict(), strict=False)
    x = torch.randn(2, 3, 2, 32, 32)
    torch.testing.assert_close(with_blocks.eval()(x), without.eval()(x))


def test_nonlocal_config_accepts_omegaconf():
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create(
        [{"stage": "layer2", "block": 1, "kind": "rnl", "kernel_size": [3, 3, 3], "ratio": 4}]
    )
    block = _tiny_model(nonlocal_blocks=config).nonlocal_blocks["layer2_1"][0]
    assert block.aggregation.kernel_size == (3, 3, 3) and block.theta.out_channels == 32


def test_nonlocal_block_runs_on_the_residual_block_output():
    torch.manual_seed(0)
    model = _tiny_model(nonlocal_blocks=[{"stage": "layer2", "block": 0, "kind": "nl"}]).eval()
    nl = model.nonlocal_blocks["layer2_0"][0]
    nn.init.normal_(nl.W[1].weight)  # make the block non-trivial
    seen = {}
    model.backbone.layer2[0].register_forward_hook(lambda m, i, o: seen.update(block_out=o))
    nl.register_forward_hook(lambda m, i, o: seen.update(nl_in=i[0], nl_out=o))
    model.backbone.layer2[1].register_forward_pre_hook(lambda m, i: seen.update(next_in=i[0]))

    model(torch.randn(2, 3, 2, 32, 32))

    clips = seen["block_out"].view(2, 2, *seen["block_out"].shape[1:]).transpose(1, 2)
    torch.testing.assert_close(seen["nl_in"], clips)
    assert not torch.allclose(seen["nl_out"], seen["nl_in"])
    frames = seen["nl_out"].transpose(1, 2).reshape(seen["block_out"].shape)
    torch.testing.assert_close(seen["next_in"], frames)


BAD_PLACEMENTS = [
    ([{**GOOD, "stage": "layer5"}], ["nonlocal_blocks[0].stage='layer5'", "'layer1', 'layer2'"]),
    (
        [GOOD, {**GOOD, "block": 2}],
        ["nonlocal_blocks[1].block=2: layer2 of resnet18 has blocks 0..1"],
    ),
    ([{**GOOD, "block": -1}], ["nonlocal_blocks[0].block=-1", "blocks 0..1"]),
    ([{**GOOD, "block": "0"}], ["nonlocal_blocks[0].block='0'"]),
    ([{**GOOD, "kind": "se"}], ["nonlocal_blocks[0].kind='se'", "'rnl', 'nl', 'cg', 'cg+rnl'"]),
    ([{**GOOD, "kernel": [3, 3, 3]}], ["nonlocal_blocks[0].kernel: unknown key", "kernel_size"]),
    (
        [GOOD, {**GOOD, "kind": "nl"}],
        ["nonlocal_blocks[1]: duplicate placement layer2 block 0", "nonlocal_blocks[0]"],
    ),
    ([{**GOOD, "kernel_size": [3, 6, 7]}], ["nonlocal_blocks[0].kernel_size=[3, 6, 7]", "odd"]),
    ([{**GOOD, "kernel_size": [3, 7]}], ["nonlocal_blocks[0].kernel_size=[3, 7]", "[kt, kh, kw]"]),
    (
        [{**GOOD, "kind": "nl", "kernel_size": [3, 3, 3]}],
        ["nonlocal_blocks[0].kernel_size: not used by kind 'nl'", "'ratio', 'sub_sample'"],
    ),
    ([{**GOOD, "kind": "cg", "ratio": 2}], ["nonlocal_blocks[0].ratio: not used by kind 'cg'"]),
    ([{**GOOD, "ratio": 3}], ["nonlocal_blocks[0].ratio=3", "128 channels of layer2"]),
    ([{**GOOD, "sub_sample": "yes"}], ["nonlocal_blocks[0].sub_sample='yes'"]),
    ([{"stage": "layer2", "block": 0}], ["nonlocal_blocks[0]: missing key 'kind'"]),
    ([GOOD, "layer2.0"], ["nonlocal_blocks[1]='layer2.0': expected a mapping"]),
]


@pytest.mark.parametrize(("entries", "fragments"), BAD_PLACEMENTS)
def test_bad_placements_fail_with_clear_messages(entries, fragments):
    with pytest.raises(ValueError) as error:
        _tiny_model(nonlocal_blocks=entries)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"depth": 152}, "depth=152"),
        ({"shift_place": "inplace"}, "shift_place='inplace'"),
        ({"num_segments": 0}, "num_segments=0"),
    ],
)
def test_bad_builder_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        _tiny_model(**kwargs)


# ---------------------------------------------------------------- model interface


def test_forward_backward_with_rnl_and_nl_blocks():
    torch.manual_seed(0)
    model = _tiny_model(
        nonlocal_blocks=[
            {"stage": "layer2", "block": 0, "kind": "cg+rnl", "kernel_size": [3, 5, 5]},
            {"stage": "layer3", "block": 0, "kind": "nl"},
        ]
    )
    x = torch.randn(2, 3, 2, 32, 32, requires_grad=True)

    features = model.forward_features(x)
    logits = model.forward_head(features)
    logits.sum().backward()

    assert features.shape == (2, 2, 512) and model.num_features == 512
    assert logits.shape == (2, 5) and model.num_classes == 5 and model.num_segments == 2
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_forward_is_head_of_features_and_head_averages_frames():
    model = _tiny_model(dropout=0.3).eval()
    assert model.head.dropout.p == 0.3
    assert float(model.head.fc.weight.detach().std()) < 0.01 and not model.head.fc.bias.any()
    x = torch.randn(1, 3, 2, 32, 32)
    features = model.forward_features(x)
    torch.testing.assert_close(model(x), model.head.fc(features).mean(dim=1))


def test_wrong_number_of_frames_names_both():
    model = _tiny_model(num_segments=4)
    with pytest.raises(ValueError, match=r"T = 3 frames.*num_segments = 4"):
        model(torch.randn(1, 3, 3, 32, 32))


def test_partial_bn_freezes_all_backbone_batchnorms_but_the_first():
    model = _tiny_model(partial_bn=True, nonlocal_blocks=[GOOD]).train()
    frozen = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)][1:]
    assert model.backbone.bn1.training and model.backbone.bn1.weight.requires_grad
    assert all(not bn.training and not bn.weight.requires_grad for bn in frozen)
    assert model.nonlocal_blocks["layer2_0"][0].W[1].training
    assert not model.eval().backbone.bn1.training
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model).train()
    assert synced.backbone.bn1.training and not synced.backbone.layer1[0].bn1.training


def test_batchnorms_train_normally_without_partial_bn():
    model = _tiny_model().train()
    batchnorms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.training and bn.weight.requires_grad for bn in batchnorms)


@pytest.mark.parametrize(
    ("kernel", "stride", "size"),
    [(3, 1, 1), (3, 2, 1), ((1, 3), 1, 1), (3, 1, 2), (3, 2, 2), (5, 2, 3), (7, 3, 2), (1, 1, 1)],
)
def test_conv_on_a_1x1_map_gives_the_convolution_and_its_gradients(kernel, stride, size):
    torch.manual_seed(0)
    padding = (kernel // 2) if isinstance(kernel, int) else tuple(k // 2 for k in kernel)
    conv = nn.Conv2d(16, 8, kernel, stride, padding, bias=True)
    x = torch.randn(4, 16, size, size, requires_grad=True)
    out = conv_on_map(conv, x)
    expected = conv(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias))
    plain = torch.autograd.grad(expected.square().sum(), (x, conv.weight, conv.bias))
    for got, want in zip(grads, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
