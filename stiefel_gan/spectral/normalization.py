r"""Spectral-normalization baselines: Miyato's SN, the "fair" operator-norm SN, orthonormal regularization.

Each constraint is a small module registered on a layer's ``weight`` with
:func:`torch.nn.utils.parametrize.register_parametrization`: the layer keeps its type and its
``forward``; reading ``layer.weight`` returns ``constraint(layer.parametrizations.weight.original)``.

Note [power iteration state]
    A power-iteration estimate :math:`\sigma \approx \sigma_{max}(W)` is carried from one training
    step to the next in buffers (``u``, ``v``): ``W`` changes little per optimizer step, so one
    iteration per forward keeps the estimate converged (Miyato et al. 2018, Alg. 1). The buffers are
    persistent (saved in ``state_dict``) because a restarted run would otherwise divide by a
    15-iteration estimate of a trained weight. They are updated only in training mode and under
    ``no_grad``: :math:`\sigma = u^T W v` is differentiated through ``W`` only, with ``u, v`` constants.

Note [in-place buffer update, cloned use]
    The buffers are overwritten in place (``copy_``), never re-assigned, so that module replicas
    sharing their storage (``DataParallel``) see the update. Because they change in place, the
    :math:`\sigma` of a forward must use *clones*: a GAN step backpropagates through two forwards
    (``D(real)`` and ``D(fake)``), and the second forward's update would otherwise modify tensors the
    first forward's graph saved for backward.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .._modules import LayerFilter, eval_mode, select_layers
from .analysis import ConvGeometry, IntOrPair, _is_int, _normalized

#: The ``kind`` values of :func:`apply_normalization`.
NORMALIZATION_KINDS = ("none", "sn", "fair_sn")

#: Power iterations run when a constraint is created, before the first forward (torch's value).
INITIAL_POWER_ITERATIONS = 15


def _check_n_power_iterations(n_power_iterations) -> None:
    if not _is_int(n_power_iterations) or n_power_iterations < 1:
        raise ValueError(f"n_power_iterations={n_power_iterations!r} is not allowed: use an int >= 1")


def _check_eps(eps) -> None:
    if not eps > 0:
        raise ValueError(f"eps={eps!r} is not allowed: use a float > 0")


class SpectralNorm(nn.Module):
    r"""Miyato et al.'s spectral normalization :math:`W / \sigma(W)` of the reshaped kernel.

    :math:`W` is viewed as the ``out x (in kh kw)`` matrix ``W.flatten(1)``. Each training-mode
    forward runs ``n_power_iterations`` steps

    .. math:: u \leftarrow \frac{W v}{\max(\lVert W v\rVert, \epsilon)},\qquad
              v \leftarrow \frac{W^T u}{\max(\lVert W^T u\rVert, \epsilon)}

    and returns :math:`W / \sigma` with :math:`\sigma = u^T W v` (see the module's Notes). Creation
    runs :data:`INITIAL_POWER_ITERATIONS` steps from Gaussian ``u``, ``v`` (and registration one more:
    ``register_parametrization`` checks the output by one forward). Every operation, and the
    order in which the random ``u``, ``v`` are drawn, is that of
    :func:`torch.nn.utils.parametrizations.spectral_norm`, so the two agree to the last bit.

    Parameters
    ----------
    weight : Tensor
        The weight it will constrain (shape and initial ``u``, ``v``), ``ndim >= 2``.
    n_power_iterations : int
        Power-iteration steps per training-mode forward, ``>= 1``.
    eps : float
        Floor on the norms in the normalizations, ``> 0``.

    Examples
    --------
    >>> layer = nn.Linear(20, 10)
    >>> parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
    """

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        if not isinstance(weight, Tensor) or weight.ndim < 2:
            shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"weight of shape {shape} is not allowed: use a matrix or a conv kernel (ndim >= 2)")
        _check_n_power_iterations(n_power_iterations)
        _check_eps(eps)
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        weight_mat = weight.detach().flatten(1)
        rows, cols = weight_mat.shape
        u = weight_mat.new_empty(rows).normal_(0, 1)
        v = weight_mat.new_empty(cols).normal_(0, 1)
        self.register_buffer("u", nn.functional.normalize(u, dim=0, eps=eps))
        self.register_buffer("v", nn.functional.normalize(v, dim=0, eps=eps))
        self._power_iteration(weight_mat, INITIAL_POWER_ITERATIONS)

    @torch.no_grad()
    def _power_iteration(self, weight_mat: Tensor, n_steps: int) -> None:
        for _ in range(n_steps):
            self.u.copy_(nn.functional.normalize(torch.mv(weight_mat, self.v), dim=0, eps=self.eps))
            self.v.copy_(nn.functional.normalize(torch.mv(weight_mat.T, self.u), dim=0, eps=self.eps))

    def sigma(self, weight: Tensor) -> Tensor:
        r"""The current estimate :math:`u^T W v` of :math:`\sigma_{max}`, without updating ``u``, ``v``.

        Differentiable in ``weight``; ``u``, ``v`` are cloned (module Note [in-place buffer update, cloned use]).
        """
        u = self.u.clone(memory_format=torch.contiguous_format)
        v = self.v.clone(memory_format=torch.contiguous_format)
        return torch.vdot(u, torch.mv(weight.flatten(1), v))

    def forward(self, weight: Tensor) -> Tensor:
        if self.training:
            self._power_iteration(weight.detach().flatten(1), self.n_power_iterations)
        return weight / self.sigma(weight)

    def right_inverse(self, value: Tensor) -> Tensor:
        # As torch's: assigning ``layer.weight = value`` stores ``value`` as the unnormalized weight.
        # It is not a true inverse (the next read returns value / sigma(value)), but it lets
        # initialization code assign weights to a normalized layer.
        return value

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, eps={self.eps}"


class FairSpectralNorm(nn.Module):
    r"""Divides a conv kernel by the largest singular value of the convolution operator itself.

    For ``A = conv2d(., K)`` with the layer's stride, padding and dilation on ``H x W`` inputs
    (:class:`~stiefel_gan.spectral.analysis.ConvGeometry`), each training-mode forward runs
    ``n_power_iterations`` steps

    .. math:: u \leftarrow \frac{A^T y}{\max(\lVert A^T y\rVert, \epsilon)},\qquad
              y = \frac{A u}{\max(\lVert A u\rVert, \epsilon)}

    on the feature-map-shaped buffer ``u`` (``1 x c_in x H x W``, the right singular vector; the
    left one is recomputed from it) and returns :math:`K / \sigma` with
    :math:`\sigma = \lVert A u\rVert` (:math:`= y^T A u`, Miyato's :math:`u^T W v` with the roles
    named the other way). Unlike :class:`SpectralNorm` this bounds the layer's true Lipschitz
    constant; its estimate converges to :func:`~stiefel_gan.spectral.conv_operator_norm`.

    For an ``nn.Linear`` the operator *is* the matrix: use :class:`SpectralNorm`
    (:func:`apply_normalization` does).

    Parameters
    ----------
    weight : Tensor
        The conv kernel ``c_out x c_in x kh x kw`` it will constrain.
    input_size : (int, int)
        Spatial size ``(H, W)`` of the layer's inputs.
    stride, padding, dilation : int or (int, int)
        The layer's (zero padding, one group).
    n_power_iterations : int
        Power-iteration steps per training-mode forward, ``>= 1``.
    eps : float
        Floor on the norms in the normalizations, ``> 0``.
    """

    def __init__(
        self,
        weight: Tensor,
        input_size: Sequence[int],
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.geometry = ConvGeometry.checked(weight, input_size, stride, padding, dilation)
        _check_n_power_iterations(n_power_iterations)
        _check_eps(eps)
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        u = weight.detach().new_empty(1, weight.shape[1], *self.geometry.input_size).normal_(0, 1)
        self.register_buffer("u", _normalized(u, eps))
        self._power_iteration(weight.detach(), INITIAL_POWER_ITERATIONS)

    @torch.no_grad()
    def _power_iteration(self, weight: Tensor, n_steps: int) -> None:
        for _ in range(n_steps):
            image = _normalized(self.geometry.apply(self.u, weight), self.eps)
            self.u.copy_(_normalized(self.geometry.apply_adjoint(image, weight), self.eps))

    def sigma(self, weight: Tensor) -> Tensor:
        r"""The current estimate :math:`\lVert A u\rVert` of :math:`\sigma_{max}(A)`, without updating ``u``.

        Differentiable in ``weight``; ``u`` is cloned (module Note [in-place buffer update, cloned use]).
        """
        u = self.u.clone(memory_format=torch.contiguous_format)
        return torch.linalg.vector_norm(self.geometry.apply(u, weight))

    def forward(self, weight: Tensor) -> Tensor:
        if self.training:
            self._power_iteration(weight.detach(), self.n_power_iterations)
        return weight / self.sigma(weight)

    def right_inverse(self, value: Tensor) -> Tensor:
        # Stores an assigned value as the unnormalized kernel, as SpectralNorm.right_inverse.
        return value

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"input_size={g.input_size}, stride={g.stride}, padding={g.padding}, dilation={g.dilation}, "
            f"n_power_iterations={self.n_power_iterations}, eps={self.eps}"
        )


def _check_fair_sn_conv(name: str, conv: nn.Conv2d) -> None:
    # FairSpectralNorm's operator is conv2d with zero padding, explicit padding amounts, one group
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.groups != 1:
        raise ValueError(
            f"layer {name!r} (padding_mode={conv.padding_mode!r}, padding={conv.padding!r}, groups={conv.groups}) "
            "is not allowed for fair_sn: use padding_mode='zeros', integer padding and groups=1"
        )


def record_conv_input_sizes(
    model: nn.Module, convs: dict[str, nn.Module], input_shape: tuple[int, ...]
) -> dict[str, tuple[int, int]]:
    """Spatial size ``(H, W)`` of each conv's input, from one no-grad, eval-mode forward of a zero batch.

    The operator of a convolution, hence its singular values, depends on the size of its input, which
    only a forward pass reveals.

    Parameters
    ----------
    model : nn.Module
        Run once on a ``1 x *input_shape`` batch of zeros. Eval mode keeps the dummy batch out of
        BatchNorm running statistics, spectral-norm power iterations and other train-time state;
        every module's own ``training`` flag is restored afterwards.
    convs : dict of str to nn.Module
        The layers to watch, by qualified name (``nn.Conv2d``, parametrized or Stiefel ones alike:
        a forward pre-hook reads the last two dimensions of the input).
    input_shape : tuple of int
        Shape of one input of ``model``.

    Returns
    -------
    dict of str to (int, int)
        ``{name: (H, W)}`` for every layer of ``convs``.
    """
    sizes: dict[str, tuple[int, int]] = {}

    def recorder(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            size = tuple(args[0].shape[-2:])
            if sizes.setdefault(name, size) != size:
                raise ValueError(
                    f"layer {name!r} sees inputs of sizes {sizes[name]} and {size} in one forward: "
                    "its operator is defined for one input size only"
                )

        return record

    reference = next(model.parameters())
    handles = [conv.register_forward_pre_hook(recorder(name)) for name, conv in convs.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=reference.dtype, device=reference.device))
    finally:
        for handle in handles:
            handle.remove()
    unreached = [name for name in convs if name not in sizes]
    if unreached:
        raise ValueError(
            f"layers {unreached} are not reached by a forward of input_shape={input_shape}: "
            "their input size is unknown"
        )
    return sizes


def apply_normalization(
    model: nn.Module,
    kind: str,
    *,
    input_shape: Optional[Sequence[int]] = None,
    n_power_iterations: int = 1,
    include: LayerFilter = None,
) -> nn.Module:
    """Register a spectral-normalization constraint on every selected ``nn.Linear`` / ``nn.Conv2d``, in place.

    Parameters
    ----------
    model : nn.Module
        Modified in place. Only submodules are selected (not ``model`` itself), by exact type:
        layers already parametrized are left alone.
    kind : {"none", "sn", "fair_sn"}
        ``"none"``: nothing. ``"sn"``: :class:`SpectralNorm` on every layer. ``"fair_sn"``:
        :class:`FairSpectralNorm` on every ``nn.Conv2d``, :class:`SpectralNorm` on every ``nn.Linear``.
    input_shape : (C, H, W), optional
        Shape of one input of ``model``, required by ``"fair_sn"``: one forward of a zero batch
        records the spatial size each conv sees (:func:`record_conv_input_sizes`).
    n_power_iterations : int
        Power-iteration steps per training-mode forward, ``>= 1``.
    include : None, callable or glob patterns
        Which layers, as in :func:`stiefel_gan._modules.select_layers`.

    Returns
    -------
    nn.Module
        ``model``.
    """
    if kind not in NORMALIZATION_KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: use one of {', '.join(NORMALIZATION_KINDS)}")
    _check_n_power_iterations(n_power_iterations)
    if kind == "none":
        return model

    layers = {name: layer for name, layer, _, _ in select_layers(model, (nn.Linear, nn.Conv2d), include)}
    input_sizes: dict[str, tuple[int, int]] = {}
    if kind == "fair_sn":
        convs = {name: layer for name, layer in layers.items() if isinstance(layer, nn.Conv2d)}
        for name, conv in convs.items():
            _check_fair_sn_conv(name, conv)
        if convs:  # a model without convs (an MLP) needs no input shape: fair SN is SN on Linear layers
            if (not isinstance(input_shape, Sequence) or len(input_shape) != 3
                    or not all(_is_int(s) and s > 0 for s in input_shape)):
                raise ValueError(
                    f"input_shape={input_shape!r} is not allowed for fair_sn: use three positive ints (C, H, W)")
            input_sizes = record_conv_input_sizes(model, convs, tuple(input_shape))

    for name, layer in layers.items():
        if name in input_sizes:
            constraint = FairSpectralNorm(
                layer.weight, input_sizes[name], layer.stride, layer.padding, layer.dilation, n_power_iterations
            )
        else:
            constraint = SpectralNorm(layer.weight, n_power_iterations)
        parametrize.register_parametrization(layer, "weight", constraint)
    return model


def spectral_norm_estimates(model: nn.Module) -> dict[str, float]:
    """The current sigma estimate of every layer normalized by this module, for logging.

    Returns ``{qualified_name: sigma}`` (``""`` for ``model`` itself) for every module whose first
    ``weight`` parametrization is a :class:`SpectralNorm` or :class:`FairSpectralNorm`, as
    :meth:`SpectralNorm.sigma` of the unnormalized weight: no power iteration is run.
    """
    estimates = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not parametrize.is_parametrized(module, "weight"):
                continue
            parametrizations = module.parametrizations.weight
            if isinstance(parametrizations[0], (SpectralNorm, FairSpectralNorm)):
                estimates[name] = float(parametrizations[0].sigma(parametrizations.original))
    return estimates


def orthogonal_penalty(model: nn.Module, beta: float) -> Tensor:
    r"""Orthonormal regularization :math:`\beta \sum_{layers} \lVert G - I\rVert_F^2` (Brock et al. 2016).

    For each ``nn.Linear`` / ``nn.Conv2d`` submodule (parametrized ones included, through their
    effective ``.weight``) with reshaped weight ``W`` (``m x n``, :math:`p = \min(m, n)`),
    :math:`G = W W^T` if :math:`m \le n`, else :math:`W^T W`: the ``p x p`` Gram matrix of the
    smaller side. In singular values, :math:`\lVert G - I_p\rVert_F^2 = \sum_{i \le p} (s_i^2 - 1)^2`:
    zero exactly when ``W`` has orthonormal rows (or columns).

    Why the smaller side: the larger ``max(m, n)``-square Gram has rank at most ``p``, so it can never
    be ``I``; its penalty is the one above plus the constant :math:`|m - n|` (its zero eigenvalues),
    which hides whether a layer is orthonormal, and it costs :math:`\max(m,n)^2` memory
    (``4608^2`` instead of ``512^2`` for a ``512 x 512 x 3 x 3`` kernel).

    Reading ``.weight`` of a parametrized layer runs its parametrization (one more power iteration for
    SN in training mode): wrap the forward and this call in
    :func:`torch.nn.utils.parametrize.cached` to evaluate it once.

    Parameters
    ----------
    model : nn.Module
    beta : float
        Coefficient, ``>= 0``.

    Returns
    -------
    Tensor
        Differentiable scalar (``0`` when the model has no such layer).
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta={beta!r} is not allowed: use a number >= 0")
    # select_layers matches exact types, and a parametrized layer's type is a generated subclass
    layer_types = tuple(
        {type(m) for m in model.modules() if parametrize.type_before_parametrizations(m) in (nn.Linear, nn.Conv2d)}
    )
    terms = []
    for _, layer, _, _ in select_layers(model, layer_types):
        matrix = layer.weight.flatten(1)
        gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
        identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        terms.append(torch.sum((gram - identity) ** 2))
    if not terms:
        return torch.zeros(())
    return beta * torch.stack(terms).sum()
