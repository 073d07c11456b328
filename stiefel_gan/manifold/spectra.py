r"""Spectra: small modules that produce the singular values ``lambda`` of a Stiefel layer.

A spectrum is written once, unbound (it does not know how many singular values a layer has),
and every layer binds its own copy to its ``k = min(rows, cols)`` with :meth:`Spectrum.build`.
So one spectrum object can be handed to :func:`~stiefel_gan.manifold.stiefelize` for a whole model.

The curve. With ``t_i = i / (k - 1)`` (``t = 0`` when ``k = 1``),

.. math::

    \lambda_i = \sigma \left(\varepsilon + (1 - \varepsilon)(1 - t_i)^{\tau}\right),
    \qquad i = 0, \dots, k - 1,

so ``lambda_0 = sigma`` is the largest value, ``lambda_{k-1} = sigma * eps`` the smallest, and ``tau``
sets the shape: ``tau < 1`` concave (SN-like), ``tau = 1`` linear, ``tau > 1`` convex.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CURVE_PARAMETERS = ("tau", "eps", "sigma")


def curve_values(k: int, tau, eps, sigma) -> Tensor:
    r"""The spectrum curve :math:`\sigma(\varepsilon + (1-\varepsilon)(1-t_i)^\tau)` at ``k`` points.

    ``tau``, ``eps`` and ``sigma`` may be floats or 0-d tensors (differentiable).
    """
    tau, eps, sigma = (torch.as_tensor(v) for v in (tau, eps, sigma))
    dtype = torch.promote_types(torch.promote_types(tau.dtype, eps.dtype), sigma.dtype)  # no result_type: a graph break under torch.compile
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    t = torch.linspace(0.0, 1.0, k, dtype=dtype, device=tau.device) if k > 1 else tau.new_zeros(1, dtype=dtype)
    return sigma * (eps + (1 - eps) * (1 - t) ** tau)


@dataclass(frozen=True)
class CurveFit:
    """The curve fitted to a spectrum by :func:`fit_curve`: ``tau``, ``eps``, ``sigma`` and the RMS residual
    of the normalized values (``rmse``, 0 when the spectrum is exactly a curve)."""

    tau: float
    eps: float
    sigma: float
    rmse: float


#: The range of ``tau`` :func:`fit_curve` searches: concave to convex far beyond the studied 0.25 ... 4.
FIT_TAU_BOUNDS = (1e-2, 1e2)
#: Points of the coarse log-spaced ``tau`` grid that brackets the refined minimum.
FIT_TAU_GRID_POINTS = 201


def fit_curve(values) -> CurveFit:
    r"""Least-squares fit of the spectrum curve to singular values (the inverse of :func:`curve_values`).

    With ``s`` sorted descending, ``sigma = s_0``, ``y_i = s_i / s_0`` and ``t_i = i / (k - 1)``, minimize

    .. math:: r(\tau, \varepsilon) = \sum_i \left(y_i - \varepsilon - (1 - \varepsilon)(1 - t_i)^{\tau}\right)^2

    over :math:`\tau \in` :data:`FIT_TAU_BOUNDS`, :math:`\varepsilon \in [0, 1]`. For a fixed
    :math:`\tau` the model is affine in :math:`\varepsilon`: with :math:`u_i = (1 - t_i)^\tau`,
    :math:`y - u = \varepsilon (1 - u)`, so the best :math:`\varepsilon` is
    :math:`\langle y - u, 1 - u\rangle / \lVert 1 - u\rVert^2` clipped to ``[0, 1]`` (exact for a
    one-dimensional convex quadratic). What is left is a one-dimensional profile in :math:`\log\tau`,
    minimized on a log-spaced grid and refined by bounded Brent between the grid neighbours of the
    best point. Fitted in the unsquared view, so a layer whose spectrum is a curve gets that curve's
    own parameters back; Miyato's squared view of the fit is :math:`(\varepsilon + (1 - \varepsilon)
    (1 - t)^\tau)^2`.

    The cost is fixed by ``k`` alone: :data:`FIT_TAU_GRID_POINTS` profile evaluations and a bounded Brent
    search (at most 500 more), ``O(k)`` each.

    Parameters
    ----------
    values : array_like, shape (k,)
        Singular values, ``k >= 3`` (two points fix ``eps`` but not ``tau``), finite, the largest ``> 0``.
        Sorted here: the order a layer keeps them in does not matter. ``k = 1`` (a rank-one layer) and
        ``k = 2`` raise ``ValueError`` at once.

    Returns
    -------
    CurveFit
        For equal values (a flat spectrum) ``eps = 1``, ``rmse = 0`` and ``tau = NaN``: with
        :math:`\varepsilon = 1` every :math:`\tau` gives the same flat curve, so none is fitted. Values
        ``(s, 0, ..., 0)`` (a rank-one matrix with ``k >= 3``) give ``eps = 0`` and ``tau`` at the upper
        end of :data:`FIT_TAU_BOUNDS`, towards which the residual keeps decreasing.
    """
    y = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))[::-1]
    if y.size < 3 or not np.isfinite(y).all() or not y[0] > 0:
        raise ValueError(f"values of shape {np.shape(values)} (largest {y[0] if y.size else None}) are not allowed: "
                         "fit_curve needs k >= 3 finite singular values with the largest > 0")
    sigma = float(y[0])
    if y[-1] == y[0]:
        return CurveFit(tau=math.nan, eps=1.0, sigma=sigma, rmse=0.0)
    y = y / sigma
    one_minus_t = 1.0 - np.linspace(0.0, 1.0, y.size)

    def best_eps_and_residual(log_tau: float) -> tuple[float, float]:
        u = one_minus_t ** math.exp(log_tau)
        gap = 1.0 - u
        eps = float(np.clip(np.dot(y - u, gap) / np.dot(gap, gap), 0.0, 1.0))
        return eps, float(np.sum((y - eps - (1.0 - eps) * u) ** 2))

    log_taus = np.linspace(math.log(FIT_TAU_BOUNDS[0]), math.log(FIT_TAU_BOUNDS[1]), FIT_TAU_GRID_POINTS)
    best = int(np.argmin([best_eps_and_residual(log_tau)[1] for log_tau in log_taus]))
    bracket = (log_taus[max(best - 1, 0)], log_taus[min(best + 1, len(log_taus) - 1)])
    log_tau = _golden_section_minimum(lambda log_tau: best_eps_and_residual(log_tau)[1], *bracket, xatol=1e-10)
    eps, residual = best_eps_and_residual(log_tau)
    return CurveFit(tau=math.exp(log_tau), eps=eps, sigma=sigma, rmse=math.sqrt(residual / y.size))


def _golden_section_minimum(f, low: float, high: float, xatol: float) -> float:
    r"""The minimizer of ``f`` on ``[low, high]`` by golden-section search (``f`` unimodal there).

    Each step keeps the part of the bracket that holds the smaller of two interior values, placed at
    :math:`1/\varphi` and :math:`1 - 1/\varphi` of it, so one of them is reused and the bracket shrinks
    by :math:`1/\varphi \approx 0.618` per evaluation: about 45 steps from a grid cell to ``xatol = 1e-10``.
    (A numpy-only search keeps the layers free of scipy.)
    """
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = float(low), float(high)
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > xatol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def _check_curve_parameters(tau: float, eps: float, sigma: float, flat_allowed: bool = False) -> None:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau={tau!r} is not allowed: the curve shape must be a finite number > 0")
    if not (isinstance(eps, (int, float)) and 0 < eps and (eps < 1 or flat_allowed and eps == 1)):
        interval = "(0, 1]" if flat_allowed else "(0, 1)"
        raise ValueError(f"eps={eps!r} is not allowed: the smallest/largest ratio must lie in {interval}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma={sigma!r} is not allowed: the largest singular value must be a finite number > 0")


def _check_k(k: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} is not allowed: a spectrum needs at least one singular value (k >= 1)")
    return k


def _inverse_softplus(y: float) -> float:
    # softplus^{-1}(y) = log(exp(y) - 1) = y + log(1 - exp(-y)), stable for large y
    return y + math.log(-math.expm1(-y))


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class Spectrum(nn.Module):
    """Base class: a module whose ``forward()`` returns the positive vector ``lambda`` of length ``k``.

    Subclasses are constructed unbound (``k is None``) and bound by :meth:`build`. A bound spectrum
    is what a layer owns; its parameters are the "spectrum" parameter group of
    :func:`~stiefel_gan.manifold.make_optimizer`.
    """

    k: int | None = None

    def build(self, k: int) -> "Spectrum":
        """Return a fresh copy of this spectrum bound to ``k`` singular values."""
        bound = copy.deepcopy(self)
        bound._bind(_check_k(k))
        return bound

    def _bind(self, k: int) -> None:
        self.k = k

    def _require_bound(self) -> int:
        if self.k is None:
            raise RuntimeError(f"{type(self).__name__} is unbound: call .build(k) (layers do this for you)")
        return self.k

    def values(self) -> Tensor:
        """``lambda`` without autograd, for diagnostics."""
        with torch.no_grad():
            return self().detach().clone()


class FixedCurve(Spectrum):
    """The spectrum curve with constant ``tau``, ``eps``, ``sigma`` (stored as buffers, nothing trains).

    Parameters
    ----------
    tau : float
        Shape, ``> 0`` (``< 1`` concave, ``1`` linear, ``> 1`` convex).
    eps : float
        Smallest over largest singular value, in ``(0, 1]``: ``1`` is the flat spectrum (every value
        ``sigma``, an orthogonal layer scaled by ``sigma``, whatever ``tau``).
    sigma : float
        Largest singular value, ``> 0`` (``1`` keeps SN's per-layer Lipschitz bound).
    """

    def __init__(self, tau: float = 1.0, eps: float = 0.1, sigma: float = 1.0):
        super().__init__()
        _check_curve_parameters(tau, eps, sigma, flat_allowed=True)
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.register_buffer("eps", torch.tensor(float(eps)))
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def forward(self) -> Tensor:
        return curve_values(self._require_bound(), self.tau, self.eps, self.sigma)

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau.item():.4g}, eps={self.eps.item():.4g}, sigma={self.sigma.item():.4g}"


class LearnableCurve(Spectrum):
    r"""The spectrum curve with some of ``tau``, ``eps``, ``sigma`` trained.

    Each trained quantity is a function of an unconstrained raw parameter, so any gradient step
    keeps it valid: ``tau = softplus(raw_tau)``, ``sigma = softplus(raw_sigma)`` (both ``> 0``),
    ``eps = sigmoid(raw_eps)`` (in ``(0, 1)``). The others are constant buffers.

    Parameters
    ----------
    tau, eps, sigma : float
        Initial values (same ranges as :class:`FixedCurve`).
    learn : iterable of str
        Which of ``"tau"``, ``"eps"``, ``"sigma"`` are trained. ``sigma`` is frozen by default:
        training the largest singular value removes the Lipschitz control the experiments rely on.
    """

    _squash = {"tau": F.softplus, "sigma": F.softplus, "eps": torch.sigmoid}
    _unsquash = {"tau": _inverse_softplus, "sigma": _inverse_softplus, "eps": _logit}

    def __init__(
        self,
        tau: float = 1.0,
        eps: float = 0.1,
        sigma: float = 1.0,
        learn: Iterable[str] = ("tau", "eps"),
    ):
        super().__init__()
        _check_curve_parameters(tau, eps, sigma)
        learn = (learn,) if isinstance(learn, str) else tuple(learn)
        unknown = [name for name in learn if name not in CURVE_PARAMETERS]
        if unknown:
            raise ValueError(f"learn={learn!r} is not allowed: name any of {CURVE_PARAMETERS}")
        self.learn = tuple(name for name in CURVE_PARAMETERS if name in learn)
        for name, value in zip(CURVE_PARAMETERS, (tau, eps, sigma)):
            if name in self.learn:
                self.register_parameter(f"raw_{name}", nn.Parameter(torch.tensor(self._unsquash[name](float(value)))))
            else:
                self.register_buffer(name, torch.tensor(float(value)))

    def curve_parameter(self, name: str) -> Tensor:
        """The current (constrained) value of ``tau``, ``eps`` or ``sigma``."""
        if name in self.learn:
            return self._squash[name](getattr(self, f"raw_{name}"))
        return getattr(self, name)

    def forward(self) -> Tensor:
        tau, eps, sigma = (self.curve_parameter(name) for name in CURVE_PARAMETERS)
        return curve_values(self._require_bound(), tau, eps, sigma)

    def extra_repr(self) -> str:
        shown = ", ".join(f"{n}={self.curve_parameter(n).item():.4g}" for n in CURVE_PARAMETERS)
        return f"k={self.k}, {shown}, learn={self.learn}"


class LearnableGrid(Spectrum):
    r"""``k`` free positive singular values, initialized from a curve or given values.

    ``lambda = softplus(raw)`` elementwise (positive under any gradient step), then optionally

    - ``sort=True``: sorted descending in the forward pass (the gradient flows through the
      permutation, so the parameters themselves stay unsorted: the "sorted vs unsorted grid"
      hypothesis, docs/design.md);
    - ``max_value=s``: rescaled ``lambda * s / max(lambda)`` so that the largest is exactly ``s``
      (a learnable shape with SN's Lipschitz bound).

    Parameters
    ----------
    init : Spectrum or sequence of float
        A curve (bound to the layer's ``k`` at build time) or exactly ``k`` positive values.
    sort : bool
        Sort descending in the forward pass.
    max_value : float or None
        If given (``> 0``), the largest value after rescaling.
    """

    def __init__(self, init: Spectrum | Sequence[float] | Tensor | None = None, sort: bool = False,
                 max_value: float | None = None):
        super().__init__()
        if init is None:
            init = FixedCurve()
        if isinstance(init, LearnableGrid):
            raise ValueError("init=LearnableGrid(...) is not allowed: initialize a grid from a curve or from values")
        if not isinstance(init, Spectrum):
            values = torch.as_tensor(init, dtype=torch.get_default_dtype()).detach().clone()
            if values.ndim != 1 or values.numel() == 0 or not bool(torch.all(values > 0)):
                raise ValueError(f"init={init!r} is not allowed: give a curve or a 1-D sequence of positive values")
            init = values
        if max_value is not None and not (isinstance(max_value, (int, float)) and max_value > 0):
            raise ValueError(f"max_value={max_value!r} is not allowed: use None or a number > 0")
        # a plain attribute, not a submodule: the starting curve is no part of the trained state
        self.__dict__["init"] = init
        self.sort = bool(sort)
        self.max_value = None if max_value is None else float(max_value)

    def _bind(self, k: int) -> None:
        if isinstance(self.init, Spectrum):
            start = self.init.build(k).values()
        else:
            start = self.init
            if start.numel() != k:
                raise ValueError(
                    f"a grid of {start.numel()} values is not allowed here: this layer has k={k} singular values"
                )
        super()._bind(k)
        # inverse softplus of each start value; log(expm1(y)) is exact for the small values of a curve
        raw = torch.where(start > 20, start, torch.log(torch.expm1(start)))
        self.raw = nn.Parameter(raw)

    def forward(self) -> Tensor:
        self._require_bound()
        lam = F.softplus(self.raw)
        if self.sort:
            lam = torch.sort(lam, descending=True).values
        if self.max_value is not None:
            lam = lam * (self.max_value / lam.max())
        return lam

    def extra_repr(self) -> str:
        return f"k={self.k}, sort={self.sort}, max_value={self.max_value}"


class FrobeniusNormalized(Spectrum):
    r"""Another spectrum rescaled to a given Frobenius norm: :math:`\lambda \cdot c / \lVert\lambda\rVert_2`.

    A layer's Frobenius norm is the 2-norm of its singular values, :math:`\lVert W \rVert_F =
    \lVert \lambda \rVert_2`, so every layer built from this spectrum has :math:`\lVert W \rVert_F = c`
    exactly, whatever the shape of the inner spectrum: a shape study can compare curves at equal
    energy (e.g. ``c`` = the average Frobenius norm of trained SN layers) as well as at equal
    :math:`\sigma_{\max}`. The largest value is then :math:`c\, \lambda_0 / \lVert\lambda\rVert_2`, not
    the inner spectrum's.

    Parameters
    ----------
    inner : Spectrum
        Unbound; bound together with this one. Its parameters stay trainable (the ``spectrum`` group).
    target : float
        :math:`c > 0`.
    """

    def __init__(self, inner: Spectrum, target: float):
        super().__init__()
        if not isinstance(inner, Spectrum) or isinstance(inner, FrobeniusNormalized):
            raise ValueError(f"inner={inner!r} is not allowed: use a FixedCurve, LearnableCurve or LearnableGrid")
        if (isinstance(target, bool) or not isinstance(target, (int, float))
                or not (math.isfinite(target) and target > 0)):
            raise ValueError(f"target={target!r} is not allowed: the Frobenius norm must be a finite number > 0")
        self.inner = inner
        self.target = float(target)

    def _bind(self, k: int) -> None:
        self.inner._bind(k)  # build() has already deep-copied self, inner included
        super()._bind(k)

    def forward(self) -> Tensor:
        self._require_bound()
        lam = self.inner()
        return lam * (self.target / torch.linalg.vector_norm(lam))

    def extra_repr(self) -> str:
        return f"k={self.k}, target={self.target:.4g}"


def build_spectrum(kind: str, **kwargs) -> Spectrum:
    """Build an unbound spectrum by name: ``"fixed"``, ``"curve"`` or ``"grid"`` (config-friendly).

    For ``"grid"`` the curve arguments ``tau``, ``eps``, ``sigma`` give the initial curve and
    ``sort`` / ``max_value`` go to :class:`LearnableGrid`.
    """
    if kind == "fixed":
        return FixedCurve(**kwargs)
    if kind == "curve":
        return LearnableCurve(**kwargs)
    if kind == "grid":
        grid_args = {name: kwargs.pop(name) for name in ("sort", "max_value") if name in kwargs}
        return LearnableGrid(init=FixedCurve(**kwargs), **grid_args)
    raise ValueError(f"spectrum kind {kind!r} is not allowed: use 'fixed', 'curve' or 'grid'")
