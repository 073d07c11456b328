r"""Layers whose (reshaped) weight has exactly the singular values of a chosen spectrum.

A ``rows x cols`` weight with ``k = min(rows, cols)`` singular values is factored as

``factorization="diag"`` (default)
    :math:`W = \mathrm{diag}(\lambda) X` with orthonormal rows if ``rows <= cols``,
    :math:`W = X \mathrm{diag}(\lambda)` with orthonormal columns otherwise. Either way
    :math:`W W^T` (or :math:`W^T W`) is :math:`\mathrm{diag}(\lambda^2)`, so the singular values of
    ``W`` are exactly :math:`|\lambda|`.

``factorization="svd"``
    :math:`W = U \mathrm{diag}(\lambda) V^T` with both ``U`` (``rows x k``) and ``V`` (``cols x k``) on
    Stiefel manifolds: the "general SVD" parameterization.

Note [tall storage]
    geoopt's Stiefel manifold holds tall matrices (``n >= p``, ``X^T X = I_p``). A wide ``X`` with
    orthonormal rows is therefore stored transposed, as the tall ``X^T``; ``extra_repr`` says which.
    In both cases the stored factor ``Q`` is ``max(rows, cols) x k`` and ``W`` is ``Q diag(lambda)``
    or its transpose, one broadcasted multiply.

A conv kernel ``c_out x c_in x kh x kw`` is the ``c_out x (c_in kh kw)`` matrix reshaped (Miyato's
view): its reshaped spectrum is exactly ``lambda``; the spectrum of the convolution operator is not,
and is measured by :mod:`stiefel_gan.spectral`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from geoopt import ManifoldParameter
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .retractions import DEFAULT_RETRACTION, manifold_drift, stiefel_manifold
from .spectra import FixedCurve, Spectrum

FACTORIZATIONS = ("diag", "svd")


def _check_float_dtype(dtype) -> None:
    if dtype is not None and not torch.empty((), dtype=dtype).is_floating_point():
        raise ValueError(f"dtype={dtype} is not allowed: Stiefel layers need a floating-point dtype")


def _polar_factors(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Thin SVD factors ``U`` (rows x k) and ``V`` (cols x k) of a dense matrix, in float64 for accuracy."""
    u, _, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u, vh.transpose(-1, -2)


class StiefelMatrix(nn.Module):
    """A ``rows x cols`` matrix ``W(X, lambda)`` with singular values ``lambda`` (module docstring).

    Parameters
    ----------
    rows, cols : int
        Shape of the produced matrix.
    spectrum : Spectrum, optional
        Unbound spectrum; this module binds its own copy to ``k = min(rows, cols)``.
        Default: :class:`FixedCurve` with its defaults.
    factorization : {"diag", "svd"}
    retraction : {"qr", "cayley"}
        Retraction of the Stiefel factor(s) (see :mod:`stiefel_gan.manifold.retractions`).
    """

    def __init__(self, rows: int, cols: int, spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION, device=None, dtype=None):
        super().__init__()
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization={factorization!r} is not allowed: use one of {FACTORIZATIONS}")
        _check_float_dtype(dtype)
        if spectrum is None:
            spectrum = FixedCurve()
        if not isinstance(spectrum, Spectrum):
            raise ValueError(f"spectrum={spectrum!r} is not allowed: use a Spectrum (FixedCurve, LearnableCurve, LearnableGrid)")
        k = min(rows, cols)
        if k < 1:
            raise ValueError(f"a {rows} x {cols} weight (k={k} singular values) is not allowed: "
                             "a Stiefel layer needs k = min(rows, cols) >= 1")
        self.rows, self.cols, self.k = rows, cols, k
        self.factorization = factorization
        self.retraction = retraction
        manifold = stiefel_manifold(retraction)
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        self.spectrum = spectrum.build(k).to(**factory)
        if factorization == "diag":
            self.transposed = rows <= cols
            self.factor = ManifoldParameter(torch.empty(max(rows, cols), k, **factory), manifold=manifold)
        else:
            self.transposed = False
            self.left = ManifoldParameter(torch.empty(rows, k, **factory), manifold=manifold)
            self.right = ManifoldParameter(torch.empty(cols, k, **factory), manifold=manifold)
        self.reset_parameters()

    def stiefel_factors(self) -> list[ManifoldParameter]:
        """The parameters that live on a Stiefel manifold (one for ``diag``, two for ``svd``)."""
        return [self.factor] if self.factorization == "diag" else [self.left, self.right]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Haar-random orthonormal factors (``nn.init.orthogonal_``)."""
        for factor in self.stiefel_factors():
            nn.init.orthogonal_(factor)

    @torch.no_grad()
    def init_from_weight(self, weight: Tensor) -> None:
        """Start the factors from an existing ``rows x cols`` weight ``W = U S V^T``; the spectrum stays ``lambda``.

        ``svd``: the factors are ``U`` and ``V``, so ``W`` keeps its singular directions and becomes
        ``U diag(lambda) V^T``. ``diag``: ``X`` is the polar factor ``U V^T``, the matrix with orthonormal
        rows/columns closest to ``W`` in Frobenius norm (``diag(lambda) X`` itself has the coordinate
        axes as left singular vectors, so it cannot keep ``U`` in general).
        """
        u, v = _polar_factors(weight.reshape(self.rows, self.cols))
        if self.factorization == "svd":
            self.left.copy_(u)
            self.right.copy_(v)
        else:
            polar = u @ v.transpose(-1, -2)
            self.factor.copy_(polar.transpose(-1, -2) if self.transposed else polar)

    def forward(self) -> Tensor:
        # Note [weight in the parameters' precision]: under autocast (bf16 / fp16 training) the layer's
        # conv / linear runs in the low precision, but W = diag(lambda) X is formed in the factors' own
        # dtype, so its singular values are lambda to that dtype's accuracy; the conv casts W itself
        with torch.autocast(self.stiefel_factors()[0].device.type, enabled=False):
            lam = self.spectrum()
            if self.factorization == "svd":
                return (self.left * lam) @ self.right.transpose(-1, -2)
            scaled = self.factor * lam  # Q diag(lambda), max(rows, cols) x k
            return scaled.transpose(-1, -2) if self.transposed else scaled

    def drift(self) -> Tensor:
        r""":math:`\max |Q^T Q - I|` over this module's Stiefel factors (0 on the manifold)."""
        with torch.no_grad():
            return torch.stack([manifold_drift(f) for f in self.stiefel_factors()]).amax()

    def extra_repr(self) -> str:
        if self.factorization == "svd":
            stored = f"U {self.rows}x{self.k}, V {self.cols}x{self.k}"
        else:
            shape = f"{self.factor.shape[0]}x{self.k}"
            stored = f"X^T {shape} (stored transposed)" if self.transposed else f"X {shape}"
        return (f"{self.rows}x{self.cols}, k={self.k}, factorization={self.factorization}, {stored}, "
                f"retraction={self.retraction}")


