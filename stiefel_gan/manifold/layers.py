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

Note [groups]
    A convolution with ``groups=g`` is ``g`` independent convolutions: its weight is block diagonal,
    one ``rows x cols`` block per group. Its factors are ONE batched ``ManifoldParameter`` of shape
    ``g x n x p`` (geoopt's manifolds, its optimizers and the retractions of
    :mod:`~stiefel_gan.manifold.retractions` act on the last two dimensions and broadcast over the
    first), never a Python loop over groups. One spectrum of length ``k`` is bound per layer and
    shared by its groups, so every group's block has exactly the singular values ``lambda`` and the
    whole block-diagonal matrix has ``lambda`` repeated ``g`` times. With ``g = 1`` the factor keeps
    its plain ``n x p`` shape.

The reshapes (Miyato's view), per group, for a kernel of spatial size ``K = prod(kernel_size)``:

================================  ============================  =======================================
layer                             weight                        matrix of each group (rows x cols)
================================  ============================  =======================================
``Linear``                        ``out x in``                  ``out x in``
``Conv1d/2d/3d``                  ``c_out x c_in/g x k...``     ``c_out/g x (c_in/g K)``
``ConvTranspose1d/2d/3d``         ``c_in x c_out/g x k...``     ``c_in/g x (c_out/g K)``
================================  ============================  =======================================

Each is ``weight.reshape(g, rows, cols)``: the rows are the first dimension of the stored weight.
For a transposed convolution that is the input channel: ``conv_transpose`` with weight ``W`` is the
adjoint of ``conv`` with the same ``W`` (from ``c_out`` to ``c_in`` channels), so its reshaped spectrum
is the one of that convolution, and :func:`~stiefel_gan.spectral.reshape_singular_values`
(``weight.flatten(1)``) reads it for ``g = 1``. The spectrum of the convolution operator itself is not
``lambda`` and is measured by :mod:`stiefel_gan.spectral`.

Note [subclass, not parametrize]
    Each Stiefel layer subclasses the torch layer it replaces (``StiefelConv2d`` is an ``nn.Conv2d``),
    inheriting its ``forward``, ``extra_repr`` and geometry attributes, with ``weight`` a read-only
    property computed from the factors. So code that walks a model with ``isinstance(m, nn.Conv2d)``
    (init loops, FLOP counters) finds it. ``torch.nn.utils.parametrize`` would also keep the type, but
    it keeps the dense weight as ``parametrizations.weight.original`` (memory, and a parameter the
    optimizer would train) or, with a tuple ``right_inverse``, turns the factors into plain
    ``nn.Parameter`` s that geoopt's optimizers do not see as manifold points; its generated class
    would also lose ``singular_values()`` and the clean ``state_dict`` keys.
"""

from __future__ import annotations

import math
import warnings

import torch
from geoopt import ManifoldParameter
from torch import Tensor, nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .retractions import DEFAULT_RETRACTION, _householder_q_factor, manifold_drift, stiefel_manifold
from .spectra import FixedCurve, Spectrum

FACTORIZATIONS = ("diag", "svd")

#: Largest :math:`\max|Q^T Q - I|` accepted from a float32 factorization at initialization before
#: it is recomputed more carefully (the tolerance the tests hold every factor to).
ORTHONORMALITY_TOLERANCE = 1e-5


def _check_float_dtype(dtype) -> None:
    if dtype is not None and not torch.empty((), dtype=dtype).is_floating_point():
        raise ValueError(f"dtype={dtype} is not allowed: Stiefel layers need a floating-point dtype")


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    # LAPACK has no half-precision routines: factor float16 / bfloat16 weights in float32
    return torch.promote_types(dtype, torch.float32)


def _singular_vectors(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Thin SVD factors ``U`` (``... x rows x k``) and ``V`` (``... x cols x k``) of a (batched) matrix.

    Note [polar factor in float32]
        Computed in the weight's own precision (float32 for float32 weights), first from the
        eigendecomposition of the small Gram matrix: for ``rows <= cols``,
        :math:`WW^T = U S^2 U^T` (a ``k x k`` ``eigh``) and :math:`V = W^T U S^{-1}`, two GEMMs and
        a ``k^3`` ``eigh`` instead of an SVD (``512 x 4608`` on one CPU core: 0.85 s, against 3.9 s
        for a float32 SVD and 8.0 s for a float64 one).
        Squaring ``W`` squares its condition number, so the result is checked: if ``U`` or ``V``
        is off the manifold by more than ``ORTHONORMALITY_TOLERANCE`` (a nearly rank-deficient
        ``W``), an SVD in the same precision is used, and if that is still off, one in float64.
    """
    work = matrix.detach().to(_working_dtype(matrix.dtype))
    wide = work.shape[-2] <= work.shape[-1]
    short = work if wide else work.transpose(-1, -2)  # k x m with k <= m
    eigenvalues, left = torch.linalg.eigh(short @ short.transpose(-1, -2))
    # eigh sorts ascending; the SVD's order (descending) pairs lambda_0 with the top singular direction
    eigenvalues, left = eigenvalues.flip(-1), left.flip(-1)
    singular = eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)
    right = (short.transpose(-1, -2) @ left) / singular
    u, v = (left, right) if wide else (right, left)
    for dtype in (work.dtype, torch.float64):
        if torch.isfinite(v).all() and max(manifold_drift(u), manifold_drift(v)) <= ORTHONORMALITY_TOLERANCE:
            break
        u, _, vh = torch.linalg.svd(work.to(dtype), full_matrices=False)
        v = vh.transpose(-1, -2)
    return u.to(work.dtype), v.to(work.dtype)


