"""One module finds every weighted layer and its effective weight, for every parameterization."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from stiefel_gan.effective_weights import (
    effective_weight,
    parameterization,
    trained_factors,
    weight_producer,
    weighted_layers,
)
from stiefel_gan.manifold import FixedCurve, LearnableCurve, StiefelConv2d, StiefelLinear
from stiefel_gan.spectral import apply_normalization


class Zoo(nn.Module):
    """One layer of each kind, each applied to its own input (the forward is never run whole)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(5, 3)
        self.conv1d = nn.Conv1d(2, 4, 3)
        self.grouped = nn.Conv2d(4, 6, 3, groups=2)
        self.transposed = nn.ConvTranspose2d(3, 2, 3, stride=2)
        self.norm = nn.BatchNorm2d(3)
        self.layer_norm = nn.LayerNorm(5)
        self.sn = apply_normalization(nn.Sequential(nn.Linear(5, 4)), "sn")[0]
        self.wn = parametrizations.weight_norm(nn.Conv2d(2, 3, 3))
        self.stiefel = StiefelLinear(6, 4, spectrum=LearnableCurve(tau=0.5, eps=0.2))
        self.stiefel_conv = StiefelConv2d(2, 3, 3, spectrum=FixedCurve(), factorization="svd")


INPUTS = {"dense": (2, 5), "conv1d": (2, 2, 7), "grouped": (2, 4, 6, 6), "transposed": (2, 3, 4, 4),
          "sn": (2, 5), "wn": (2, 2, 5, 5), "stiefel": (2, 6), "stiefel_conv": (2, 2, 5, 5)}


def functional(layer, weight, x):
    """The layer's operation with ``weight`` in place of its own."""
    if weight.ndim == 2:
        return F.linear(x, weight, layer.bias)
    if getattr(layer, "transposed", False):
        return F.conv_transpose2d(x, weight, layer.bias, layer.stride, layer.padding, layer.output_padding)
    conv = {3: F.conv1d, 4: F.conv2d}[weight.ndim]
    return conv(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def test_every_layer_holding_a_weight_matrix_is_found_and_norms_are_not():
    zoo = Zoo()
    assert list(weighted_layers(zoo)) == list(INPUTS)
    assert {name: parameterization(layer) for name, layer in weighted_layers(zoo).items()} == {
        "dense": "plain", "conv1d": "plain", "grouped": "plain", "transposed": "plain", "sn": "parametrized",
        "wn": "parametrized", "stiefel": "stiefel", "stiefel_conv": "stiefel"}


@pytest.mark.parametrize("name", list(INPUTS))
def test_effective_weight_is_what_the_forward_multiplies_by(name):
    zoo = Zoo().eval()
    layer = weighted_layers(zoo)[name]
    x = torch.randn(*INPUTS[name], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(layer(x), functional(layer, effective_weight(layer), x))
    producer = weight_producer(layer)
    if producer is None:  # plain: the parameter itself
        assert effective_weight(layer) is layer.weight
    else:  # a hook on the producer sees the effective weight
        seen = []
        handle = producer.register_forward_hook(lambda module, args, output: seen.append(output))
        layer(x)
        handle.remove()
        assert len(seen) == 1 and torch.equal(seen[0].reshape(effective_weight(layer).shape), effective_weight(layer))


def test_reading_an_sn_weight_in_training_mode_leaves_its_power_iteration_alone():
    zoo = Zoo().train()
    constraint = zoo.sn.parametrizations.weight[0]
    u = constraint.u.clone()
    weight = effective_weight(zoo.sn)
    assert torch.equal(constraint.u, u) and zoo.sn.training and constraint.training
    zoo.eval()
    assert torch.equal(weight, zoo.sn.weight)


def test_trained_factors_are_the_tensors_the_optimizer_updates():
    zoo = Zoo()
    factors = {name: trained_factors(layer) for name, layer in weighted_layers(zoo).items()}
    assert factors["dense"]["weight"] == [zoo.dense.weight]
    assert factors["sn"]["weight"] == [zoo.sn.parametrizations.weight.original]
    magnitude, direction = factors["wn"]["weight"]  # weight_norm: original0 = g, original1 = v
    assert magnitude.shape == (3, 1, 1, 1) and direction.shape == (3, 2, 3, 3)
    assert factors["stiefel"]["X"] == [zoo.stiefel.parametrization.factor]
    assert len(factors["stiefel"]["lambda"]) == 2  # tau and eps are learned, sigma is frozen
    assert factors["stiefel_conv"]["X"] == [zoo.stiefel_conv.parametrization.left, zoo.stiefel_conv.parametrization.right]
    assert factors["stiefel_conv"]["lambda"] == []  # a fixed curve trains nothing
    zoo.dense.weight.requires_grad_(False)
    assert trained_factors(zoo.dense) == {"weight": []}