class StiefelLayer(nn.Module):
    """Shared parts of the Stiefel layers: the effective ``weight`` and diagnostics."""

    parametrization: StiefelMatrix
    weight_shape: tuple[int, ...]

    @property
    def weight(self) -> Tensor:
        """The effective dense weight, in the usual shape of the layer it replaces (differentiable)."""
        return self.parametrization().reshape(self.weight_shape)

    @property
    def spectrum(self) -> Spectrum:
        return self.parametrization.spectrum

    def singular_values(self) -> Tensor:
        """``lambda``: the exact singular values of the (reshaped) weight, in the spectrum's own order."""
        return self.spectrum.values()

    def _init_bias(self, fan_in: int) -> None:
        # the default of nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)


class StiefelLinear(StiefelLayer):
    """Drop-in for :class:`torch.nn.Linear` with ``weight = diag(lambda) X`` (see the module docstring).

    Examples
    --------
    >>> layer = StiefelLinear(64, 16, spectrum=FixedCurve(tau=0.5, eps=0.1))
    >>> torch.linalg.svdvals(layer.weight).shape
    torch.Size([16])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_shape = (out_features, in_features)
        self.parametrization = StiefelMatrix(out_features, in_features, spectrum, factorization, retraction,
                                             device=device, dtype=dtype)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._init_bias(in_features)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class StiefelConv2d(StiefelLayer):
    """Drop-in for :class:`torch.nn.Conv2d` whose reshaped kernel ``c_out x (c_in kh kw)`` has spectrum ``lambda``.

    Same constructor arguments as ``nn.Conv2d`` (``groups`` must be 1: a grouped kernel is a block-diagonal
    matrix, not one Stiefel factor), plus ``spectrum``, ``factorization`` and ``retraction``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION):
        super().__init__()
        if groups != 1:
            raise ValueError(f"groups={groups} is not allowed: StiefelConv2d supports groups=1 only")
        # Note [reuse nn.Conv2d's padding logic]: a template on the meta device validates the
        # arguments exactly as nn.Conv2d does and computes its padding attributes; nothing is allocated.
        template = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                             padding_mode, device="meta")
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(template, name))
        self.weight_shape = tuple(template.weight.shape)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.parametrization = StiefelMatrix(out_channels, fan_in, spectrum, factorization, retraction,
                                             device=device, dtype=dtype)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._init_bias(fan_in)

    def forward(self, input: Tensor) -> Tensor:
        return nn.Conv2d._conv_forward(self, input, self.weight, self.bias)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")
        if self.dilation != _pair(1):
            text += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text + f", bias={self.bias is not None}"


def stiefel_layers(model: nn.Module):
    """Yield ``(name, layer)`` for every Stiefel layer of a model."""
    for name, module in model.named_modules():
        if isinstance(module, StiefelLayer):
            yield name, module