@torch.no_grad()
def haar_(factor: Tensor) -> Tensor:
    r"""Fill a tall ``... x n x p`` tensor, in place, with independent Haar-random points of the Stiefel manifold.

    ``Q`` of the QR factorization ``Z = QR`` of a Gaussian ``Z`` with :math:`\mathrm{diag}(R) > 0` is
    uniformly (Haar) distributed (Mezzadri 2007). Unlike ``nn.init.orthogonal_``, leading dimensions
    are a batch (one independent point per group).

    Note [Cholesky QR at initialization]
        For ``n >= 2p`` the QR is a Cholesky QR in float32, the same ``Q`` as Householder's for
        about a third of the time on CPU: the Gram matrix :math:`G = Z^T Z = R^T R`, its Cholesky
        factor, the ``p x p`` inverse :math:`R^{-1}` and one GEMM :math:`Q = Z R^{-1}` (a GEMM runs
        near peak; a triangular solve with ``n`` right-hand sides does not). Its orthogonality error
        grows like :math:`\epsilon\,\kappa(Z)^2`; a tall Gaussian has
        :math:`\kappa(Z) \approx (\sqrt n + \sqrt p)/(\sqrt n - \sqrt p) \le 5.9` for ``n >= 2p``,
        so the error stays near float32's roundoff. It is checked in ``p x p`` work,
        :math:`Q^T Q = R^{-T} G R^{-1}`, and a result off by more than ``ORTHONORMALITY_TOLERANCE`` (or a
        nearly square ``Z``, where :math:`\kappa` is large) takes Householder QR instead.
    """
    z = torch.randn(factor.shape, dtype=_working_dtype(factor.dtype), device=factor.device)
    n, p = z.shape[-2:]
    q = None
    if n >= 2 * p:
        gram = z.transpose(-1, -2) @ z
        upper, info = torch.linalg.cholesky_ex(gram, upper=True)
        if not bool(torch.any(info != 0)):
            eye = torch.eye(p, dtype=z.dtype, device=z.device)
            upper_inverse = torch.linalg.solve_triangular(upper, eye, upper=True)
            gram_of_q = upper_inverse.transpose(-1, -2) @ gram @ upper_inverse
            if (gram_of_q - eye).abs().amax() <= ORTHONORMALITY_TOLERANCE:  # NaN fails too
                q = z @ upper_inverse
    if q is None:
        q = _householder_q_factor(z)
    return factor.copy_(q)


