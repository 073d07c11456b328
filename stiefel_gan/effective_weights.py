r"""Every weighted layer of a model and its *effective* weight, whatever parameterizes it.

The effective weight of a layer is the tensor its forward multiplies by. Three parameterizations
cover every kind this suite trains (and any model, nothing here is GAN-specific):

``plain``
    The weight is a parameter read as is: no constraint, weight clipping (the parameter itself is
    clipped after each step), a gradient penalty (a loss term), orthonormal regularization.
``parametrized``
    A :mod:`torch.nn.utils.parametrize` parametrization on ``weight`` (spectral normalization, fair
    SN, torch's ``weight_norm``): reading ``layer.weight`` runs ``layer.parametrizations.weight``
    on the unconstrained tensors ``original`` (or ``original0``, ``original1``, ...).
``stiefel``
    A :class:`~stiefel_gan.manifold.StiefelLayer`: ``layer.weight`` is
    ``layer.parametrization()`` (``diag(lambda) X`` or ``U diag(lambda) V^T``) reshaped.

In every case ``layer.weight`` *read in eval mode* is the effective weight (in training mode, an SN
layer's read runs a power iteration that changes its state): :func:`effective_weight` reads it so.

Note [weighted layers by what they hold, not by class]
    A layer is found because it holds a weight matrix or kernel: it is a Stiefel layer, or its
    ``weight`` is a tensor with ``ndim >= 2`` (dense ``out x in``, conv ``c_out x c_in/groups x k...``,
    transposed conv ``c_in x c_out/groups x k...``). Conv1d/2d/3d, grouped and transposed convs,
    Linear, and layers defined elsewhere are found without a list of classes; norms' and biases'
    1-D weights are not. A parametrized layer is recognised from its parametrization, *without*
    reading ``weight`` (which would run it).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ._modules import eval_mode
from .manifold import StiefelLayer

#: The values of :func:`parameterization`.
PARAMETERIZATIONS = ("plain", "parametrized", "stiefel")


def _unconstrained_tensors(layer: nn.Module) -> list[Tensor]:
    """The ``original`` tensor(s) a weight parametrization is computed from (``original0``, ... when several)."""
    parametrizations = layer.parametrizations.weight
    if hasattr(parametrizations, "original"):
        return [parametrizations.original]
    return [tensor for name, tensor in parametrizations.named_parameters(recurse=False) if name.startswith("original")]


def _holds_weight_matrix(module: nn.Module) -> bool:
    if isinstance(module, StiefelLayer):
        return True
    if parametrize.is_parametrized(module, "weight"):
        return any(tensor.ndim >= 2 for tensor in _unconstrained_tensors(module))
    weight = getattr(module, "weight", None)
    return isinstance(weight, Tensor) and weight.ndim >= 2


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer of ``model`` (``model`` itself included) holding a weight matrix or kernel, by qualified name.

    See Note [weighted layers by what they hold, not by class]. The order is ``named_modules``'s:
    network definition order.
    """
    return {name: module for name, module in model.named_modules() if _holds_weight_matrix(module)}


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight ``layer``'s forward multiplies by, read in eval mode (differentiable).

    Eval mode keeps the read out of the training state (an SN layer's power iteration); every
    submodule's own ``training`` flag is restored afterwards.
    """
    with eval_mode(layer):
        return layer.weight


def parameterization(layer: nn.Module) -> str:
    """``"stiefel"``, ``"parametrized"`` or ``"plain"`` (module docstring)."""
    if isinstance(layer, StiefelLayer):
        return "stiefel"
    return "parametrized" if parametrize.is_parametrized(layer, "weight") else "plain"


def weight_producer(layer: nn.Module) -> nn.Module | None:
    """The submodule whose forward output *is* the effective weight, or None for a plain layer.

    A forward hook on it sees the very tensor the layer's forward multiplies by, once per read: the
    way to differentiate a loss with respect to the effective weight of a parametrized or Stiefel
    layer (a plain layer's effective weight is its parameter).
    """
    if isinstance(layer, StiefelLayer):
        return layer.parametrization
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight
    return None


def trained_factors(layer: nn.Module) -> dict[str, list[Tensor]]:
    """The trained tensors behind a layer's effective weight, by factor, those with ``requires_grad`` only.

    ``{"X": Stiefel factors, "lambda": spectrum parameters}`` for a Stiefel layer (``X``: one factor for
    ``diag``, ``U`` and ``V`` for ``svd``); ``{"weight": [...]}`` otherwise: the parameter of a plain layer,
    the unconstrained ``original`` tensor(s) of a parametrized one (weight_norm's magnitude and direction).
    A factor with nothing trained maps to an empty list (a fixed spectrum's ``lambda``).
    """
    if isinstance(layer, StiefelLayer):
        factors = {"X": layer.parametrization.stiefel_factors(), "lambda": list(layer.spectrum.parameters())}
    elif parametrize.is_parametrized(layer, "weight"):
        factors = {"weight": _unconstrained_tensors(layer)}
    else:
        factors = {"weight": [layer.weight]}
    return {factor: [p for p in tensors if p.requires_grad] for factor, tensors in factors.items()}
