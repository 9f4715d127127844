"""model.py: the norm flag, parameter counts, shapes and the axes each norm normalizes."""

import pytest
import torch
from torch import nn

import model
from model import Net


@pytest.mark.parametrize("flag", ["B", "L", "G"])
def test_output_shape_and_parameter_budget(flag):
    net = Net(flag)
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities
    assert model.count_parameters(net) < 8000


@pytest.mark.parametrize("alias, flag", [
    ("B", "B"), ("b", "B"), ("bn", "B"), ("BatchNorm", "B"), ("batch_norm", "B"),
    ("L", "L"), ("ln", "L"), ("LayerNorm", "L"), ("layer", "L"),
    ("G", "G"), ("gn", "G"), ("GROUPNORM", "G"), ("group-norm", "G"),
])
def test_flag_aliases(alias, flag):
    assert Net(alias).norm == flag


def test_each_flag_builds_its_norm_layer():
    def norms(net):
        return [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]

    assert all(isinstance(m, nn.BatchNorm2d) for m in norms(Net("B")))
    assert all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in norms(Net("L")))
    assert all(m.num_groups == 2 for m in norms(Net("G")))
    assert all(m.num_groups == 7 for m in norms(Net("G", groups=7)))


@pytest.mark.parametrize("bad", ["X", "instance", "", None, 3])
def test_unknown_flag_raises_listing_valid_ones(bad):
    with pytest.raises(ValueError, match="'B'.*'L'.*'G'"):
        Net(bad)


@pytest.mark.parametrize("groups", [3, 4, 0, -1, 2.0, True])
def test_bad_groups_raise(groups):
    with pytest.raises(ValueError, match="groups"):
        Net("G", groups=groups)


def test_groups_is_ignored_unless_groupnorm():
    assert model.count_parameters(Net("L", groups=3)) == model.count_parameters(Net("L"))


def _normalized(layer, x):
    """Apply a norm layer with its affine parameters at identity, in training mode."""
    layer.train()
    return layer(x)


@pytest.mark.parametrize("flag, groups, axes", [
    ("B", None, "(N, H, W) per channel"),
    ("L", None, "(C, H, W) per sample"),
    ("G", 4, "(C/G, H, W) per sample and group"),
])
def test_norm_normalizes_over_the_axes_it_claims(flag, groups, axes):
    torch.manual_seed(0)
    x = torch.randn(6, 16, 7, 7) * 3 + torch.arange(16.0).view(1, 16, 1, 1)
    y = _normalized(model.make_norm(flag, 16, groups or model.DEFAULT_GROUPS), x).detach()
    if flag == "B":
        stats = y.transpose(0, 1).reshape(16, -1)        # one row per channel
    elif flag == "L":
        stats = y.reshape(6, -1)                          # one row per sample
    else:
        stats = y.reshape(6, groups, -1)                  # one row per sample and group
    assert torch.allclose(stats.mean(-1), torch.zeros(()), atol=1e-5), axes
    assert torch.allclose(stats.var(-1, unbiased=False), torch.ones(()), atol=1e-3), axes
    # and NOT over a finer set of axes: per-(sample, channel) means are not all zero
    assert y.mean(dim=(2, 3)).abs().max() > 0.1


def test_layernorm_does_not_hard_code_the_spatial_size():
    layer = model.make_norm("L", 8)
    for size in (28, 14, 5):
        y = layer(torch.randn(2, 8, size, size))
        assert torch.allclose(y.reshape(2, -1).mean(1), torch.zeros(2), atol=1e-5)


def test_the_network_is_the_blocks_its_docstring_names():
    net = Net("G")
    shapes, x = [], torch.randn(2, 1, 28, 28)
    for layer in net.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(4, 14, 14), (14, 14, 14), (14, 14, 14), (14, 7, 7), (14, 5, 5), (14, 3, 3), (14, 3, 3)]
    assert {type(m) for m in net.features.modules() if isinstance(m, (nn.ReLU, nn.SiLU))} == {nn.SiLU}
    assert all(model.count_parameters(Net(flag)) == 7850 for flag in "BLG")


def test_a_flipped_bit_changes_the_digest_and_equal_weights_keep_it():
    state = Net("B").state_dict()
    digest = model.state_digest(state)
    assert model.state_digest({k: v.clone() for k, v in state.items()}) == digest
    weight = state["features.1.0.weight"]
    weight.view(torch.int32).view(-1)[7] ^= 1  # the lowest mantissa bit of one weight
    assert model.state_digest(state) != digest
    assert "sha256" in model.check_state(state, digest)
    assert model.check_state(state, None) == "the weights carry no sha256"


def test_layernorm_is_named_layernorm_with_groupnorm_maths():
    layer = model.make_norm("L", 8)
    assert type(layer).__name__ == "LayerNorm" and isinstance(layer, nn.GroupNorm) and layer.num_groups == 1
    reference = nn.GroupNorm(1, 8)
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(layer(x), reference(x))
    assert model.count_parameters(Net("L")) == model.count_parameters(Net("G"))