class StiefelMatrix(nn.Module):
    """A ``rows x cols`` matrix ``W(X, lambda)`` with singular values ``lambda`` (module docstring).

    Parameters
    ----------
    rows, cols : int
        Shape of the produced matrix (of each group's block).
    spectrum : Spectrum, optional
        Unbound spectrum; this module binds its own copy to ``k = min(rows, cols)``.
        Default: :class:`FixedCurve` with its defaults.
    factorization : {"diag", "svd"}
    retraction : {"qr", "cayley"}
        Retraction of the Stiefel factor(s) (see :mod:`stiefel_gan.manifold.retractions`).
    groups : int
        Number of independent blocks (Note [groups]): ``forward`` returns ``groups x rows x cols``
        when ``groups > 1``, ``rows x cols`` otherwise.
    init_weight : Tensor, optional
        Start the factors from this weight (:meth:`init_from_weight`) instead of Haar-random ones.
    """

    def __init__(self, rows: int, cols: int, spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION, device=None, dtype=None, *, groups: int = 1,
                 init_weight: Tensor | None = None):
        super().__init__()
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization={factorization!r} is not allowed: use one of {FACTORIZATIONS}")
        _check_float_dtype(dtype)
        if spectrum is None:
            spectrum = FixedCurve()
        if not isinstance(spectrum, Spectrum):
            raise ValueError(f"spectrum={spectrum!r} is not allowed: use a Spectrum (FixedCurve, LearnableCurve, LearnableGrid)")
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups={groups!r} is not allowed: use an int >= 1")
        k = min(rows, cols)
        if k < 1:
            raise ValueError(f"a {rows} x {cols} weight (k={k} singular values) is not allowed: "
                             "a Stiefel layer needs k = min(rows, cols) >= 1")
        self.rows, self.cols, self.k, self.groups = rows, cols, k, groups
        self.factorization = factorization
        self.retraction = retraction
        manifold = stiefel_manifold(retraction)
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        self.spectrum = spectrum.build(k).to(**factory)
        batch = (groups,) if groups > 1 else ()
        if factorization == "diag":
            self.transposed = rows <= cols
            self.factor = ManifoldParameter(torch.empty(*batch, max(rows, cols), k, **factory), manifold=manifold)
        else:
            self.transposed = False
            self.left = ManifoldParameter(torch.empty(*batch, rows, k, **factory), manifold=manifold)
            self.right = ManifoldParameter(torch.empty(*batch, cols, k, **factory), manifold=manifold)
        if init_weight is None:
            self.reset_parameters()
        else:
            self.init_from_weight(init_weight)

    @property
    def matrix_shape(self) -> tuple[int, ...]:
        """The shape ``forward`` returns: ``(groups, rows, cols)``, or ``(rows, cols)`` for one group."""
        return ((self.groups,) if self.groups > 1 else ()) + (self.rows, self.cols)

    def stiefel_factors(self) -> list[ManifoldParameter]:
        """The parameters that live on a Stiefel manifold (one for ``diag``, two for ``svd``)."""
        return [self.factor] if self.factorization == "diag" else [self.left, self.right]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Haar-random orthonormal factors (:func:`haar_`, each group independently)."""
        for factor in self.stiefel_factors():
            haar_(factor)

    @torch.no_grad()
    def init_from_weight(self, weight: Tensor) -> None:
        """Start the factors from an existing weight ``W = U S V^T``; the spectrum stays ``lambda``.

        ``weight`` has ``groups * rows * cols`` entries (any shape, e.g. a conv kernel), read as
        ``groups x rows x cols`` blocks. ``svd``: the factors are ``U`` and ``V``, so ``W`` keeps its
        singular directions and becomes ``U diag(lambda) V^T``. ``diag``: ``X`` is the polar factor
        ``U V^T``, the matrix with orthonormal rows/columns closest to ``W`` in Frobenius norm
        (``diag(lambda) X`` itself has the coordinate axes as left singular vectors, so it cannot keep
        ``U`` in general). Computed in float32 with a check (Note [polar factor in float32]).
        """
        if weight.numel() != math.prod(self.matrix_shape):
            raise ValueError(f"a weight of shape {tuple(weight.shape)} is not allowed here: this layer's "
                             f"weight holds {' x '.join(map(str, self.matrix_shape))} entries")
        u, v = _singular_vectors(weight.reshape(self.matrix_shape).to(self.stiefel_factors()[0].device))
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
            scaled = self.factor * lam  # Q diag(lambda), (groups x) max(rows, cols) x k
            return scaled.transpose(-1, -2) if self.transposed else scaled

    def drift(self) -> Tensor:
        r""":math:`\max |Q^T Q - I|` over this module's Stiefel factors and groups (0 on the manifold)."""
        with torch.no_grad():
            return torch.stack([manifold_drift(f) for f in self.stiefel_factors()]).amax()

    def extra_repr(self) -> str:
        batch = f"{self.groups}x" if self.groups > 1 else ""
        if self.factorization == "svd":
            stored = f"U {batch}{self.rows}x{self.k}, V {batch}{self.cols}x{self.k}"
        else:
            shape = f"{batch}{self.factor.shape[-2]}x{self.k}"
            stored = f"X^T {shape} (stored transposed)" if self.transposed else f"X {shape}"
        grouped = f", groups={self.groups}" if self.groups > 1 else ""
        return (f"{self.rows}x{self.cols}, k={self.k}{grouped}, factorization={self.factorization}, {stored}, "
                f"retraction={self.retraction}")


