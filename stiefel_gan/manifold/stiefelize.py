"""Turn the Linear / Conv / ConvTranspose layers of any model into their Stiefel twins, in place."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .._modules import LayerFilter, check_patterns_match, layer_predicate
from .costs import stiefel_summary
from .layers import STIEFEL_TWINS, StiefelLayer
from .retractions import DEFAULT_RETRACTION
from .spectra import Spectrum

#: Layers with a weight matrix that no Stiefel twin replaces (besides subclasses of the convertible
#: types: a layer parametrized by spectral normalization, a lazy layer, a custom subclass): stiefelize names them.
_TWINLESS_TYPES = (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear, nn.MultiheadAttention)


def _constructor_arguments(layer: nn.Module) -> dict:
    """The torch layer's own constructor arguments, read back from its attributes."""
    if isinstance(layer, nn.Linear):
        names = ("in_features", "out_features")
    else:
        names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode") + (("output_padding",) if layer.transposed else ())
    return {name: getattr(layer, name) for name in names} | {"bias": layer.bias is not None}


def stiefel_twin(layer: nn.Module, spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION, from_weight: bool = True) -> nn.Module:
    """The Stiefel layer equivalent to one torch layer (a key of ``STIEFEL_TWINS``): same shapes, strides,
    padding, groups and bias.

    With ``from_weight=True`` the factors start from the layer's current weight (the polar factor, or
    its SVD factors for ``"svd"``: :meth:`StiefelMatrix.init_from_weight`), else Haar-random
    (:func:`~stiefel_gan.manifold.layers.haar_`); the bias is copied.
    """
    twin_type = STIEFEL_TWINS.get(type(layer))
    if twin_type is None:
        allowed = ", ".join(sorted({t.__name__ for t in STIEFEL_TWINS}))
        raise ValueError(f"layer {type(layer).__name__} is not allowed: stiefel_twin takes one of {allowed}")
    twin = twin_type(**_constructor_arguments(layer), device=layer.weight.device, dtype=layer.weight.dtype,
                     spectrum=spectrum, factorization=factorization, retraction=retraction,
                     init_weight=layer.weight if from_weight else None)
    if layer.bias is not None:
        with torch.no_grad():
            twin.bias.copy_(layer.bias)
    twin.train(layer.training)
    return twin


def _is_twinless(module: nn.Module) -> bool:
    return (isinstance(module, _TWINLESS_TYPES) and type(module) not in STIEFEL_TWINS
            and not isinstance(module, StiefelLayer))


def stiefelize(model: nn.Module, spectrum: Spectrum | None = None, include: LayerFilter = None,
               factorization: str = "diag", retraction: str = DEFAULT_RETRACTION, from_weight: bool = True, *,
               exclude: LayerFilter = None, strict: bool = False, summary: bool = False) -> nn.Module:
    """Replace every selected Linear / Conv1d-3d / ConvTranspose1d-3d of ``model`` by its Stiefel twin, in place.

    Parameters
    ----------
    model : nn.Module
        Any model (a GAN discriminator, a torchvision classifier, a generator...). Its submodules are
        converted (not ``model`` itself); a layer shared by several parents gets one twin.
    spectrum : Spectrum, optional
        Unbound spectrum; each layer binds its own copy to its ``k`` (shared by the groups of a grouped conv).
    include, exclude : None, callable or glob pattern(s)
        Which layers: those selected by ``include`` (all for ``None``; a predicate ``(name, module)``, or
        patterns over qualified names such as ``"layer*.conv*"``) and not by ``exclude``. A pattern that
        matches no layer with a weight is an error.
    factorization, retraction
        As in :class:`~stiefel_gan.manifold.StiefelMatrix`.
    from_weight : bool
        Start the factors from each layer's current weight (its polar factor, float32 with a check: for
        trained weights), else Haar-random (for a freshly constructed model: the polar factor of a
        Gaussian-initialized weight is itself Haar-distributed, and sampling one costs a Cholesky QR
        instead of an SVD).
    strict : bool
        A selected layer with a weight matrix but no Stiefel twin (``nn.Bilinear``, the input
        projection of ``nn.MultiheadAttention``, a layer already parametrized, a lazy or subclassed
        layer) is an error with ``strict=True``; otherwise it is left as is with a one-line warning.
    summary : bool
        Print :func:`~stiefel_gan.manifold.costs.stiefel_summary` (factor shapes, ``k`` and optimizer
        FLOPs per step of every Stiefel layer) after converting.

    Returns
    -------
    nn.Module
        ``model`` itself. Nothing is changed when an error is raised.
    """
    candidates = [(name, module) for name, module in model.named_modules(remove_duplicate=False)
                  if name and (type(module) in STIEFEL_TWINS or _is_twinless(module))]
    check_patterns_match([name for name, _ in candidates], include, exclude, what="layer with a weight")
    keep = layer_predicate(include, exclude)
    selected = {name for name, module in candidates if keep(name, module)}

    for name, module in candidates:
        if name in selected and _is_twinless(module):
            message = (f"layer {name!r} ({type(module).__name__}) has no Stiefel twin: "
                       + ("strict=True does not allow it" if strict else "left as is"))
            if strict:
                raise ValueError(message)
            warnings.warn(message, UserWarning, stacklevel=2)

    # every twin is built before any is swapped in: a bad spectrum for one layer leaves the model untouched
    twins: dict[int, nn.Module] = {}
    swaps = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent._modules.items():  # named_children() would skip a repeated child
            name = f"{parent_name}.{attr}" if parent_name else attr
            if name not in selected or type(child) not in STIEFEL_TWINS:
                continue
            if id(child) not in twins:
                try:
                    twins[id(child)] = stiefel_twin(child, spectrum, factorization, retraction, from_weight)
                except ValueError as error:
                    raise ValueError(f"layer {name!r} ({type(child).__name__}): {error}") from None
            swaps.append((parent, attr, twins[id(child)]))
    for parent, attr, twin in swaps:
        setattr(parent, attr, twin)
    if summary:
        print(stiefel_summary(model))
    return model
