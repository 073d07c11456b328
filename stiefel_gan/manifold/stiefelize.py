"""Turn the Linear / Conv2d layers of any model into their Stiefel twins, in place."""

from __future__ import annotations

import torch
from torch import nn

from .._modules import LayerFilter, select_layers
from .layers import StiefelConv2d, StiefelLinear
from .retractions import DEFAULT_RETRACTION
from .spectra import Spectrum


def stiefel_twin(layer: nn.Module, spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION, from_weight: bool = True) -> nn.Module:
    """The Stiefel layer equivalent to one ``nn.Linear`` / ``nn.Conv2d``: same shapes, strides, padding, bias.

    With ``from_weight=True`` the factors start from the layer's current weight
    (:meth:`StiefelMatrix.init_from_weight`), else Haar-random; the bias is copied.
    """
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    options = {"spectrum": spectrum, "factorization": factorization, "retraction": retraction}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        twin = StiefelLinear(layer.in_features, layer.out_features, has_bias, **factory, **options)
    elif isinstance(layer, nn.Conv2d):
        twin = StiefelConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                             layer.padding, layer.dilation, layer.groups, has_bias, layer.padding_mode,
                             **factory, **options)
    else:
        raise ValueError(f"layer {type(layer).__name__} is not allowed: stiefel_twin takes nn.Linear or nn.Conv2d")
    with torch.no_grad():
        if from_weight:
            twin.parametrization.init_from_weight(layer.weight)
        if has_bias:
            twin.bias.copy_(layer.bias)
    twin.train(layer.training)
    return twin


def stiefelize(model: nn.Module, spectrum: Spectrum | None = None, include: LayerFilter = None,
               factorization: str = "diag", retraction: str = DEFAULT_RETRACTION,
               from_weight: bool = True) -> nn.Module:
    """Replace every selected ``nn.Linear`` / ``nn.Conv2d`` of ``model`` by its Stiefel twin, in place.

    Parameters
    ----------
    model : nn.Module
        Any model (a GAN discriminator, a torchvision ResNet, ...).
    spectrum : Spectrum, optional
        Unbound spectrum; each layer binds its own copy to its ``k``.
    include : None, callable or glob pattern(s)
        Which layers: all (None), those for which ``include(name, module)`` is true, or those whose
        qualified name matches a pattern (``"layer*.conv*"``).
    factorization, retraction
        As in :class:`~stiefel_gan.manifold.StiefelMatrix`.
    from_weight : bool
        Start the factors from each layer's current weight (else Haar-random).

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    for _, layer, attr, parent in select_layers(model, (nn.Linear, nn.Conv2d), include):
        setattr(parent, attr, stiefel_twin(layer, spectrum, factorization, retraction, from_weight))
    return model