class StiefelLayer(nn.Module):
    """Shared parts of the Stiefel layers: the effective ``weight``, checkpoints and diagnostics.

    A concrete layer also subclasses the torch layer it replaces (Note [subclass, not parametrize]),
    after this class, so that this class's ``weight`` property and ``reset_parameters`` come first.
    """

    parametrization: StiefelMatrix
    weight_shape: tuple[int, ...]

    def _setup(self, template: nn.Module, rows: int, cols: int, groups: int, spectrum: Spectrum | None,
               factorization: str, retraction: str, device, dtype, init_weight: Tensor | None) -> None:
        """Copy ``template``'s geometry (a torch layer on the meta device), build the factors and the bias.

        Note [reuse the torch layer's argument checks]: the template, built by the torch class from the
        very arguments this layer got, validates them exactly as torch does and computes the derived
        attributes (tuples of kernel sizes, ``_reversed_padding_repeated_twice``); nothing is allocated.
        """
        nn.Module.__init__(self)
        for name in (*type(template).__constants__, "transposed", "_reversed_padding_repeated_twice"):
            if hasattr(template, name):
                setattr(self, name, getattr(template, name))
        self.weight_shape = tuple(template.weight.shape)
        self.parametrization = StiefelMatrix(rows, cols, spectrum, factorization, retraction, device=device,
                                             dtype=dtype, groups=groups, init_weight=init_weight)
        if template.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.empty(template.bias.shape, device=device, dtype=dtype))
            self._reset_bias()

    @property
    def weight(self) -> Tensor:
        """The effective dense weight, in the usual shape of the layer it replaces (differentiable)."""
        return self.parametrization().reshape(self.weight_shape)

    @property
    def spectrum(self) -> Spectrum:
        return self.parametrization.spectrum

    def singular_values(self) -> Tensor:
        """``lambda``: the exact singular values of the (reshaped) weight of every group, in the spectrum's own order."""
        return self.spectrum.values()

    @torch.no_grad()
    def _reset_bias(self) -> None:
        # the default of the torch layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = weight.size(1) * prod(kernel)
        if self.bias is not None:
            bound = 1 / math.sqrt(math.prod(self.weight_shape[1:]))
            nn.init.uniform_(self.bias, -bound, bound)

    def reset_parameters(self) -> None:
        """Haar-random factors and the torch layer's default bias (what ``nn.Conv2d.reset_parameters`` is to it)."""
        self.parametrization.reset_parameters()
        self._reset_bias()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Note [plain checkpoints]: a checkpoint of the plain model holds `weight` where this layer holds
        # `parametrization.*`. Its weight initializes the factors (init_from_weight: polar / SVD factors)
        # and this layer keeps its own spectrum, so `load_state_dict(plain, strict=True)` succeeds. Loading
        # runs the parent's hook before its children's, on the same dict: the keys filled in here are
        # what the child `parametrization` then loads.
        weight = state_dict.pop(prefix + "weight", None)
        if weight is not None:
            try:
                self.parametrization.init_from_weight(weight)
            except ValueError as error:
                error_msgs.append(f"{prefix}weight: {error}")
            else:
                own = self.parametrization.state_dict(prefix=prefix + "parametrization.")
                for key, value in own.items():
                    state_dict.setdefault(key, value)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


