"""Official TSM / RNL checkpoints: key mapping, logits after conversion, refusals.

The "official" models here are written from the releases' structure: a TSN wrapper around a
torchvision ResNet whose residual blocks wrap ``conv1`` in a shift module (``conv1.net``; with 23
or more blocks in layer3, as ResNet-101, only every other block of each stage, TSM's rule),
non-local wrappers (``block`` + ``cg`` + ``nl``) around whole residual blocks, the masked grouped
``penta`` RNL block (``ReferenceRNLBlock``, no ``penta`` for a 1x1x1 kernel), TSM's NL block with
``Sequential(conv, pool)`` for ``g`` / ``phi``, and ``new_fc``.
"""

import argparse

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

import rnlvideo
from rnlvideo.config import build_model, compose_config
from rnlvideo.models import RNLBlock, create_tsm_resnet
from rnlvideo.models.official import OfficialCheckpointError, convert_official_state_dict
from rnlvideo.models.reference import ReferenceRNLBlock
from tools import convert_official

SEGMENTS = 4


class OfficialShift(nn.Module):
    """TSM's shift wrapper: shift 1/8 of the channels each way in time, then ``net``."""

    def __init__(self, net: nn.Module, n_segment: int) -> None:
        super().__init__()
        self.net, self.n_segment = net, n_segment

    def forward(self, x: Tensor) -> Tensor:
        nt, c, h, w = x.shape
        x = x.view(nt // self.n_segment, self.n_segment, c, h, w)
        fold = c // 8
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return self.net(out.view(nt, c, h, w))


class OfficialChannelGate(nn.Module):
    """The release's "cg": softmax-pooled context, Linear-BN-ReLU-Linear, added everywhere."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.W_k = nn.Conv3d(channels, 1, kernel_size=1)
        self.W_v1 = nn.Linear(channels, channels // 2)
        self.bn1 = nn.BatchNorm1d(channels // 2, eps=1e-5, momentum=0.01)
        self.W_v2 = nn.Linear(channels // 2, channels)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        attention = torch.softmax(self.W_k(x).view(n, -1), dim=1)
        context = torch.einsum("ncl,nl->nc", x.reshape(n, c, -1), attention)
        return x + self.W_v2(F.relu(self.bn1(self.W_v1(context))))[:, :, None, None, None]


class OfficialNonLocal(nn.Module):
    """TSM's embedded-Gaussian NL block; with sub_sample, g and phi are Sequential(conv, pool)."""

    def __init__(self, channels: int, sub_sample: bool = True) -> None:
        super().__init__()
        self.inter = channels // 2
        self.g = nn.Conv3d(channels, self.inter, kernel_size=1)
        self.theta = nn.Conv3d(channels, self.inter, kernel_size=1)
        self.phi = nn.Conv3d(channels, self.inter, kernel_size=1)
        self.W = nn.Sequential(nn.Conv3d(self.inter, channels, 1), nn.BatchNorm3d(channels))
        if sub_sample:
            self.g = nn.Sequential(self.g, nn.MaxPool3d((1, 2, 2)))
            self.phi = nn.Sequential(self.phi, nn.MaxPool3d((1, 2, 2)))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        g_x = self.g(x).view(n, self.inter, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter, -1).permute(0, 2, 1)
        f = torch.softmax(theta_x @ self.phi(x).view(n, self.inter, -1), dim=-1)
        y = (f @ g_x).permute(0, 2, 1).reshape(n, self.inter, *x.shape[2:])
        return x + self.W(y)


class OfficialNonLocalWrapper(nn.Module):
    """The release's wrapper: residual ``block``, then ``cg`` and ``nl`` on (N, C, T, H, W)."""

    def __init__(self, block: nn.Module, nl: nn.Module, cg: nn.Module | None) -> None:
        super().__init__()
        self.block, self.nl = block, nl
        if cg is not None:
            self.cg = cg

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(x)
        nt, c, h, w = x.shape
        clips = x.view(nt // SEGMENTS, SEGMENTS, c, h, w).transpose(1, 2)
        if hasattr(self, "cg"):
            clips = self.cg(clips)
        return self.nl(clips).transpose(1, 2).reshape(nt, c, h, w)


class OfficialTSN(nn.Module):
    """TSN(base_model = blockres TSM ResNet with non-local wrappers, new_fc), avg consensus."""

    def __init__(self, depth: int, num_classes: int, placements: dict) -> None:
        super().__init__()
        self.base_model = getattr(torchvision.models, f"resnet{depth}")()
        every = 2 if len(self.base_model.layer3) >= 23 else 1
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            layer = getattr(self.base_model, stage)
            for index, block in enumerate(layer):
                if index % every == 0:
                    block.conv1 = OfficialShift(block.conv1, SEGMENTS)
                kind = placements.get((stage, index))
                if kind is not None:
                    channels = block.bn3.num_features if depth >= 50 else block.bn2.num_features
                    nl, cg = kind(channels)
                    layer[index] = OfficialNonLocalWrapper(block, nl, cg)
        features = self.base_model.fc.in_features
        self.base_model.fc = nn.Dropout(0.5)
        self.new_fc = nn.Linear(features, num_classes)

    def forward(self, clips: Tensor) -> Tensor:
        n, _, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(n * t, 3, h, w)
        return self.new_fc(self.base_model(frames)).view(n, t, -1).mean(dim=1)


# Placements of the official model: channels -> (its ``nl`` block, its ``cg`` block or None).
def rnl(kernel):
    return lambda c: (ReferenceRNLBlock(c, kernel), None)


def cg_rnl(kernel):
    return lambda c: (ReferenceRNLBlock(c, kernel), OfficialChannelGate(c))


def nl(sub_sample):
    return lambda c: (OfficialNonLocal(c, sub_sample), None)


R18_RNL = {("layer2", 0): cg_rnl((3, 7, 7)), ("layer3", 0): rnl((3, 3, 3))}
R18_NL = {("layer2", 0): nl(True), ("layer3", 0): nl(True)}
R50_RNL = {
    ("layer2", 0): cg_rnl((3, 7, 7)),
    ("layer2", 2): rnl((3, 7, 7)),
    **{("layer3", i): rnl((3, 3, 3)) for i in (0, 2, 4)},
}


def randomised(model: nn.Module) -> nn.Module:
    """Random weights (variance-preserving scale) and BN statistics, no zero-initialised paths.

    The masked-out entries of ``penta.weight`` become non-zero too, as in the release.
    """
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("num_batches_tracked", "penta.mask")):
                continue
            if tensor.ndim > 1:  # conv / linear weights
                tensor.normal_(0.0, tensor[0].numel() ** -0.5)
            elif name.endswith(("running_var", "weight")):  # BN scale and variance
                tensor.uniform_(0.5, 1.0)
            else:  # biases and running means
                tensor.normal_(0.0, 0.1)
    return model.eval()


def official_state(model: nn.Module) -> dict[str, Tensor]:
    """As saved from DataParallel."""
    return {f"module.{key}": value for key, value in model.state_dict().items()}


def demo_overrides(placement: str) -> list[str]:
    return ["+experiment=demo", f"placement={placement}", f"data.num_segments={SEGMENTS}"]


def our_model(overrides: list[str]) -> nn.Module:
    return build_model(compose_config(overrides), load_weights=False)


@pytest.mark.parametrize(
    ("placement", "layout", "form"),
    [("rnl_r18", R18_RNL, "depthwise"), ("rnl_r18", R18_RNL, "auto"), ("nl_r18", R18_NL, None)],
)
def test_converted_model_gives_the_official_logits(placement, layout, form):
    official = randomised(OfficialTSN(18, 12, layout))
    ours = our_model(demo_overrides(placement)).eval()
    ours.load_state_dict(convert_official_state_dict(official_state(official), ours))
    for module in ours.modules():
        if isinstance(module, RNLBlock):
            module.aggregation.form = form
    clips = torch.randn(2, 3, SEGMENTS, 64, 64)
    with torch.no_grad():
        expected, actual = official(clips), ours(clips)
    assert expected.abs().max() > 0.1  # the comparison is not between near-zero logits
    assert (actual - expected).abs().max() <= 1e-4


def test_converted_r101_gives_the_official_logits():
    official = randomised(OfficialTSN(101, 174, R50_RNL))
    state = official_state(official)
    assert "module.base_model.layer3.22.conv1.net.weight" in state
    assert "module.base_model.layer3.21.conv1.weight" in state  # unshifted
    assert "module.base_model.layer1.1.conv1.weight" in state
    ours = our_model(["+experiment=rnl_sthv1", "model=tsm_r101", f"data.num_segments={SEGMENTS}"])
    ours.load_state_dict(convert_official_state_dict(state, ours.eval()))
    clips = torch.randn(2, 3, SEGMENTS, 64, 64)
    with torch.no_grad():
        expected, actual = official(clips), ours(clips)
    assert expected.abs().max() > 0.1
    assert (actual - expected).abs().max() <= 1e-4


def test_refuses_a_checkpoint_that_shifts_other_blocks():
    tsm_state = official_state(OfficialTSN(18, 12, {}))
    tsn_state = {key.replace("conv1.net.", "conv1."): v for key, v in tsm_state.items()}
    with pytest.raises(OfficialCheckpointError, match="layer1.0: checkpoint none, model blockres"):
        convert_official_state_dict(tsn_state, our_model(demo_overrides("none")))
    tsn_model = our_model([*demo_overrides("none"), "model.shift_place=none"])
    tsn_model.load_state_dict(convert_official_state_dict(tsn_state, tsn_model))
    with pytest.raises(OfficialCheckpointError, match="layer4.1: checkpoint blockres, model none"):
        convert_official_state_dict(tsm_state, tsn_model)


def test_converted_1x1x1_rnl_has_no_aggregation_and_gives_the_official_logits():
    layout = {("layer2", 0): cg_rnl((1, 1, 1)), ("layer3", 0): rnl((1, 1, 1))}
    official = randomised(OfficialTSN(18, 12, layout))
    assert not any(".penta." in key for key in official.state_dict())
    kernels = ["placement.res3_kernel=[1,1,1]", "placement.res4_kernel=[1,1,1]"]
    ours = our_model([*demo_overrides("rnl_r18"), *kernels]).eval()
    assert not any("aggregation" in key for key in ours.state_dict())
    ours.load_state_dict(convert_official_state_dict(official_state(official), ours))
    clips = torch.randn(2, 3, SEGMENTS, 64, 64)
    with torch.no_grad():
        expected, actual = official(clips), ours(clips)
    assert expected.abs().max() > 0.1
    assert (actual - expected).abs().max() <= 1e-4


def test_r50_official_rnl_layout_maps_onto_the_rnl_sthv1_model():
    state = official_state(OfficialTSN(50, 174, R50_RNL))
    assert "module.base_model.layer2.0.block.conv1.net.weight" in state
    assert "module.base_model.layer2.0.cg.W_v2.weight" in state
    assert state["module.base_model.layer2.2.nl.penta.weight"].shape == (256, 32, 3, 7, 7)
    ours = our_model(["+experiment=rnl_sthv1"])
    converted = convert_official_state_dict(state, ours)
    assert converted.keys() == ours.state_dict().keys()
    assert converted["nonlocal_blocks.layer2_0.1.aggregation.weight"].shape == (256, 1, 3, 7, 7)
    assert converted["nonlocal_blocks.layer3_4.0.aggregation.weight"].shape == (512, 1, 3, 3, 3)


def test_aggregation_weight_is_the_masked_diagonal():
    official = randomised(OfficialTSN(18, 12, R18_RNL))
    ours = our_model(demo_overrides("rnl_r18"))
    converted = convert_official_state_dict(official_state(official), ours)
    penta = official.base_model.layer3[0].nl.penta.weight  # (128, 32, 3, 3, 3), 4 groups
    rows = torch.arange(128)
    expected = penta[rows, rows % 32].unsqueeze(1)
    assert torch.equal(converted["nonlocal_blocks.layer3_0.0.aggregation.weight"], expected)


def test_refuses_a_bad_mask():
    official = OfficialTSN(18, 12, R18_RNL)
    state = official_state(official)
    state["module.base_model.layer3.0.nl.penta.mask"][0, 1] = 1.0
    with pytest.raises(OfficialCheckpointError, match="layer3.0.nl.penta.weight: penta.mask"):
        convert_official_state_dict(state, our_model(demo_overrides("rnl_r18")))


def test_refusal_lists_unmatched_keys_both_ways():
    rnl_state = official_state(OfficialTSN(18, 12, R18_RNL))
    video_keys = [k for k in rnl_state if ".nl." in k or ".cg." in k]
    with pytest.raises(OfficialCheckpointError) as error:
        convert_official_state_dict(rnl_state, our_model(demo_overrides("none")))
    message = str(error.value)
    assert f"no place in the model ({len(video_keys)})" in message
    assert all(f"'{key.removeprefix('module.')}'" in message for key in video_keys)
    assert "missing from the checkpoint (0)" in message

    tsm_state = official_state(OfficialTSN(18, 12, {}))
    rnl_model = our_model(demo_overrides("rnl_r18"))
    with pytest.raises(OfficialCheckpointError) as error:
        convert_official_state_dict(tsm_state, rnl_model)
    message = str(error.value)
    # Missing BN step counters are filled with 0; every other block key is listed.
    expected = [
        k
        for k in rnl_model.state_dict()
        if k.startswith("nonlocal_blocks.") and not k.endswith("num_batches_tracked")
    ]
    assert f"missing from the checkpoint ({len(expected)})" in message
    assert all(f"'{key}'" in message for key in expected)
    assert "no place in the model (0)" in message


def test_refuses_nl_pooling_that_differs_from_the_config():
    state = official_state(OfficialTSN(18, 12, {("layer2", 0): nl(False)}))
    assert "module.base_model.layer2.0.nl.g.weight" in state
    block = {"stage": "layer2", "block": 0, "kind": "nl"}
    pooled = create_tsm_resnet(18, 12, SEGMENTS, nonlocal_blocks=[block])
    with pytest.raises(OfficialCheckpointError, match="sub_sample=True"):
        convert_official_state_dict(state, pooled)
    plain = create_tsm_resnet(18, 12, SEGMENTS, nonlocal_blocks=[{**block, "sub_sample": False}])
    plain.load_state_dict(convert_official_state_dict(state, plain))


def test_cli_writes_a_checkpoint_of_ours(tmp_path):
    official = randomised(OfficialTSN(18, 12, R18_RNL))
    source, destination = tmp_path / "rnl_r18.pth.tar", tmp_path / "ours.pt"
    wrapped = {"epoch": 45, "arch": "resnet18", "best_prec1": 49.5}
    torch.save({**wrapped, "state_dict": official_state(official)}, source)
    overrides = demo_overrides("rnl_r18")
    convert_official.main([str(source), str(destination), *overrides])

    stored = torch.load(destination, weights_only=True)
    assert stored["config"]["overrides"] == [*overrides, "model.weights=null"]
    assert stored["source"] == {
        "path": str(source),
        "format": "official TSM / RNL release",
        **wrapped,
    }
    model = rnlvideo.load_model(destination)  # from the file alone
    expected = our_model(stored["config"]["overrides"])
    expected.load_state_dict(convert_official_state_dict(official_state(official), expected))
    clip = torch.randn(2, 3, SEGMENTS, 32, 32)
    torch.testing.assert_close(model(clip), expected.eval()(clip))


def test_cli_needs_trust_for_pickled_objects(tmp_path):
    official = OfficialTSN(18, 12, {})
    source, destination = tmp_path / "tsm.pth", tmp_path / "ours.pt"
    state = {"state_dict": official_state(official), "args": argparse.Namespace(lr=0.01)}
    torch.save(state, source)
    overrides = demo_overrides("none")
    with pytest.raises(SystemExit):
        convert_official.main([str(source), str(destination), *overrides])
    assert not destination.exists()
    convert_official.main([str(source), str(destination), *overrides, "--trust-source"])
    assert destination.is_file()
