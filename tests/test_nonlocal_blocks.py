import copy

import pytest
import torch
from torch import nn

from rnlvideo.models import ChannelGate, NLBlock, RNLBlock
from rnlvideo.models.reference import ReferenceNLBlock, ReferenceRNLBlock


def _relative_error(actual: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """``||actual - expected|| / max(||expected||, floor)``."""
    return float((actual - expected).norm() / max(float(expected.norm()), floor))


def _activate_output(block: nn.Module) -> nn.Module:
    """Random non-zero output BN so the attention path contributes to the output."""
    bn = block.W[1]
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    return block


def _run(block: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = block(x)
    (out * upstream).sum().backward()
    return out.detach(), x.grad


def _assert_same_param_grads(block: nn.Module, reference: nn.Module, tol: float, skip=()):
    # Some gradients are analytically zero (a conv bias before training-mode BN, the key bias
    # under the softmax's shift invariance): compare those absolutely, via the floor of 1.
    ref_params = dict(reference.named_parameters())
    for name, param in block.named_parameters():
        if name not in skip:
            assert _relative_error(param.grad, ref_params[name].grad, floor=1.0) <= tol, name


RNL_CASES = [
    # in_channels, kernel_size, sub_sample, aggregation, clip (T, H, W)
    (16, (3, 3, 3), False, "depthwise", (3, 5, 6)),
    (16, (1, 5, 3), True, "depthwise", (3, 6, 4)),
    (16, (3, 7, 7), False, "grouped", (2, 5, 5)),  # C' = 8: groups = 1
    (128, (3, 1, 5), True, "grouped", (2, 4, 5)),  # C' = 64: groups = 2
    (128, (5, 3, 3), False, "depthwise", (3, 4, 3)),
    (16, (3, 7, 7), False, "auto", (3, 5, 6)),
    (128, (3, 3, 3), True, "auto", (2, 4, 5)),
]


def _grad_tolerance(reference: nn.Module, x: torch.Tensor, upstream: torch.Tensor, tol: float):
    """``tol``, or twice the reference's own rounding error where that is larger.

    The unscaled softmax makes some fp32 input gradients ill-conditioned: there the release-style
    reference itself is up to ~2e-5 (relative) away from its float64 result, and no fp32
    implementation can be held closer to it than that.
    """
    if x.dtype == torch.float64:
        return tol
    exact = copy.deepcopy(reference).double()
    _, ref_grad = _run(reference, x, upstream)
    _, exact_grad = _run(exact, x.double(), upstream.double())
    return max(tol, 2 * _relative_error(ref_grad.double(), exact_grad))


# fp32: outputs and input gradients within 1e-5 (see _grad_tolerance); float64: every gradient.
PRECISIONS = [(torch.float32, 1e-5), (torch.float64, 1e-10)]


@pytest.mark.parametrize(("dtype", "tol"), PRECISIONS)
@pytest.mark.parametrize(("channels", "kernel", "sub_sample", "form", "clip"), RNL_CASES)
def test_rnl_matches_official_reference(channels, kernel, sub_sample, form, clip, dtype, tol):
    torch.manual_seed(0)
    block = _activate_output(RNLBlock(channels, kernel, sub_sample=sub_sample, aggregation=form))
    block = block.to(dtype)
    reference = ReferenceRNLBlock.from_block(block)
    assert reference.penta.groups == max(channels // 2 // 32, 1)
    x = torch.randn(2, channels, *clip, dtype=dtype)
    upstream = torch.randn_like(x)

    out, x_grad = _run(block, x, upstream)
    ref_out, ref_x_grad = _run(reference, x, upstream)

    assert _relative_error(out, ref_out) <= tol
    assert _relative_error(x_grad, ref_x_grad) <= _grad_tolerance(reference, x, upstream, tol)
    if dtype != torch.float64:
        return
    assert _relative_error(out - x, ref_out - x) <= tol  # the attention path on its own
    _assert_same_param_grads(block, reference, tol, skip={"aggregation.weight"})
    # The canonical depthwise gradient is the diagonal of the masked grouped gradient.
    penta_grad = reference.penta.weight.grad
    rows = torch.arange(penta_grad.shape[0])
    diagonal = penta_grad[rows, rows % penta_grad.shape[1]].unsqueeze(1)
    assert _relative_error(block.aggregation.weight.grad, diagonal) <= tol
    assert torch.count_nonzero(penta_grad * (1 - reference.penta.mask)) == 0


def test_rnl_aggregation_forms_are_interchangeable():
    torch.manual_seed(0)
    block = _activate_output(RNLBlock(128, (3, 5, 5))).eval()
    x = torch.randn(1, 128, 2, 4, 4)
    with torch.no_grad():
        depthwise = block(x)
    block.aggregation.form = "grouped"
    assert block.aggregation.grouped_weight().shape == (64, 32, 3, 5, 5)
    with torch.no_grad():
        assert _relative_error(block(x), depthwise) <= 1e-6
    with pytest.raises(ValueError, match="depthwise"):
        block.aggregation.form = "dense"


def test_rnl_state_dict_has_one_canonical_aggregation_weight():
    block = RNLBlock(16, kernel_size=(3, 5, 7), ratio=2)
    shapes = {name: tuple(t.shape) for name, t in block.state_dict().items()}
    assert shapes["aggregation.weight"] == (8, 1, 3, 5, 7)
    assert shapes["theta.weight"] == (8, 16, 1, 1, 1)
    assert shapes["W.0.weight"] == (16, 8, 1, 1, 1)
    assert set(shapes) == {
        "theta.weight",
        "theta.bias",
        "aggregation.weight",
        "W.0.weight",
        "W.0.bias",
        "W.1.weight",
        "W.1.bias",
        "W.1.running_mean",
        "W.1.running_var",
        "W.1.num_batches_tracked",
    }


def test_rnl_without_regions_is_a_shared_theta_non_local_block():
    # Kernel 1x1x1: no aggregation layer at all (as the release), so P = theta_x.
    torch.manual_seed(0)
    block = _activate_output(RNLBlock(16, kernel_size=(1, 1, 1))).double().eval()
    assert block.aggregation is None
    assert not any(key.startswith("aggregation") for key in block.state_dict())
    reference = ReferenceRNLBlock.from_block(block).eval()
    assert reference.penta is None
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        theta_x = block.theta(x).flatten(2)  # (N, C', THW)
        affinity = torch.softmax(theta_x.transpose(1, 2) @ theta_x, dim=-1)
        y = (affinity @ theta_x.transpose(1, 2)).transpose(1, 2).reshape(2, 8, 3, 4, 5)
        expected = x + block.W(y)
        assert _relative_error(block(x) - x, expected - x) <= 1e-10
        assert _relative_error(reference(x) - x, expected - x) <= 1e-10
        rows = torch.tensor([0, 17, 59])
        torch.testing.assert_close(block.affinity(x, rows), affinity[:, rows])
    with pytest.raises(ValueError, match="aggregation='dense'"):
        RNLBlock(16, kernel_size=(1, 1, 1), aggregation="dense")
    with pytest.raises(ValueError, match="3 positive odd integers"):
        RNLBlock(16, kernel_size=(1, 1))


def test_rnl_aggregation_init_follows_the_release_xavier_bound():
    # The release xavier-initialises a (C', C'/groups, k...) weight: here C' = 128, groups = 4.
    weight = RNLBlock(256, kernel_size=(3, 3, 3)).aggregation.weight.detach()
    bound = (6.0 / ((32 + 128) * 27)) ** 0.5
    assert weight.abs().max() <= bound
    assert weight.std() == pytest.approx(bound / 3**0.5, rel=0.05)


@pytest.mark.parametrize("kernel", [(3, 4, 3), (3, 3), (0, 3, 3)])
def test_rnl_rejects_bad_kernels(kernel):
    with pytest.raises(ValueError, match="odd"):
        RNLBlock(16, kernel_size=kernel)


@pytest.mark.parametrize(("dtype", "tol"), PRECISIONS)
@pytest.mark.parametrize(("sub_sample", "scale"), [(True, None), (False, None), (True, 8**-0.5)])
def test_nl_matches_reference(sub_sample, scale, dtype, tol):
    torch.manual_seed(0)
    block = _activate_output(NLBlock(16, sub_sample=sub_sample, scale=scale)).to(dtype)
    reference = ReferenceNLBlock.from_block(block)
    x = torch.randn(2, 16, 3, 4, 6, dtype=dtype)
    upstream = torch.randn_like(x)

    out, x_grad = _run(block, x, upstream)
    ref_out, ref_x_grad = _run(reference, x, upstream)

    assert _relative_error(out, ref_out) <= tol
    assert _relative_error(x_grad, ref_x_grad) <= tol
    if dtype == torch.float64:
        assert _relative_error(out - x, ref_out - x) <= tol  # the attention path on its own
        _assert_same_param_grads(block, reference, tol)


@pytest.mark.parametrize(
    "make_block",
    [
        lambda: RNLBlock(16, (3, 3, 3)),
        lambda: RNLBlock(16, (1, 3, 5), sub_sample=True),
        lambda: NLBlock(16),
        lambda: ChannelGate(16),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_blocks_are_identity_at_initialisation(make_block, training):
    torch.manual_seed(0)
    block = make_block().train(training)
    x = torch.randn(2, 16, 2, 4, 4)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize(
    ("make_block", "make_reference", "num_keys"),
    [
        (lambda: RNLBlock(16, (3, 3, 5)), ReferenceRNLBlock.from_block, 2 * 4 * 6),
        (lambda: RNLBlock(16, sub_sample=True), ReferenceRNLBlock.from_block, 2 * 2 * 3),
        (lambda: NLBlock(16), ReferenceNLBlock.from_block, 2 * 2 * 3),
        (lambda: NLBlock(16, sub_sample=False, scale=0.3), ReferenceNLBlock.from_block, 48),
    ],
)
def test_affinity_rows_sum_to_one_and_match_reference(make_block, make_reference, num_keys):
    torch.manual_seed(0)
    block = make_block()
    reference = make_reference(block)
    x = torch.randn(2, 16, 2, 4, 6)
    query_index = torch.tensor([0, 7, 47, 13])

    rows = block.affinity(x, query_index)

    assert rows.shape == (2, 4, num_keys)
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(2, 4))
    full = reference.affinity_matrix(x)
    torch.testing.assert_close(rows, full[:, query_index], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "query_index", [torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]]), torch.tensor([48])]
)
def test_affinity_rejects_bad_query_index(query_index):
    with pytest.raises(ValueError, match="query_index"):
        RNLBlock(16, (1, 3, 3)).affinity(torch.randn(1, 16, 2, 4, 6), query_index)


def test_channel_gate_adds_transformed_global_context():
    torch.manual_seed(0)
    gate = ChannelGate(8).eval()
    nn.init.normal_(gate.W_v2.weight)
    nn.init.normal_(gate.W_v2.bias)
    x = torch.randn(2, 8, 2, 3, 3)

    weights = torch.softmax(gate.W_k(x).reshape(2, -1), dim=1)  # (N, THW)
    context = torch.einsum("ncp,np->nc", x.reshape(2, 8, -1), weights)
    hidden = torch.relu(gate.bn1(gate.W_v1(context)))
    expected = x + gate.W_v2(hidden)[:, :, None, None, None]

    torch.testing.assert_close(gate(x), expected)
    assert gate.bn1.eps == 1e-5 and gate.bn1.momentum == 0.01
    assert gate.W_v1.out_features == 4