_LAYER_OPTIONS_DOC = """
    Parameters after the torch layer's own are keyword-only: ``spectrum`` (unbound, bound here to
    ``k``), ``factorization`` (``"diag"`` or ``"svd"``), ``retraction`` (``"qr"`` or ``"cayley"``) and
    ``init_weight`` (a dense weight to start the factors from, else Haar-random).
"""


class StiefelLinear(StiefelLayer, nn.Linear):
    """An :class:`torch.nn.Linear` with ``weight = diag(lambda) X`` (see the module docstring).

    Examples
    --------
    >>> layer = StiefelLinear(64, 16, spectrum=FixedCurve(tau=0.5, eps=0.1))
    >>> torch.linalg.svdvals(layer.weight).shape
    torch.Size([16])
    >>> isinstance(layer, nn.Linear)
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 spectrum: Spectrum | None = None, factorization: str = "diag",
                 retraction: str = DEFAULT_RETRACTION, init_weight: Tensor | None = None):
        template = _meta_template(nn.Linear, in_features, out_features, bias)
        self._setup(template, out_features, in_features, 1, spectrum, factorization, retraction, device, dtype,
                    init_weight)


StiefelLinear.__doc__ += _LAYER_OPTIONS_DOC


class _StiefelConvNd(StiefelLayer):
    """Grouped convolutions (transposed or not): ``groups`` blocks of ``weight.size(0)/g x (weight.size(1) K)``."""

    def _setup_conv(self, template: nn.modules.conv._ConvNd, spectrum, factorization, retraction, device, dtype,
                    init_weight) -> None:
        shape = template.weight.shape  # c_out x c_in/g x k... (conv) or c_in x c_out/g x k... (transposed)
        groups = template.groups
        self._setup(template, shape[0] // groups, math.prod(shape[1:]), groups, spectrum, factorization,
                    retraction, device, dtype, init_weight)


def _meta_template(torch_class: type, *args) -> nn.Module:
    """``torch_class(*args)`` on the meta device, for its geometry alone (Note [reuse the torch layer's argument
    checks]). Nothing of it is initialized for real, so torch's warning that initializing a zero-size weight
    is a no-op would only precede the one-line error :class:`StiefelMatrix` gives for ``k = 0``: it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op", category=UserWarning)
        return torch_class(*args, device="meta")


def _template(torch_class: type, in_channels: int, out_channels: int, *args) -> nn.Module:
    """``torch_class(...)`` on the meta device; torch's own argument error, naming the arguments, on one line."""
    try:
        return _meta_template(torch_class, in_channels, out_channels, *args)
    except (ValueError, TypeError) as error:
        groups = args[4]  # after kernel_size, stride, padding and dilation (or output_padding)
        raise ValueError(f"{torch_class.__name__}(in_channels={in_channels}, out_channels={out_channels}, "
                         f"groups={groups}, ...) is not allowed: {error}") from None


def _conv_class(torch_class: type, name: str, dims: int) -> type:
    """The Stiefel twin of a torch conv class, with the same constructor signature plus the options."""
    transposed = issubclass(torch_class, nn.modules.conv._ConvTransposeNd)
    kernel = {1: "k", 2: "kh kw", 3: "kd kh kw"}[dims]

    if transposed:
        def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                     groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                     dtype=None, *, spectrum: Spectrum | None = None, factorization: str = "diag",
                     retraction: str = DEFAULT_RETRACTION, init_weight: Tensor | None = None):
            template = _template(torch_class, in_channels, out_channels, kernel_size, stride, padding,
                                 output_padding, groups, bias, dilation, padding_mode)
            self._setup_conv(template, spectrum, factorization, retraction, device, dtype, init_weight)
        view = f"``c_in/g x (c_out/g {kernel})`` (the adjoint convolution's view)"
    else:
        def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                     groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                     spectrum: Spectrum | None = None, factorization: str = "diag",
                     retraction: str = DEFAULT_RETRACTION, init_weight: Tensor | None = None):
            template = _template(torch_class, in_channels, out_channels, kernel_size, stride, padding, dilation,
                                 groups, bias, padding_mode)
            self._setup_conv(template, spectrum, factorization, retraction, device, dtype, init_weight)
        view = f"``c_out/g x (c_in/g {kernel})``"

    doc = (f"An :class:`torch.nn.{torch_class.__name__}` whose reshaped kernel, per group {view}, has "
           "exactly the singular values ``lambda`` (module docstring, Note [groups]).\n\n"
           f"    Same constructor arguments as ``nn.{torch_class.__name__}``, ``groups`` included.\n"
           + _LAYER_OPTIONS_DOC)
    __init__.__qualname__ = f"{name}.__init__"
    return type(name, (_StiefelConvNd, torch_class), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


StiefelConv1d = _conv_class(nn.Conv1d, "StiefelConv1d", 1)
StiefelConv2d = _conv_class(nn.Conv2d, "StiefelConv2d", 2)
StiefelConv3d = _conv_class(nn.Conv3d, "StiefelConv3d", 3)
StiefelConvTranspose1d = _conv_class(nn.ConvTranspose1d, "StiefelConvTranspose1d", 1)
StiefelConvTranspose2d = _conv_class(nn.ConvTranspose2d, "StiefelConvTranspose2d", 2)
StiefelConvTranspose3d = _conv_class(nn.ConvTranspose3d, "StiefelConvTranspose3d", 3)

#: The torch layer types :func:`~stiefel_gan.manifold.stiefelize` converts (exact types), and their twins.
#: ``NonDynamicallyQuantizableLinear`` is ``nn.MultiheadAttention``'s ``out_proj``: a plain ``nn.Linear``
#: that MultiheadAttention reads through ``.weight`` / ``.bias``.
STIEFEL_TWINS: dict[type, type] = {
    nn.Linear: StiefelLinear,
    NonDynamicallyQuantizableLinear: StiefelLinear,
    nn.Conv1d: StiefelConv1d,
    nn.Conv2d: StiefelConv2d,
    nn.Conv3d: StiefelConv3d,
    nn.ConvTranspose1d: StiefelConvTranspose1d,
    nn.ConvTranspose2d: StiefelConvTranspose2d,
    nn.ConvTranspose3d: StiefelConvTranspose3d,
}


def stiefel_layers(model: nn.Module):
    """Yield ``(name, layer)`` for every Stiefel layer of a model."""
    for name, module in model.named_modules():
        if isinstance(module, StiefelLayer):
            yield name, module
